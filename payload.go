package otlpretry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/otlpretry/otlpretry/spool"
)

// payload is an export's body. The OTel exporters give every request a
// GetBody over their own buffer, so attempts replay that buffer and no
// copy is made on the happy path: the first attempt sends the request's own
// body, later ones a fresh reader from GetBody. The bytes are read into a
// buffer of ours only when the export must be kept, and later attempts use
// that copy.
type payload struct {
	getBody func() (io.ReadCloser, error)
	// replay is body, bound once for the lifetime of the exchange that
	// holds this payload: setting a method value as each attempt's GetBody
	// would allocate every time.
	replay func() (io.ReadCloser, error)

	mu    sync.Mutex    // guards first and data
	first io.ReadCloser // the request's own body until an attempt takes it
	data  []byte        // nil until read
}

// init takes the body of req. It reads it at once only when the request
// cannot replay it.
func (p *payload) init(req *http.Request) error {
	if req.GetBody != nil {
		p.getBody, p.first = req.GetBody, req.Body
		return nil
	}
	data, err := readLimited(req.Body)
	req.Body.Close()
	if err != nil {
		return fmt.Errorf("otlpretry: read request body: %w", err)
	}
	p.data = data
	return nil
}

// reset forgets the export, so that a pooled payload keeps no body alive.
func (p *payload) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.getBody, p.first, p.data = nil, nil, nil
}

// body returns a fresh reader over the body. The lower transport closes
// it, as it does any request body.
func (p *payload) body() (io.ReadCloser, error) {
	p.mu.Lock()
	data, first, getBody := p.data, p.first, p.getBody
	if data == nil {
		p.first = nil
	}
	p.mu.Unlock()
	switch {
	case data != nil:
		return io.NopCloser(bytes.NewReader(data)), nil
	case first != nil:
		return first, nil
	case getBody == nil:
		return nil, errBodyGone
	}
	return getBody()
}

// errBodyGone: the lower transport asked for the body again after its
// export was settled; the pooled payload no longer holds it.
var errBodyGone = errors.New("request body no longer available")

// closeUnsent closes the request's own body when no attempt took it (by
// the RoundTripper contract RoundTrip closes it; an attempt's lower
// transport closes the one it was given). A body read by init is already
// closed.
func (p *payload) closeUnsent() {
	p.mu.Lock()
	first := p.first
	p.first = nil
	p.mu.Unlock()
	if first != nil {
		first.Close()
	}
}

// bytes returns the body, reading it the first time.
func (p *payload) bytes() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.data != nil {
		return p.data, nil
	}
	rc, err := p.getBody()
	if err != nil {
		return nil, fmt.Errorf("otlpretry: replay request body: %w", err)
	}
	defer rc.Close()
	data, err := readLimited(rc)
	if err != nil {
		return nil, fmt.Errorf("otlpretry: read request body: %w", err)
	}
	p.data = data
	return data, nil
}

// readLimited reads a body of at most spool.MaxBodySize bytes.
func readLimited(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, spool.MaxBodySize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > spool.MaxBodySize {
		return nil, fmt.Errorf("%w: body over %d bytes", spool.ErrTooLarge, spool.MaxBodySize)
	}
	return data, nil
}

// detachedContext lets a held export's attempts outlive the exporter's
// call: it ends only with the transport (Shutdown), yet carries the
// request's values (trace context, httptrace hooks). Value answers from
// the transport's context first, which holds no values of its own but
// names itself as the enclosing cancel context; so the context package
// registers what is derived from it as an ordinary child, with no watcher
// goroutine, and every other key falls through to the request. The
// attempts themselves get their contexts from newAttempt, which takes the
// two apart.
type detachedContext struct {
	context.Context                 // the transport's
	values          context.Context // the request's
}

func (c detachedContext) Value(key any) any {
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.values.Value(key)
}
