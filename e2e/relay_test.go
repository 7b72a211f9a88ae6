package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
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

// relayEnv is this process's environment without anything that configures
// OTel or otlpretry, with the user cache folder in the test's, plus extra.
func relayEnv(t *testing.T, extra ...string) []string {
	t.Helper()
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OTEL_") || strings.HasPrefix(kv, "OTLPRETRY_") ||
			strings.HasPrefix(kv, "XDG_CACHE_HOME=") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		out = append(out, kv)
	}
	home := t.TempDir()
	out = append(out, "HOME="+home, "XDG_CACHE_HOME="+filepath.Join(home, "cache"))
	return append(out, extra...)
}

// relayProc is a running `otlpretry relay`.
type relayProc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	addr   string
	done   chan struct{}
	code   int
	client *http.Client
}

var listeningRE = regexp.MustCompile(`otlpretry relay: listening" addr=(\S+)`)

// startRelay starts `otlpretry relay args...` and waits until it listens.
// It fails the test if the relay reports a data race.
func startRelay(t *testing.T, env []string, args ...string) *relayProc {
	t.Helper()
	cmd := exec.Command(relayBin, append([]string{"relay"}, args...)...)
	cmd.Env = env
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	p := &relayProc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{}),
		client: &http.Client{Transport: tr, Timeout: 5 * time.Second}}
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(p.stderr, pw)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		}
		pw.Close()
		close(p.done)
	}()
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("the relay reported a data race:\n%s", p.stderr.String())
		} else if t.Failed() {
			t.Logf("relay stderr:\n%s", p.stderr.String())
		}
	})
	select {
	case p.addr = <-found:
	case <-p.done:
		t.Fatalf("relay exited with %d before listening:\n%s", p.code, p.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("relay did not listen within 30s:\n%s", p.stderr.String())
	}
	return p
}

func (p *relayProc) url(path string) string { return "http://" + p.addr + path }

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
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.code
	case <-time.After(limit):
		t.Fatalf("relay still running %v after %v:\n%s", limit, sig, p.stderr.String())
		return 0
	}
}

// syncBuffer collects a subprocess's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
