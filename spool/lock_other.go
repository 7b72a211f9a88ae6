//go:build !unix && !windows

package spool

import "os"

// tryLock on platforms without file locks only creates the file: a folder
// must then not be shared between processes.
func tryLock(path string, create bool) (unlock func() error, err error) {
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, err
	}
	return f.Close, nil
}

// locksWork is true where tryLock excludes other holders.
const locksWork = false
