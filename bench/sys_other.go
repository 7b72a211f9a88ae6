//go:build !linux

package main

import (
	"io/fs"
	"syscall"
)

// The benchmark measures through /proc and runs on Linux only; this file
// keeps the package compiling elsewhere, where run reports that.
func childSysProcAttr() *syscall.SysProcAttr { return nil }

func allocated(info fs.FileInfo) int64 { return info.Size() }
