package otlptest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: every
// server, proxy connection and SDK pipeline here must shut down completely,
// or long e2e runs that reuse these helpers would accumulate leaks.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newClient returns a client with a private transport whose idle
// connections are closed when the test ends, so keep-alive goroutines do
// not count as leaks and no test reuses another test's connection.
func newClient(t testing.TB, timeout time.Duration) *http.Client {
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: timeout}
}

// waitCtx bounds a wait that should end almost immediately; the deadline is
// only there so a broken implementation fails instead of hanging.
func waitCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

// post sends body and reads the whole reply, so the connection can be
// reused and nothing is left half-read.
func post(c *http.Client, url, contentType, encoding string, body []byte) (reply, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Content-Type", contentType)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: b}, err
}

const protobufCT = "application/x-protobuf"
