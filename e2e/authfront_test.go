package e2e

import (
	"bytes"
	"context"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// exportIDHeader numbers the live exports a test follows one by one (see
// timedTransport); the authFront in front of their receiver notes when
// each arrived.
const exportIDHeader = "X-E2e-Export"

// authFront is a real HTTP server on 127.0.0.1 in front of a Collector
// receiver that checks the Authorization header of every request it gets:
// one with exactly want is forwarded to the receiver, any other (another
// destination's token, or none) is answered 401 and counted by the value
// it carried, so a crossed or missing credential shows in bad.
type authFront struct {
	url  string
	want string

	mu       sync.Mutex
	requests int                    // every request, good or bad
	bad      map[string]int         // Authorization values refused, "" for none
	arrived  map[string][]time.Time // exportIDHeader value → arrivals
}

// startAuthFront starts an authFront forwarding to upstream (the
// receiver's base URL) and closes it when the test ends.
func startAuthFront(t *testing.T, upstream, want string) *authFront {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	f := &authFront{want: want, bad: map[string]int{}, arrived: map[string][]time.Time{}}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = tr
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		got := r.Header.Get("Authorization")
		f.mu.Lock()
		f.requests++
		if id := r.Header.Get(exportIDHeader); id != "" {
			f.arrived[id] = append(f.arrived[id], now)
		}
		ok := got == f.want
		if !ok {
			f.bad[got]++
		}
		f.mu.Unlock()
		if !ok {
			http.Error(w, "wrong credentials", http.StatusUnauthorized)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		tr.CloseIdleConnections()
	})
	f.url = srv.URL
	return f
}

// counts returns how many requests arrived and the refused ones by the
// Authorization value they carried.
func (f *authFront) counts() (requests int, bad map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests, maps.Clone(f.bad)
}

// arrivals returns when each numbered export arrived, every time it did.
func (f *authFront) arrivals() map[string][]time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string][]time.Time, len(f.arrived))
	for k, v := range f.arrived {
		out[k] = append([]time.Time(nil), v...)
	}
	return out
}

// checkAuth fails t unless every request f got carried its own token and
// at least one came.
func checkAuth(t *testing.T, name string, f *authFront) {
	t.Helper()
	requests, bad := f.counts()
	if len(bad) != 0 {
		t.Errorf("%s got requests with other credentials than its own, by Authorization value (\"\" for none): %v", name, bad)
	}
	if requests == 0 {
		t.Errorf("%s got no request", name)
	}
}

// startObservedSink is startSink whose receiver also calls onMetrics and
// onLogs with every metrics and logs request it accepts, as it accepts it.
func startObservedSink(t *testing.T, onMetrics func(pmetric.Metrics), onLogs func(plog.Logs)) *sink {
	t.Helper()
	s := &sink{spans: map[spanKey]int{}, points: map[string]int{}, pointValues: map[string]int64{}, records: map[string]int{}, auth: map[string]int{}}
	traces, err := consumer.NewTraces(s.consumeTraces)
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := consumer.NewMetrics(func(ctx context.Context, md pmetric.Metrics) error {
		onMetrics(md)
		return s.consumeMetrics(ctx, md)
	})
	if err != nil {
		t.Fatal(err)
	}
	logs, err := consumer.NewLogs(func(ctx context.Context, ld plog.Logs) error {
		onLogs(ld)
		return s.consumeLogs(ctx, ld)
	})
	if err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for range 5 {
		addr, err := freeLoopbackAddr()
		if err != nil {
			t.Fatal(err)
		}
		stop, err := startReceiver(addr, traces, metrics, logs)
		if err != nil {
			lastErr = err
			continue
		}
		t.Cleanup(stop)
		s.url = "http://" + addr
		return s
	}
	t.Fatalf("starting the OTLP receiver: %v", lastErr)
	return nil
}

// TestAuthFront: the check in front of a receiver forwards a request with
// its own token and answers 401, without forwarding, to one with another
// token or none, counting each by the value it carried.
func TestAuthFront(t *testing.T) {
	t.Parallel()
	s := startSink(t)
	f := startAuthFront(t, s.url, tokenA)
	body, _ := otlptest.TraceBody(3)
	for _, c := range []struct {
		auth string
		want int
	}{{tokenA, http.StatusOK}, {tokenB, http.StatusUnauthorized}, {"", http.StatusUnauthorized}} {
		req, err := http.NewRequest(http.MethodPost, f.url+"/v1/traces", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-protobuf")
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("Authorization %q: status %d, want %d", c.auth, resp.StatusCode, c.want)
		}
	}
	requests, bad := f.counts()
	if want := map[string]int{tokenB: 1, "": 1}; requests != 3 || !maps.Equal(bad, want) {
		t.Errorf("%d requests, refused %v; want 3 and %v", requests, bad, want)
	}
	if n, _ := s.spanCounts(); n != 3 {
		t.Errorf("the receiver got %d spans, want the 3 of the one good request", n)
	}
}
