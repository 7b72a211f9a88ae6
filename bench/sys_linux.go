package main

import (
	"io/fs"
	"syscall"
)

// childSysProcAttr makes the kernel kill a child when the driver dies,
// even by SIGKILL, so that no load generator, Collector or relay outlives
// an interrupted run.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

func allocated(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return info.Size()
}
