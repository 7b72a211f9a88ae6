package otlpretry

import (
	"context"
	"maps"
	"path/filepath"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

func TestStatsPublishedAsMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	h := newHarness(t, WithMeterProvider(mp), WithImmediateRetryDelay(-1))
	h.coll.Stop()
	for range 2 {
		resp, _, err := h.export(1, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
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
					got[m.Name] += p.Value
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if v, ok := p.Attributes.Value("outcome"); ok {
						got[m.Name+"/"+v.AsString()] = p.Value
					}
				}
			}
		}
	}
	if got["otlpretry.spool.records"] != 2 || got["otlpretry.exports/spooled"] != 2 || got["otlpretry.circuit.open"] != 1 {
		t.Fatalf("metrics %v", got)
	}
	if got["otlpretry.spool.bytes"] <= 0 {
		t.Fatalf("spool bytes %d", got["otlpretry.spool.bytes"])
	}
}

// TestQuarantineEvictionCounted: an export the server refuses from the
// spool is quarantined; a quarantine bound of zero keeps none, so it is
// deleted at once. That loss is counted in Stats and in the metrics, under
// reason quarantine_evicted, and every reason of Drops is published.
func TestQuarantineEvictionCounted(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	h := newHarness(t, WithMeterProvider(mp), WithImmediateRetryDelay(-1),
		withSpoolOptions(spool.WithQuarantineMaxBytes(0)))
	h.coll.Script(otlptest.Answer{Status: 503}, otlptest.Answer{Status: 400, Body: []byte("schema error")})
	resp, _, err := h.export(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h.clock.Advance(h.nextEvent("wait").wait) // the direct path's 503 sets the sender's backoff
	h.nextEvent("idle")

	st := h.rt.Stats()
	if st.Quarantined != 1 || st.Dropped.QuarantineEvicted != 1 || st.Dropped.Total() != 1 {
		t.Fatalf("stats %+v, want 1 quarantined and 1 quarantine eviction", st)
	}
	if whys, _ := filepath.Glob(filepath.Join(h.dir, "quarantine", "*")); len(whys) != 0 {
		t.Fatalf("quarantine holds %v, want nothing at a bound of 0", whys)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	reasons := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if d, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "otlpretry.exports.dropped" {
				for _, p := range d.DataPoints {
					v, _ := p.Attributes.Value("reason")
					reasons[v.AsString()] = p.Value
				}
			}
		}
	}
	want := map[string]int64{"full": 0, "evicted": 0, "disk": 0, "expired": 0, "corrupt": 0,
		"too_large": 0, "closed": 0, "quarantine_evicted": 1}
	if !maps.Equal(reasons, want) {
		t.Fatalf("dropped by reason %v, want %v", reasons, want)
	}
}
