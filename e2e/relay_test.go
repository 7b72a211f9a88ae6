package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

var relayFaults = []faultKind{
	{"refuse", otlptest.Refuse, true, 0},
	{"503", otlptest.HTTPStatus(http.StatusServiceUnavailable, ""), true, 0},
}

// The relay's upstream credential, from OTEL_EXPORTER_OTLP_HEADERS, and the
// one the SDK sends the relay: neither may reach the relay's spool.
const (
	relayUpstreamSecret = "relay-upstr3am-s3cret"
	relayClientSecret   = "relay-cli3nt-s3cret"
)

// TestRelayFaults: TracerProvider → plain otlptracehttp → `otlpretry relay`
// (a separate process) → fault proxy → Collector receiver, each fault kind
// alone for 4 s in the middle of an 8 s run.
func TestRelayFaults(t *testing.T) {
	for _, k := range relayFaults {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			r := scenario(t, "relay/"+k.name)
			runRelayScenario(t, r, k)
		})
	}
}

func runRelayScenario(t *testing.T, r *row, k faultKind) {
	ctx := context.Background()
	s := startSink(t)
	proxy := otlptest.StartProxy(t, s.url)
	dir := filepath.Join(t.TempDir(), "spool")
	relay := startRelay(t, relayEnv(t,
		"OTEL_EXPORTER_OTLP_ENDPOINT="+proxy.URL(),
		"OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20"+relayUpstreamSecret),
		"--listen", "127.0.0.1:0", "--dir", dir)

	exp, err := otlptracehttp.New(ctx,
		otlptracehttp.WithEndpointURL(relay.url("/v1/traces")),
		otlptracehttp.WithHeaders(map[string]string{"Authorization": "Bearer " + relayClientSecret}))
	if err != nil {
		t.Fatal(err)
	}
	cexp := &countingExporter{SpanExporter: exp}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(cexp))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = tp.Shutdown(sctx)
	})

	stopSampling := sampleBacklog(func() int { return relay.status(t).Backlog.Records }, r)
	var produced *otlptest.Produced
	loadDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(loadDone)
		produced = otlptest.SpanLoad{Rate: rate(), Duration: steady + fault + recover}.Run(ctx, tp)
	}()
	time.Sleep(time.Until(start.Add(steady)))
	if err := proxy.SetMode(k.mode); err != nil {
		t.Errorf("SetMode(%v): %v", k.mode, err)
	}
	time.Sleep(time.Until(start.Add(steady + fault)))
	// Near the end of the fault the backlog is on disk: check it.
	checkSpool(t, dir, relayUpstreamSecret, relayClientSecret)
	if err := proxy.SetMode(otlptest.Pass); err != nil {
		t.Errorf("SetMode(Pass): %v", err)
	}
	<-loadDone

	fctx, cancel := context.WithTimeout(ctx, flushLimit)
	defer cancel()
	if err := tp.ForceFlush(fctx); err != nil {
		t.Errorf("TracerProvider.ForceFlush: %v", err)
	}
	// The relay delivers its backlog in the background: wait until it is
	// empty and the receiver has every span, within flushLimit.
	ids := produced.IDs()
	for fctx.Err() == nil {
		if relay.status(t).Backlog.Records == 0 && s.missing(ids) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopSampling()
	st := relay.status(t)

	received, dups := s.spanCounts()
	acked, failed := cexp.counts()
	r.set(func(r *row) {
		r.counted = true
		r.produced, r.acked, r.received, r.dups = len(ids), acked, received, dups
		r.lost = s.missing(ids)
	})
	t.Logf("produced=%d acked=%d (failed %d) received=%d lost=%d dups=%d backlog=%d; relay status %+v",
		r.produced, r.acked, failed, r.received, r.lost, r.dups, r.backlog, st)
	checkCounts(t, r, k.maxDups)
	if st.Spooled == 0 && st.Retried == 0 {
		t.Errorf("the relay saw no failure: the fault did not hit the exports")
	}
	if st.Dropped.Total != 0 {
		t.Errorf("the relay dropped %d exports", st.Dropped.Total)
	}
	checkSpool(t, dir, relayUpstreamSecret, relayClientSecret)
	// Upstream, every export carried the relay's credential, never the
	// client's: those from the spool too.
	if auth := s.authCounts(); len(auth) != 1 || auth["Bearer "+relayUpstreamSecret] == 0 {
		t.Errorf("exports by Authorization header at the Collector: %v, want all with OTEL_EXPORTER_OTLP_HEADERS's", auth)
	}
	if code := relay.signal(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Errorf("relay exit code %d after SIGTERM, want 0", code)
	}
}

// relayStatus is the part of the relay's GET /status used here.
type relayStatus struct {
	Circuit string `json:"circuit"`
	Backlog struct {
		Records int `json:"records"`
	} `json:"backlog"`
	Delivered struct {
		Direct    uint64 `json:"direct"`
		FromSpool uint64 `json:"from_spool"`
	} `json:"delivered"`
	Spooled uint64 `json:"spooled"`
	Retried uint64 `json:"retried"`
	Dropped struct {
		Total uint64 `json:"total"`
	} `json:"dropped"`
}

// relayEnv is the environment of a relay under test (otlptest.CleanEnv).
func relayEnv(t *testing.T, extra ...string) []string {
	t.Helper()
	return otlptest.CleanEnv(t, extra...)
}

// relayProc is a running `otlpretry relay`.
type relayProc struct {
	*otlptest.Relay
	client *http.Client
}

// startRelay starts `otlpretry relay --grpc-listen 127.0.0.1:0 args...`
// and waits until it listens. It fails the test if the relay reports a data
// race. The gRPC receiver is on a free port so that relays of parallel
// tests do not contend for 4317.
func startRelay(t *testing.T, env []string, args ...string) *relayProc {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &relayProc{
		Relay:  otlptest.StartRelay(t, relayBin, env, append([]string{"--grpc-listen", "127.0.0.1:0"}, args...)...),
		client: &http.Client{Transport: tr, Timeout: 5 * time.Second},
	}
}

func (p *relayProc) url(path string) string { return p.URL(path) }

func (p *relayProc) status(t *testing.T) relayStatus {
	var st relayStatus
	resp, err := p.client.Get(p.url("/status"))
	if err != nil {
		t.Errorf("GET /status: %v", err)
		return st
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Errorf("GET /status: %v", err)
	}
	return st
}

// signal sends sig and waits for the exit, within limit; it returns the
// exit code.
func (p *relayProc) signal(t *testing.T, sig syscall.Signal, limit time.Duration) int {
	t.Helper()
	return p.Signal(t, sig, limit)
}
