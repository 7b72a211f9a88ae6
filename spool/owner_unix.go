//go:build unix

package spool

import (
	"io/fs"
	"os"
	"syscall"
)

// fileOwner returns the uid owning fi's file, when the file system says.
func fileOwner(fi fs.FileInfo) (uid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// currentUser is the effective uid of this process.
func currentUser() int { return os.Geteuid() }
