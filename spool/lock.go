package spool

import "errors"

var errLocked = errors.New("locked by another process")
