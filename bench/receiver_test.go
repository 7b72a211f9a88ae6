package main

import (
	"context"
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// grpcLane is the receiving end of a gRPC lane, without processes: the
// receiver behind the fault proxy.
func grpcLane(t *testing.T) *lane {
	t.Helper()
	g, err := newGRPCReceiver()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	p := otlptest.StartProxy(t, g.Addr())
	return &lane{sys: "A-grpc", recv: g, grecv: g, proxy: p}
}

// exportSpans sends spans first..first+n-1 of prefix in one export call
// through the plain gRPC exporter, its own retries off, so that the call's
// outcome is the receiving end's answer.
func exportSpans(t *testing.T, l *lane, prefix [8]byte, first, n int) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(l.proxy.URL()),
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Shutdown(context.Background())
	var spans tracetest.SpanStubs
	for i := first; i < first+n; i++ {
		var tid trace.TraceID
		copy(tid[:8], prefix[:])
		binary.BigEndian.PutUint64(tid[8:], uint64(i))
		var sid trace.SpanID
		binary.BigEndian.PutUint64(sid[:], uint64(i+1))
		spans = append(spans, tracetest.SpanStub{
			Name:        "bench",
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}),
		})
	}
	return exp.ExportSpans(ctx, spans.Snapshots())
}

// A gRPC lane's receiving end counts distinct spans, duplicates, accepted
// calls and their bytes; each outage scenario's fault reaches the
// exporter as the gRPC code a real outage gives (the 503 outage as
// Unavailable from the receiver, refused connections as Unavailable from
// the connection), counts nothing while it lasts, and ends with setFault
// off.
func TestGRPCLaneFaults(t *testing.T) {
	l := grpcLane(t)
	l.prefix = [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	if err := exportSpans(t, l, l.prefix, 0, 10); err != nil {
		t.Fatal(err)
	}
	if err := exportSpans(t, l, l.prefix, 5, 10); err != nil { // 5 again
		t.Fatal(err)
	}
	if got, dups, calls := l.recv.Spans(), l.recv.SpanDuplicates(), l.recv.Exports(); got != 15 || dups != 5 || calls != 2 {
		t.Fatalf("spans %d, duplicates %d, calls %d; want 15, 5, 2", got, dups, calls)
	}
	if b := l.recv.BytesReceived(); b < 15*16 {
		t.Errorf("bytes received %d, fewer than the span IDs alone", b)
	}
	if ts, ss := l.spanKey(14); !l.recv.HasSpan(ts, ss) {
		t.Error("span 14 not found by its key")
	}
	if ts, ss := l.spanKey(15); l.recv.HasSpan(ts, ss) {
		t.Error("span 15 found, never sent")
	}

	want := 15
	for _, sc := range []string{"503", "refused"} {
		t.Run(sc, func(t *testing.T) {
			if err := l.setFault(sc, true); err != nil {
				t.Fatal(err)
			}
			before, bytes := l.recv.Exports(), l.recv.BytesReceived()
			err := exportSpans(t, l, l.prefix, 100, 3)
			if status.Code(err) != codes.Unavailable {
				t.Errorf("export during the outage: %v; want code Unavailable", err)
			}
			if l.recv.Exports() != before || l.recv.BytesReceived() != bytes {
				t.Error("a refused call was counted")
			}
			if err := l.setFault(sc, false); err != nil {
				t.Fatal(err)
			}
			if err := exportSpans(t, l, l.prefix, 100, 3); err != nil {
				t.Fatalf("export after the outage: %v", err)
			}
			want += 3
			if got := l.recv.Spans(); got != want {
				t.Fatalf("%d spans after the outage, want %d", got, want)
			}
			l.prefix[0]++ // a fresh set of spans for the next case
		})
	}

	// Blackholed: the call is never answered; the exporter's deadline ends
	// it.
	if err := l.setFault("blackhole", true); err != nil {
		t.Fatal(err)
	}
	if err := exportSpans(t, l, l.prefix, 200, 1); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("export while blackholed: %v; want code DeadlineExceeded", err)
	}
}

// The gRPC systems run in the steady and outage scenarios only when named,
// never in the backlog or latency scenarios; the default systems are
// unchanged.
func TestGRPCSystemsSelection(t *testing.T) {
	c := defaultConfig()
	for _, sc := range []string{"steady", "refused", "503", "blackhole", "backlog"} {
		if got := c.systemsFor(sc); !slices.Equal(got, allSystems) {
			t.Errorf("%s by default runs %v, want %v", sc, got, allSystems)
		}
	}
	c.systems = []string{"B", "A-grpc", "D-grpc"}
	if got, want := c.systemsFor("503"), []string{"B", "A-grpc", "D-grpc"}; !slices.Equal(got, want) {
		t.Errorf("503 with -systems %v runs %v, want %v", c.systems, got, want)
	}
	if got, want := c.systemsFor("backlog"), []string{"B"}; !slices.Equal(got, want) {
		t.Errorf("backlog with -systems %v runs %v, want %v", c.systems, got, want)
	}
	if got := c.systemsFor("latency"); !slices.Equal(got, []string{"B"}) {
		t.Errorf("latency with -systems %v runs %v, want [B]", c.systems, got)
	}
}
