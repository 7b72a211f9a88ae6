package otlpretry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/otlpretry/otlpretry/spool"
)

// payload is an export's body. The OTel exporters give every request a
// GetBody over their own buffer, so attempts replay that buffer and no
// copy is made on the happy path; the bytes are read into a buffer of ours
// only when the export must be kept, and later attempts use that copy.
type payload struct {
	getBody func() (io.ReadCloser, error)
	length  int64 // Content-Length of the original request; -1 if unknown

	mu   sync.Mutex // guards data
	data []byte     // nil until read
}

func newPayload(req *http.Request) (*payload, error) {
	if req.GetBody != nil {
		return &payload{getBody: req.GetBody, length: req.ContentLength}, nil
	}
	data, err := readLimited(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("otlpretry: read request body: %w", err)
	}
	return &payload{data: data, length: int64(len(data))}, nil
}

// body returns a fresh reader over the body.
func (p *payload) body() (io.ReadCloser, error) {
	p.mu.Lock()
	data := p.data
	p.mu.Unlock()
	if data != nil {
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	return p.getBody()
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

// detachedContext lets attempts outlive the exporter's call: it ends only
// with the transport (Shutdown), yet carries the request's values (trace
// context, httptrace hooks). Value answers from the transport's context
// first, which holds no values of its own but names itself as the
// enclosing cancel context; so the context package registers each attempt
// as an ordinary child of it, with no watcher goroutine, and every other
// key falls through to the request.
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
