//go:build !unix

package spool

import "io/fs"

// fileOwner: folders carry no uid here; ownership is not checked.
func fileOwner(fs.FileInfo) (uid int, ok bool) { return 0, false }

func currentUser() int { return -1 }
