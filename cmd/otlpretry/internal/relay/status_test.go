package relay

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/otlpretry/otlpretry"
)

// everyDrop has a different count for every reason, so that a reason left
// out or shown under another's name is seen.
var everyDrop = otlpretry.Drops{Full: 1, Evicted: 2, Disk: 3, Expired: 4, Corrupt: 5, TooLarge: 6, Closed: 7, QuarantineEvicted: 8}

// TestStatusShowsEveryDropReason: /status carries each reason of Drops
// under its JSON name, and their total.
func TestStatusShowsEveryDropReason(t *testing.T) {
	data, err := json.Marshal(NewStatus(otlpretry.Stats{Dropped: everyDrop}))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Dropped map[string]uint64 `json:"dropped"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"full": 1, "evicted": 2, "disk": 3, "expired": 4, "corrupt": 5,
		"too_large": 6, "closed": 7, "quarantine_evicted": 8, "total": 36}
	if !maps.Equal(doc.Dropped, want) {
		t.Fatalf("/status dropped %v, want %v", doc.Dropped, want)
	}
}

// TestMetricsShowEveryDropReason: /metrics carries each reason of Drops as
// a label of otlpretry_exports_dropped_total.
func TestMetricsShowEveryDropReason(t *testing.T) {
	c := newStatsCollector(func() otlpretry.Stats { return otlpretry.Stats{Dropped: everyDrop} })
	want := `
# HELP otlpretry_exports_dropped_total Exports lost, by reason.
# TYPE otlpretry_exports_dropped_total counter
otlpretry_exports_dropped_total{reason="closed"} 7
otlpretry_exports_dropped_total{reason="corrupt"} 5
otlpretry_exports_dropped_total{reason="disk"} 3
otlpretry_exports_dropped_total{reason="evicted"} 2
otlpretry_exports_dropped_total{reason="expired"} 4
otlpretry_exports_dropped_total{reason="full"} 1
otlpretry_exports_dropped_total{reason="quarantine_evicted"} 8
otlpretry_exports_dropped_total{reason="too_large"} 6
`
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "otlpretry_exports_dropped_total"); err != nil {
		t.Fatal(err)
	}
}
