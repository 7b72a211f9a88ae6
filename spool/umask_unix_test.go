//go:build unix

package spool

import "syscall"

func setTestUmask() { syscall.Umask(0o022) }
