//go:build unix

package spool

import (
	"errors"
	"os"
	"syscall"
)

// tryLock takes an exclusive advisory lock on path, creating the file when
// create is set. It returns errLocked when another holder has it. flock
// locks belong to the open file, so two spools in one process exclude each
// other just as two processes do, and the kernel drops the lock when its
// holder dies, however it dies.
func tryLock(path string, create bool) (unlock func() error, err error) {
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, err
	}
	return f.Close, nil
}

// locksWork is true where tryLock excludes other holders.
const locksWork = true
