package otlpretry

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
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
