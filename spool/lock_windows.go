package spool

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// tryLock: see lock_unix.go. LockFileEx locks, like flock, die with their
// holder.
func tryLock(path string, create bool) (unlock func() error, err error) {
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, err
	}
	ol := new(windows.Overlapped)
	err = windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol)
	if err != nil {
		f.Close()
		if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
			return nil, errLocked
		}
		return nil, err
	}
	return f.Close, nil
}

// locksWork is true where tryLock excludes other holders.
const locksWork = true
