package otlpretry

import (
	"bytes"
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
	body []byte
	free func()

	mu       sync.Mutex // guards open and returned
	open     int
	returned bool
}

// trackBodies replaces req's body and GetBody with tracked readers of body.
func trackBodies(req *http.Request, body []byte, free func()) *bodyTracker {
	bt := &bodyTracker{body: body, free: free}
	req.Body = bt.newBody()
	req.GetBody = func() (io.ReadCloser, error) { return bt.newBody(), nil }
	req.ContentLength = int64(len(body))
	return bt
}

func (bt *bodyTracker) newBody() io.ReadCloser {
	bt.mu.Lock()
	bt.open++
	bt.mu.Unlock()
	return &trackedBody{Reader: bytes.NewReader(bt.body), bt: bt}
}

func (bt *bodyTracker) roundTripDone() {
	bt.mu.Lock()
	bt.returned = true
	done := bt.open == 0
	bt.mu.Unlock()
	if done {
		bt.free()
	}
}

func (bt *bodyTracker) closed() {
	bt.mu.Lock()
	bt.open--
	done := bt.open == 0 && bt.returned
	bt.mu.Unlock()
	if done {
		bt.free()
	}
}

type trackedBody struct {
	*bytes.Reader
	bt   *bodyTracker
	once sync.Once
}

func (b *trackedBody) Close() error {
	b.once.Do(b.bt.closed)
	return nil
}
