package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// The child process of TestTwoProcesses is this test binary run with these
// variables set; TestMain then runs its tests without building the relay.
const (
	childEnvDir      = "OTLPRETRY_E2E_CHILD_DIR"
	childEnvEndpoint = "OTLPRETRY_E2E_CHILD_ENDPOINT"
	childEnvToken    = "OTLPRETRY_E2E_CHILD_TOKEN"
	// childPrefix starts each line in which the child reports a batch its
	// exporter got success for: the span keys, space-separated.
	childPrefix = "exported "
	// childBatches is how many batches the parent waits for before the
	// kill; the child keeps exporting, so the kill lands mid-export.
	childBatches = 20
	childSpans   = 10 // spans a batch
	// secondIncrements is how many metric exports the second process
	// makes to B, one increment each.
	secondIncrements = 20
)

// isChild tells whether this test binary runs as TestTwoProcesses' child.
func isChild() bool { return os.Getenv(childEnvDir) != "" }

// TestTwoProcesses: process 1 (a child process) exports traces to A with
// A's token while A refuses connections, so every export is stored, and is
// killed with SIGKILL. Process 2 (this one) opens the same spool folder
// and exports metrics to B with B's token. Then A returns. A's credentials
// reach process 2 one of two ways: a live request to A (with A's token),
// or WithEndpointHeaders for A. Every span process 1's exporter got
// success for reaches A, with A's token; nothing is quarantined; each
// receiver answers 401 to any request without its own token, and the test
// fails on any such request.
func TestTwoProcesses(t *testing.T) {
	t.Parallel()
	t.Run("live-credentials", func(t *testing.T) {
		t.Parallel()
		runTwoProcesses(t, scenario(t, "2proc/live-credentials"), false)
	})
	t.Run("configured-credentials", func(t *testing.T) {
		t.Parallel()
		runTwoProcesses(t, scenario(t, "2proc/configured-creds"), true)
	})
}

