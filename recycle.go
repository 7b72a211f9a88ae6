package otlpretry

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
)

// bodyTracker hands the memory of a spooled record back to the spool once
// no request body reading it is open: after RoundTrip has returned and
// every body it was given, the first and any GetBody made for a retry on a
// fresh connection, is closed. net/http may close a request body after
// RoundTrip returns, from its write loop, and may call GetBody during
// RoundTrip; recycling at either point alone could let the next record
// overwrite bytes still being sent.
type bodyTracker struct {
	reader func() io.Reader // a new reader of the whole body
	free   func()

	mu       sync.Mutex // guards open, returned and freed
	open     int
	returned bool
	freed    bool
}

// errBodyReleased answers a GetBody that comes after the record's memory
// went back to the spool: net/http never asks so late, but a lower
// transport might, and must not be given bytes of another record.
var errBodyReleased = errors.New("otlpretry: the spooled body was released after the attempt ended")

// trackBodies replaces req's body and GetBody with tracked readers of body.
func trackBodies(req *http.Request, body []byte, free func()) *bodyTracker {
	return trackReaders(req, int64(len(body)), func() io.Reader { return bytes.NewReader(body) }, free)
}

// trackReaders is trackBodies for a body of n bytes that open reads from
// its start each time, such as a merged request's pieces.
func trackReaders(req *http.Request, n int64, open func() io.Reader, free func()) *bodyTracker {
	bt := &bodyTracker{reader: open, free: free}
	req.Body = bt.newBody()
	req.GetBody = func() (io.ReadCloser, error) {
		b := bt.newBody()
		if b == nil {
			return nil, errBodyReleased
		}
		return b, nil
	}
	req.ContentLength = n
	return bt
}

// newBody returns a tracked reader of the body, or nil once it is freed.
func (bt *bodyTracker) newBody() io.ReadCloser {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if bt.freed {
		return nil
	}
	bt.open++
	return &trackedBody{Reader: bt.reader(), bt: bt}
}

func (bt *bodyTracker) roundTripDone() {
	bt.mu.Lock()
	bt.returned = true
	done := bt.open == 0
	bt.freed = bt.freed || done
	bt.mu.Unlock()
	if done {
		bt.free()
	}
}

func (bt *bodyTracker) closed() {
	bt.mu.Lock()
	bt.open--
	done := bt.open == 0 && bt.returned
	bt.freed = bt.freed || done
	bt.mu.Unlock()
	if done {
		bt.free()
	}
}

type trackedBody struct {
	io.Reader
	bt   *bodyTracker
	once sync.Once
}

func (b *trackedBody) Close() error {
	b.once.Do(b.bt.closed)
	return nil
}
