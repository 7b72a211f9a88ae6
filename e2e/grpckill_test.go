package e2e

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/otlpretrygrpc"
)

// grpcChildEnv marks the child process of TestGRPCKill (beside the
// variables of TestTwoProcesses' child, which it reuses).
const grpcChildEnv = "OTLPRETRY_E2E_GRPC_CHILD"

// grpcToken is the authorization metadata the destination of TestGRPCKill
// requires.
const grpcToken = "Bearer grpc-e2e-token"

// TestGRPCKill: process 1 (a child process) exports traces with
// otlptracegrpc through the Transport's DialOption, with an authorization
// token, while the destination refuses connections, so every export is
// stored; it is killed with SIGKILL. Process 2 (this one) opens the same
// spool folder; the destination returns, and requires the token (the
// front answers Unauthenticated without it). Metadata is never stored, so
// process 2 sends process 1's exports with a live call's metadata (its
// own otlptracegrpc exporter with the token) or with WithEndpointHeaders
// for grpc://host:port. Every span process 1's exporter got success for
// arrives; no call comes without the token; nothing is quarantined.
func TestGRPCKill(t *testing.T) {
	t.Parallel()
	t.Run("live-call", func(t *testing.T) {
		t.Parallel()
		runGRPCKill(t, scenario(t, "grpc/sigkill-live-call"), false)
	})
	t.Run("configured", func(t *testing.T) {
		t.Parallel()
		runGRPCKill(t, scenario(t, "grpc/sigkill-configured"), true)
	})
}

func runGRPCKill(t *testing.T, r *row, configured bool) {
	ctx := context.Background()
	s, upstream := startGRPCSink(t)
	front := otlptest.StartGRPCFront(t, upstream, nil)
	front.RequireMetadata("authorization", grpcToken)
	proxy := otlptest.StartProxy(t, front.Addr())
	if err := proxy.SetMode(otlptest.Refuse); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "spool")

	keys, batches := runKilledGRPCChild(t, dir, proxy.Addr())
	r.set(func(r *row) { r.produced, r.acked = len(keys), len(keys) })

	var opts []otlpretry.Option
	if configured {
		opts = append(opts, otlpretry.WithEndpointHeaders("grpc://"+proxy.Addr(), http.Header{"Authorization": {grpcToken}}))
	}
	rt := newTransport(t, "process 2", dir, opts...)
	if st := rt.Stats(); st.Records < batches {
		t.Errorf("process 2 finds %d exports in the spool, want at least the %d process 1 reported", st.Records, batches)
	}
	if err := proxy.SetMode(otlptest.Pass); err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithTimeout(ctx, flushLimit)
	defer cancel()
	var live []otlptest.SpanKey
	if !configured {
		// The destination is up, but process 2 has no metadata for it:
		// process 1's exports wait, and no call goes to it.
		err := rt.ForceFlush(fctx)
		if !errors.Is(err, otlpretry.ErrNotDelivered) || !strings.Contains(err.Error(), "waiting for credentials") {
			t.Errorf("ForceFlush before a live call: %v, want %v waiting for credentials", err, otlpretry.ErrNotDelivered)
		}
		if fw, _, bad := front.Counts(); fw+bad != 0 {
			t.Errorf("the destination got %d calls before process 2 had its metadata", fw+bad)
		}
		live = liveGRPCSpans(t, rt, proxy.Addr())
	}
	if err := rt.ForceFlush(fctx); err != nil {
		t.Errorf("Transport.ForceFlush: %v", err)
	}

	parsed := parseKeys(t, keys)
	want := append(parsed, live...)
	lost := s.missing(want)
	received, dups := s.spanCounts()
	r.set(func(r *row) {
		r.counted = true
		r.received, r.lost, r.dups = len(parsed)-s.missing(parsed), lost, dups
	})
	st := rt.Stats()
	forwarded, _, bad := front.Counts()
	t.Logf("process 1 reported %d batches (%d spans); process 2: %d distinct spans received (%d live), %d duplicates; %d calls forwarded, %d without the token; transport %+v",
		batches, len(keys), received, len(live), dups, forwarded, bad, st)
	if lost != 0 {
		t.Errorf("%d of %d spans (process 1's %d, process 2's live %d) never arrived", lost, len(want), len(keys), len(live))
	}
	if bad != 0 {
		t.Errorf("%d calls came without the token", bad)
	}
	if st.Quarantined != 0 || st.Records != 0 || st.Dropped.Total() != 0 {
		t.Errorf("process 2: quarantined %d, %d left in the spool, dropped %+v; want none", st.Quarantined, st.Records, st.Dropped)
	}
}

// runKilledGRPCChild runs TestGRPCKillChild exporting to addr through a
// Transport on dir, kills it with SIGKILL once it has reported
// childBatches batches, and returns the span keys it reported and how many
// batches.
func runKilledGRPCChild(t *testing.T, dir, addr string) (keys []string, batches int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestGRPCKillChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnvDir+"="+dir, childEnvEndpoint+"="+addr, childEnvToken+"="+grpcToken, grpcChildEnv+"=1")
	var stderr otlptest.SyncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
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

// TestGRPCKillChild is process 1 of TestGRPCKill; on its own it is
// skipped. It exports batches of spans over gRPC with its token for ever,
// printing each batch its exporter got success for, until it is killed.
func TestGRPCKillChild(t *testing.T) {
	if !isChild() || os.Getenv(grpcChildEnv) == "" {
		t.Skip("process 1 of TestGRPCKill")
	}
	ctx := context.Background()
	rt, err := otlpretry.New(otlpretry.WithDir(os.Getenv(childEnvDir)))
	if err != nil {
		t.Fatal(err)
	}
	exp, err := otlptracegrpc.New(ctx,
		otlptracegrpc.WithEndpoint(os.Getenv(childEnvEndpoint)),
		otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithHeaders(map[string]string{"authorization": os.Getenv(childEnvToken)}),
		otlptracegrpc.WithDialOption(otlpretrygrpc.DialOption(rt)))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(&reportingExporter{SpanExporter: exp}))
	tracer := tp.Tracer("e2e-grpc-process-1")
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

// liveGRPCSpans exports a few spans to addr over gRPC with the token
// through rt, from a TracerProvider of their own, kept until the test
// ends, and returns their keys once exported.
func liveGRPCSpans(t *testing.T, rt *otlpretry.Transport, addr string) []otlptest.SpanKey {
	t.Helper()
	ctx := context.Background()
	exp, err := otlptracegrpc.New(ctx,
		otlptracegrpc.WithEndpoint(addr),
		otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithHeaders(map[string]string{"authorization": grpcToken}),
		otlptracegrpc.WithDialOption(otlpretrygrpc.DialOption(rt)))
	if err != nil {
		t.Fatal(err)
	}
	cexp := &countingExporter{SpanExporter: exp}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(cexp))
	// Stored exports go over the live call's connection, which is the
	// exporter's: it stays open until the test ends, as an application's
	// exporter does while the application runs.
	t.Cleanup(func() { shutdownWithin(tp.Shutdown) })
	produced := otlptest.SpanLoad{Rate: 1000, Duration: 10 * time.Millisecond, Tick: time.Millisecond}.Run(ctx, tp)
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatalf("live export: %v", err)
	}
	if acked, failed := cexp.counts(); failed != 0 || acked != produced.Count() {
		t.Fatalf("live export: %d of %d spans acknowledged, %d failed", acked, produced.Count(), failed)
	}
	return produced.IDs()
}