func runTwoProcesses(t *testing.T, r *row, configured bool) {
	ctx := context.Background()
	sinkA, sinkB := startSink(t), startSink(t)
	frontA := startAuthFront(t, sinkA.url, tokenA)
	frontB := startAuthFront(t, sinkB.url, tokenB)
	proxyA := otlptest.StartProxy(t, frontA.url)
	if err := proxyA.SetMode(otlptest.Refuse); err != nil {
		t.Fatal(err)
	}
	aURL := proxyA.URL() + "/v1/traces"
	dir := filepath.Join(t.TempDir(), "spool")

	keys, batches := runKilledChild(t, dir, aURL, tokenA)
	r.set(func(r *row) { r.produced, r.acked = len(keys), len(keys) })

	// Process 2: the same folder; metrics to B with B's token. A is still
	// down.
	var opts []otlpretry.Option
	if configured {
		opts = append(opts, otlpretry.WithEndpointHeaders(proxyA.URL(), http.Header{"Authorization": {tokenA}}))
	}
	rt := newTransport(t, "process 2", dir, opts...)
	if st := rt.Stats(); st.Records < batches {
		t.Errorf("process 2 finds %d exports in the spool, want at least the %d process 1 reported", st.Records, batches)
	}
	mexp, err := otlpmetrichttp.New(ctx,
		otlpmetrichttp.WithEndpointURL(frontB.url+"/v1/metrics"),
		otlpmetrichttp.WithHeaders(map[string]string{"Authorization": tokenB}),
		otlpmetrichttp.WithHTTPClient(rt.Client()),
		otlpmetrichttp.WithTemporalitySelector(sdkmetric.DeltaTemporalitySelector))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(mexp)))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	counter, err := mp.Meter("e2e").Int64Counter("e2e.second")
	if err != nil {
		t.Fatal(err)
	}
	for range secondIncrements {
		counter.Add(ctx, 1)
		if err := mp.ForceFlush(ctx); err != nil {
			t.Fatalf("MeterProvider.ForceFlush: %v", err)
		}
	}
	if sum := sinkB.pointSum(); sum != secondIncrements {
		t.Errorf("B's data points add up to %d, want the %d increments", sum, secondIncrements)
	}

	if err := proxyA.SetMode(otlptest.Pass); err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithTimeout(ctx, flushLimit)
	defer cancel()
	var live []otlptest.SpanKey
	if !configured {
		// A is up, but process 2 has no credentials for it: process 1's
		// exports wait, and nothing goes to A.
		err := rt.ForceFlush(fctx)
		if !errors.Is(err, otlpretry.ErrNotDelivered) || !strings.Contains(err.Error(), aURL+": waiting for credentials") {
			t.Errorf("ForceFlush before a live request to A: %v, want %v with A waiting for credentials", err, otlpretry.ErrNotDelivered)
		}
		if st := destination(rt.Stats(), aURL); st.State != "waiting for credentials" {
			t.Errorf("A in Stats before a live request to it: %+v, want waiting for credentials", st)
		}
		if n, _ := frontA.counts(); n != 0 {
			t.Errorf("A got %d requests before process 2 had its credentials", n)
		}
		// A live export to A with A's token brings them.
		live = liveSpans(t, rt, aURL, tokenA)
	}
	if err := rt.ForceFlush(fctx); err != nil {
		t.Errorf("Transport.ForceFlush: %v", err)
	}

	received, dups := sinkA.spanCounts()
	want := append(parseKeys(t, keys), live...)
	lost := sinkA.missing(want)
	r.set(func(r *row) {
		r.counted = true
		r.received, r.lost, r.dups = len(keys)-sinkA.missing(parseKeys(t, keys)), lost, dups
	})
	st := rt.Stats()
	t.Logf("process 1 reported %d batches (%d spans); process 2: %d distinct spans at A (%d live), %d duplicates; transport %+v",
		batches, len(keys), received, len(live), dups, st)
	if lost != 0 {
		t.Errorf("%d of %d spans (process 1's %d, process 2's live %d) never reached A", lost, len(want), len(keys), len(live))
	}
	checkAuth(t, "A", frontA)
	checkAuth(t, "B", frontB)
	if n, _ := sinkB.spanCounts(); n != 0 {
		t.Errorf("B received %d spans, want none", n)
	}
	if n, _ := sinkA.pointCounts(); n != 0 {
		t.Errorf("A received %d data points, want none", n)
	}
	if st.Quarantined != 0 || st.Records != 0 || st.Dropped.Total() != 0 {
		t.Errorf("process 2: quarantined %d, %d left in the spool, dropped %+v; want none", st.Quarantined, st.Records, st.Dropped)
	}
	if q := filesUnder(t, filepath.Join(dir, "quarantine")); len(q) != 0 {
		t.Errorf("quarantine holds %v, want nothing", q)
	}
}

// runKilledChild runs TestTwoProcessChild exporting to endpoint with
// token through a Transport on dir, kills it with SIGKILL once it has
// reported childBatches batches, and returns the span keys it reported
// and how many batches.
func runKilledChild(t *testing.T, dir, endpoint, token string) (keys []string, batches int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestTwoProcessChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnvDir+"="+dir, childEnvEndpoint+"="+endpoint, childEnvToken+"="+token)
	var stderr otlptest.SyncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill the child if it never reports enough, so the scan below ends.
	watchdog := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
	defer watchdog.Stop()

	// Every line read in full was written after the exporter's success, so
	// every key in it must be delivered, whenever the kill came.
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), childPrefix)
		if !ok {
			continue
		}
		keys = append(keys, strings.Fields(line)...)
		batches++
		if batches == childBatches {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("process 1 did not die of SIGKILL: %v\nstderr:\n%s", err, stderr.String())
	}
	if batches < childBatches {
		t.Fatalf("process 1 reported %d batches before it died, want %d\nstderr:\n%s", batches, childBatches, stderr.String())
	}
	return keys, batches
}

