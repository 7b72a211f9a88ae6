package otlpretry

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// otelCounts reads every int64 instrument once, keyed by name and, for the
// counters by outcome or reason, name/value.
func otelCounts(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					got[m.Name] += p.Value // summed over destinations
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					key := m.Name
					for _, a := range []string{"outcome", "reason"} {
						if v, ok := p.Attributes.Value(attribute.Key(a)); ok {
							key += "/" + v.AsString()
						}
					}
					got[key] = p.Value
				}
			}
		}
	}
	return got
}

// statsAsOTel is what the OTel metrics must say for st.
func statsAsOTel(st Stats) map[string]int64 {
	open := int64(0)
	if st.CircuitOpen {
		open = 1
	}
	m := map[string]int64{
		"otlpretry.spool.records":       int64(st.Records),
		"otlpretry.spool.bytes":         st.Bytes,
		"otlpretry.circuit.open":        open,
		"otlpretry.exports/direct":      int64(st.Direct),
		"otlpretry.exports/spooled":     int64(st.Spooled),
		"otlpretry.exports/delivered":   int64(st.Delivered),
		"otlpretry.exports/retried":     int64(st.Retried),
		"otlpretry.exports/rejected":    int64(st.Rejected),
		"otlpretry.exports/quarantined": int64(st.Quarantined),
		"otlpretry.items.rejected":      int64(st.PartialRejected),
	}
	if len(st.Destinations) > 0 { // one point per destination, summed by otelCounts
		var open int64
		for _, d := range st.Destinations {
			if d.CircuitOpen {
				open++
			}
		}
		m["otlpretry.destination.circuit.open"] = open
	}
	for _, r := range DropReasons(st.Dropped) {
		m["otlpretry.exports.dropped/"+r.Name] = int64(r.N)
	}
	for _, r := range RefusalReasons(st.Refused) {
		m["otlpretry.exports.refused/"+r.Name] = int64(r.N)
	}
	return m
}

// nthGate holds the request numbered hold (from 1) until release is
// closed, so that a test decides when a slow endpoint answers it.
type nthGate struct {
	next             http.RoundTripper
	hold             int64
	n                atomic.Int64
	arrived, release chan struct{}
}

func (g *nthGate) RoundTrip(req *http.Request) (*http.Response, error) {
	if g.n.Add(1) == g.hold {
		close(g.arrived)
		<-g.release
	}
	return g.next.RoundTrip(req)
}

