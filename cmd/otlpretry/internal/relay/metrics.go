package relay

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/otlpretry/otlpretry"
)

// statsCollector publishes otlpretry.Stats in the Prometheus text format,
// under the names the library uses for its OTel metrics
// (otlpretry.spool.records becomes otlpretry_spool_records). Each scrape
// reads one snapshot.
type statsCollector struct {
	stats                        func() otlpretry.Stats
	records, bytes, oldest, open *prometheus.Desc
	exports, dropped, refused    *prometheus.Desc
	partial                      *prometheus.Desc
}

func newStatsCollector(stats func() otlpretry.Stats) *statsCollector {
	return &statsCollector{
		stats:   stats,
		records: prometheus.NewDesc("otlpretry_spool_records", "Exports waiting in the spool.", nil, nil),
		bytes:   prometheus.NewDesc("otlpretry_spool_bytes", "Bytes the spool holds on disk.", nil, nil),
		oldest:  prometheus.NewDesc("otlpretry_spool_oldest_age_seconds", "Age of the oldest waiting export.", nil, nil),
		open:    prometheus.NewDesc("otlpretry_circuit_open", "1 while new exports go straight to the spool.", nil, nil),
		exports: prometheus.NewDesc("otlpretry_exports_total", "Exports by outcome (retried counts failed attempts).", []string{"outcome"}, nil),
		dropped: prometheus.NewDesc("otlpretry_exports_dropped_total", "Exports lost, by reason.", []string{"reason"}, nil),
		refused: prometheus.NewDesc("otlpretry_exports_refused_total", "Exports neither delivered nor stored, answered 503 for the client to retry, by reason.", []string{"reason"}, nil),
		partial: prometheus.NewDesc("otlpretry_items_rejected_total", "Spans, data points and log records the upstream rejected in the partial_success of delivered backlog requests; never retried.", nil, nil),
	}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.records, c.bytes, c.oldest, c.open, c.exports, c.dropped, c.refused, c.partial} {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	gauge(c.records, float64(st.Records))
	gauge(c.bytes, float64(st.Bytes))
	gauge(c.oldest, st.OldestAge.Seconds())
	open := 0.0
	if st.CircuitOpen {
		open = 1
	}
	gauge(c.open, open)
	for _, o := range []struct {
		name string
		v    uint64
	}{
		{"direct", st.Direct}, {"spooled", st.Spooled}, {"delivered", st.Delivered},
		{"retried", st.Retried}, {"rejected", st.Rejected}, {"quarantined", st.Quarantined},
	} {
		ch <- prometheus.MustNewConstMetric(c.exports, prometheus.CounterValue, float64(o.v), o.name)
	}
	for _, r := range otlpretry.DropReasons(st.Dropped) {
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(r.N), r.Name)
	}
	for _, r := range otlpretry.RefusalReasons(st.Refused) {
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(r.N), r.Name)
	}
	ch <- prometheus.MustNewConstMetric(c.partial, prometheus.CounterValue, float64(st.PartialRejected))
}
