package retry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// listen starts a TCP listener on 127.0.0.1 that hands each connection to
// serve, and closes it when the test ends.
func listen(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// silentListener accepts connections and reads them without ever
// answering; each is closed when the test ends.
func silentListener(t *testing.T) string {
	t.Helper()
	var (
		mu    sync.Mutex // guards conns
		conns []net.Conn
	)
	addr := listen(t, func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		_, _ = io.Copy(io.Discard, c)
	})
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return addr
}

// closedPort is an address on 127.0.0.1 where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// post sends one export through a fresh transport and returns what
// RoundTrip returned, the way the Transport and the drain call it.
func post(t *testing.T, client *http.Client, target string, timeout time.Duration) (*http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader([]byte("export")))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := client.Do(req)
	if resp != nil {
		t.Cleanup(func() { resp.Body.Close() })
	}
	return resp, err
}

func TestCauseOfRealFailures(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(plain.Close)
	untrusted := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	// The handshakes this test fails on purpose are not worth a log line.
	untrusted.Config.ErrorLog = log.New(io.Discard, "", 0)
	untrusted.StartTLS()
	t.Cleanup(untrusted.Close)
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3")
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	t.Cleanup(busy.Close)
	// Reads the start of the request, then resets the connection.
	reset := listen(t, func(c net.Conn) {
		_, _ = c.Read(make([]byte, 1))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	silent := silentListener(t)

	for _, tc := range []struct {
		name    string
		target  string
		timeout time.Duration
		want    string
		// wantDo, when set, is the cause of the error http.Client.Do
		// returns, where it differs from RoundTrip's.
		wantDo string
		out    Outcome
	}{
		{"refused", "http://" + closedPort(t) + "/v1/traces", 5 * time.Second, "connection refused", "", Unreachable},
		{"reset", "http://" + reset + "/v1/traces", 5 * time.Second, "connection reset", "", Unreachable},
		{"timeout", "http://" + silent + "/v1/traces", 50 * time.Millisecond, "timeout", "", Unreachable},
		{"https to a plaintext port", strings.Replace(plain.URL, "http://", "https://", 1) + "/v1/traces", 5 * time.Second,
			"TLS handshake failed: tls: first record does not look like a TLS handshake",
			"TLS handshake failed: http: server gave HTTP response to HTTPS client", Unreachable},
		{"untrusted certificate", untrusted.URL + "/v1/traces", 5 * time.Second,
			"TLS handshake failed: x509: certificate signed by unknown authority", "", Unreachable},
		{"503", busy.URL + "/v1/traces", 5 * time.Second, "HTTP 503 Service Unavailable", "", ServerBusy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A transport of its own: no connection is reused across cases,
			// and the system's roots do not trust httptest's certificate.
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			wantDo := tc.want
			if tc.wantDo != "" {
				wantDo = tc.wantDo
			}
			for _, client := range []struct {
				name string
				c    *http.Client
				want string
			}{
				{"Client.Do", &http.Client{Transport: tr}, wantDo},
				{"RoundTrip", &http.Client{Transport: roundTripOnly{tr}}, tc.want},
			} {
				resp, err := post(t, client.c, tc.target, tc.timeout)
				if got := Cause(resp, err); got != client.want {
					t.Errorf("%s: Cause = %q, want %q (err %v)", client.name, got, client.want, err)
				}
				if out, _ := Evaluate(context.Background(), resp, err, time.Now); out != tc.out {
					t.Errorf("%s: Evaluate = %v, want %v", client.name, out, tc.out)
				}
			}
		})
	}
}

// roundTripOnly hides the *url.Error that http.Client.Do adds: the
// Transport and the drain call RoundTrip directly.
type roundTripOnly struct{ rt http.RoundTripper }

func (r roundTripOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.rt.RoundTrip(req)
	if err != nil {
		return nil, bareError{err}
	}
	return resp, nil
}

// bareError keeps the error Client.Do wraps as it came from RoundTrip
// (Do would otherwise wrap it once more in the same *url.Error).
type bareError struct{ err error }

func (b bareError) Error() string { return b.err.Error() }
func (b bareError) Unwrap() error { return b.err }

func TestCauseOfConstructedErrors(t *testing.T) {
	// net/http wraps a failed name lookup as *url.Error around
	// *net.OpError around *net.DNSError. No real lookup is made here.
	dnsErr := func(notFound bool, msg string) error {
		return &url.Error{Op: "Post", URL: "http://user:secret@collector.invalid:4318/v1/traces", Err: &net.OpError{
			Op: "dial", Net: "tcp", Err: &net.DNSError{Err: msg, Name: "collector.invalid", IsNotFound: notFound},
		}}
	}
	for _, tc := range []struct {
		name string
		resp *http.Response
		err  error
		want string
	}{
		{"name not found", nil, dnsErr(true, "no such host"), "name not found"},
		{"name server failing", nil, dnsErr(false, "server misbehaving"), "name lookup failed: server misbehaving"},
		{"200", &http.Response{StatusCode: 200}, nil, ""},
		{"204", &http.Response{StatusCode: 204}, nil, ""},
		{"429", &http.Response{StatusCode: 429}, nil, "HTTP 429 Too Many Requests"},
		{"400", &http.Response{StatusCode: 400}, nil, "HTTP 400 Bad Request"},
		{"unknown status", &http.Response{StatusCode: 599}, nil, "HTTP 599"},
		{"canceled", nil, &url.Error{Op: "Post", URL: "http://127.0.0.1:1/", Err: context.Canceled}, "canceled"},
		{"closed without an answer", nil, &url.Error{Op: "Post", URL: "http://127.0.0.1:1/", Err: io.EOF}, "connection closed without an answer"},
		{"unknown error keeps its text, not the URL", nil,
			&url.Error{Op: "Post", URL: "http://user:secret@127.0.0.1:1/", Err: errors.New("proxyconnect: boom")}, "proxyconnect: boom"},
		{"unknown bare error", nil, errors.New("boom"), "boom"},
		{"nothing at all", nil, nil, "no answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Cause(tc.resp, tc.err); got != tc.want {
				t.Fatalf("Cause = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRefusal(t *testing.T) {
	long := strings.Repeat("x", 2*refusalSnippet)
	for _, tc := range []struct {
		name, body, want string
	}{
		{"body", "  schema error\n", "HTTP 400: schema error"},
		{"empty", "", "HTTP 400: "},
		{"capped", long, "HTTP 400: " + long[:refusalSnippet]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: 400, Body: io.NopCloser(strings.NewReader(tc.body))}
			if got := Refusal(resp); got != tc.want {
				t.Fatalf("Refusal = %q, want %q", got, tc.want)
			}
		})
	}
}