// TestCountsAgree drives one scripted run through a Transport and checks
// every counter of Stats against what the run did, and the OTel metrics
// against Stats: direct deliveries, a direct refusal returned to the
// exporter, a held export refused after it was answered as stored
// (quarantined, not rejected), an outage whose exports are stored and
// delivered later, a stored export refused by the background sender, each
// quarantined export evicted by a quarantine bound of zero, and an export
// the full spool cannot take (dropped, logged at ERROR).
func TestCountsAgree(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	gate := &nthGate{next: http.DefaultTransport, hold: 4, arrived: make(chan struct{}), release: make(chan struct{})}
	small, _ := otlptest.TraceBody(2)
	// Room for two stored exports, not three.
	capBytes := 2*(&spool.Record{URL: "http://127.0.0.1:65535/v1/traces", ContentType: "application/x-protobuf", Body: small}).Size() + 100
	// One send at a time and no probes, so that the sender's attempts
	// are as scripted: one failure during an outage, then its wait.
	h := newHarness(t, WithMeterProvider(mp), WithTransport(gate), WithImmediateRetryDelay(-1), WithMaxBytes(capBytes),
		WithConcurrency(1), WithProbe(-1, 0), WithBusyProbe(-1), withSpoolOptions(spool.WithQuarantineMaxBytes(0)))
	export := func(want string) {
		t.Helper()
		resp, _, err := h.export(2, nil)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		got := fmt.Sprint(resp.StatusCode)
		if resp.Header.Get("Otlpretry-Spooled") == "1" {
			got += " stored"
		}
		if got != want {
			t.Fatalf("export answered %s, want %s", got, want)
		}
	}
	check := func(when string, want Stats) {
		t.Helper()
		st := h.rt.Stats()
		st.OldestAge, st.Bytes = 0, 0
		st.Destinations = nil // per destination: see lanes_test.go
		if !reflect.DeepEqual(st, want) {
			t.Errorf("%s: Stats\n%+v, want\n%+v", when, st, want)
		}
		got, wantOTel := otelCounts(t, reader), statsAsOTel(h.rt.Stats())
		delete(got, "otlpretry.spool.oldest_age")
		if !maps.Equal(got, wantOTel) {
			t.Errorf("%s: OTel metrics\n%v, Stats say\n%v", when, got, wantOTel)
		}
	}

	// Two delivered at once, one refused and returned as it came.
	export("200")
	export("200")
	h.coll.Script(otlptest.Answer{Status: 400})
	export("400")
	check("direct", Stats{Direct: 2, Rejected: 1})

	// The fourth request is slow: its exporter is answered at the end of
	// the hold, as stored; then the endpoint refuses it.
	done := make(chan struct{})
	go func() { defer close(done); export("200 stored") }()
	<-gate.arrived
	h.advanceWhenBlocked(1, DefaultMaxHold)
	<-done
	h.coll.Script(otlptest.Answer{Status: 400})
	close(gate.release)
	if err := h.rt.waitDetached(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// The refusal is an answer: the destination's circuit is closed again.
	check("held, then refused", Stats{Direct: 2, Rejected: 1, Quarantined: 1,
		Dropped: Drops{QuarantineEvicted: 1}})

	// Outage: the circuit is open, two exports are stored, the third
	// does not fit.
	h.coll.Stop()
	export("200 stored")
	export("200 stored")
	resp, _, err := h.export(2, nil)
	if err == nil || !strings.Contains(err.Error(), "dropping an export") {
		t.Fatalf("an export the full spool cannot take: %v, %v; want an error", resp, err)
	}
	if !h.logs.has(slog.LevelError, "dropping an export") {
		t.Errorf("no ERROR for the dropped export: %v", h.logs.lines())
	}
	e := h.nextEvent("wait") // the sender failed once, and waits
	check("outage", Stats{Records: 2, Direct: 2, Rejected: 1, Quarantined: 1, Spooled: 2, Retried: 1, CircuitOpen: true,
		Dropped: Drops{QuarantineEvicted: 1, Full: 1}})

	// Recovery: the sender delivers both.
	if err := h.coll.Start(); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(e.wait)
	h.nextEvent("idle")
	check("recovered", Stats{Direct: 2, Rejected: 1, Quarantined: 1, Spooled: 2, Delivered: 2, Retried: 1,
		Dropped: Drops{QuarantineEvicted: 1, Full: 1}})

	// A stored export refused by the background sender.
	h.coll.Stop()
	export("200 stored") // its failed attempt sets the sender's wait
	e = h.nextEvent("wait")
	h.coll.Script(otlptest.Answer{Status: 400})
	if err := h.coll.Start(); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(e.wait)
	h.nextEvent("idle")
	check("refused from the spool", Stats{Direct: 2, Rejected: 1, Quarantined: 2, Spooled: 3, Delivered: 2, Retried: 2,
		Dropped: Drops{QuarantineEvicted: 2, Full: 1}})
	if got := h.coll.Spans(); got != 2*2+2*2 {
		t.Errorf("the collector has %d spans, want 8 (2 direct exports, 2 from the spool, of 2 spans)", got)
	}
}

// TestCountsRefusedWhenCallerRetries: with WithCallerRetry an export the
// full spool cannot take is refused, not dropped: counted in Refused, in
// the metrics under otlpretry.exports.refused, and logged at WARN without
// "dropping".
func TestCountsRefusedWhenCallerRetries(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	small, _ := otlptest.TraceBody(2)
	capBytes := (&spool.Record{URL: "http://127.0.0.1:65535/v1/traces", ContentType: "application/x-protobuf", Body: small}).Size() + 100
	h := newHarness(t, WithMeterProvider(mp), WithImmediateRetryDelay(-1), WithMaxBytes(capBytes), WithCallerRetry())
	h.coll.Stop()
	resp, _, err := h.export(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if _, _, err := h.export(2, nil); err == nil || !strings.Contains(err.Error(), "for the caller to retry") {
		t.Fatalf("export into a full spool: %v, want an error for the caller to retry", err)
	}
	st := h.rt.Stats()
	if st.Spooled != 1 || st.Refused != (Drops{Full: 1}) || st.Dropped != (Drops{}) {
		t.Errorf("Stats %+v; want 1 spooled, 1 refused as full, nothing dropped", st)
	}
	got := otelCounts(t, reader)
	for k, v := range map[string]int64{"otlpretry.exports.refused/full": 1, "otlpretry.exports.dropped/full": 0, "otlpretry.exports/spooled": 1} {
		if got[k] != v {
			t.Errorf("metric %s = %d, want %d", k, got[k], v)
		}
	}
	if !h.logs.has(slog.LevelWarn, "refused, for the caller to retry") || h.logs.has(slog.LevelError, "") || h.logs.has(slog.LevelWarn, "dropping") {
		t.Errorf("logs %v; want a WARN that the export is refused for the caller to retry, no ERROR, no \"dropping\"", h.logs.lines())
	}
}