// TestTwoProcessChild is process 1 of TestTwoProcesses; on its own it is
// skipped. It exports batches of spans with its token for ever, printing
// each batch its exporter got success for, until it is killed.
func TestTwoProcessChild(t *testing.T) {
	if !isChild() {
		t.Skip("process 1 of TestTwoProcesses")
	}
	ctx := context.Background()
	rt, err := otlpretry.New(otlpretry.WithDir(os.Getenv(childEnvDir)))
	if err != nil {
		t.Fatal(err)
	}
	exp, err := otlptracehttp.New(ctx,
		otlptracehttp.WithEndpointURL(os.Getenv(childEnvEndpoint)),
		otlptracehttp.WithHeaders(map[string]string{"Authorization": os.Getenv(childEnvToken)}),
		otlptracehttp.WithHTTPClient(rt.Client()))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(&reportingExporter{SpanExporter: exp}))
	tracer := tp.Tracer("e2e-process-1")
	for {
		for range childSpans {
			_, span := tracer.Start(ctx, "process 1")
			span.End()
		}
		if err := tp.ForceFlush(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// reportingExporter prints the spans of every export that succeeded, in
// one write, once the exporter has returned.
type reportingExporter struct{ sdktrace.SpanExporter }

func (r *reportingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if err := r.SpanExporter.ExportSpans(ctx, spans); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString(childPrefix)
	for _, s := range spans {
		sc := s.SpanContext()
		fmt.Fprintf(&b, "%s ", otlptest.SpanKey{TraceID: sc.TraceID(), SpanID: sc.SpanID()})
	}
	b.WriteString("\n")
	_, err := os.Stdout.WriteString(b.String())
	return err
}

// liveSpans exports a few spans to endpoint with token through rt, from
// a TracerProvider of their own, and returns their keys once exported.
func liveSpans(t *testing.T, rt *otlpretry.Transport, endpoint, token string) []otlptest.SpanKey {
	t.Helper()
	ctx := context.Background()
	exp, err := otlptracehttp.New(ctx,
		otlptracehttp.WithEndpointURL(endpoint),
		otlptracehttp.WithHeaders(map[string]string{"Authorization": token}),
		otlptracehttp.WithHTTPClient(rt.Client()))
	if err != nil {
		t.Fatal(err)
	}
	cexp := &countingExporter{SpanExporter: exp}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(cexp))
	defer func() { _ = tp.Shutdown(ctx) }()
	produced := otlptest.SpanLoad{Rate: 1000, Duration: 10 * time.Millisecond, Tick: time.Millisecond}.Run(ctx, tp)
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatalf("live export to A: %v", err)
	}
	if acked, failed := cexp.counts(); failed != 0 || acked != produced.Count() {
		t.Fatalf("live export to A: %d of %d spans acknowledged, %d failed", acked, produced.Count(), failed)
	}
	return produced.IDs()
}

// parseKeys reads span keys as otlptest.SpanKey.String writes them.
func parseKeys(t *testing.T, keys []string) []otlptest.SpanKey {
	t.Helper()
	out := make([]otlptest.SpanKey, 0, len(keys))
	for _, k := range keys {
		sk, err := otlptest.ParseSpanKey(k)
		if err != nil {
			t.Fatalf("span key %q from process 1: %v", k, err)
		}
		out = append(out, sk)
	}
	return out
}

// destination returns the Stats of the destination with url, or the zero
// value.
func destination(st otlpretry.Stats, url string) otlpretry.DestinationStats {
	for _, d := range st.Destinations {
		if d.URL == url {
			return d
		}
	}
	return otlpretry.DestinationStats{}
}

// filesUnder lists the regular files under dir, none if it does not exist.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Errorf("walking %s: %v", dir, err)
	}
	return out
}
