package otlpretry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

const meterName = "github.com/otlpretry/otlpretry"

// registerMetrics publishes Stats through the MeterProvider, if one was
// given: one callback reads one snapshot for every instrument.
func (t *Transport) registerMetrics() error {
	mp := t.cfg.meterProvider
	if mp == nil {
		return nil
	}
	m := mp.Meter(meterName)
	records, err1 := m.Int64ObservableGauge("otlpretry.spool.records", metric.WithDescription("Exports waiting in the spool."), metric.WithUnit("{export}"))
	bytes, err2 := m.Int64ObservableGauge("otlpretry.spool.bytes", metric.WithDescription("Bytes the spool holds on disk."), metric.WithUnit("By"))
	oldest, err3 := m.Float64ObservableGauge("otlpretry.spool.oldest_age", metric.WithDescription("Age of the oldest waiting export."), metric.WithUnit("s"))
	exports, err4 := m.Int64ObservableCounter("otlpretry.exports", metric.WithDescription("Exports by outcome."), metric.WithUnit("{export}"))
	dropped, err5 := m.Int64ObservableCounter("otlpretry.exports.dropped", metric.WithDescription("Exports lost, by reason."), metric.WithUnit("{export}"))
	circuit, err6 := m.Int64ObservableGauge("otlpretry.circuit.open", metric.WithDescription("1 while new exports to some destination go straight to the spool."))
	refused, err7 := m.Int64ObservableCounter("otlpretry.exports.refused", metric.WithDescription("Exports not stored, returned as an error for the caller to retry, by reason."), metric.WithUnit("{export}"))
	destCircuit, err8 := m.Int64ObservableGauge("otlpretry.destination.circuit.open", metric.WithDescription("1 while new exports to the destination go straight to the spool."))
	partial, err9 := m.Int64ObservableCounter("otlpretry.items.rejected", metric.WithDescription("Spans, data points and log records destinations rejected in the partial_success of delivered backlog requests; never retried."), metric.WithUnit("{item}"))
	for _, err := range []error{err1, err2, err3, err4, err5, err6, err7, err8, err9} {
		if err != nil {
			return err
		}
	}
	outcome := func(v string) metric.ObserveOption {
		return metric.WithAttributes(attribute.String("outcome", v))
	}
	reason := func(v string) metric.ObserveOption {
		return metric.WithAttributes(attribute.String("reason", v))
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := t.Stats()
		o.ObserveInt64(records, int64(st.Records))
		o.ObserveInt64(bytes, st.Bytes)
		o.ObserveFloat64(oldest, st.OldestAge.Seconds())
		open := int64(0)
		if st.CircuitOpen {
			open = 1
		}
		o.ObserveInt64(circuit, open)
		for _, d := range st.Destinations {
			v := int64(0)
			if d.CircuitOpen {
				v = 1
			}
			o.ObserveInt64(destCircuit, v, metric.WithAttributes(attribute.String("destination", d.URL)))
		}
		o.ObserveInt64(exports, int64(st.Direct), outcome("direct"))
		o.ObserveInt64(exports, int64(st.Spooled), outcome("spooled"))
		o.ObserveInt64(exports, int64(st.Delivered), outcome("delivered"))
		o.ObserveInt64(exports, int64(st.Retried), outcome("retried"))
		o.ObserveInt64(exports, int64(st.Rejected), outcome("rejected"))
		o.ObserveInt64(exports, int64(st.Quarantined), outcome("quarantined"))
		for _, r := range DropReasons(st.Dropped) {
			o.ObserveInt64(dropped, int64(r.N), reason(r.Name))
		}
		for _, r := range RefusalReasons(st.Refused) {
			o.ObserveInt64(refused, int64(r.N), reason(r.Name))
		}
		o.ObserveInt64(partial, int64(st.PartialRejected))
		return nil
	}, records, bytes, oldest, exports, dropped, circuit, refused, destCircuit, partial)
	t.metricsReg = reg
	return err
}

// Reason is one reason of Drops under the name the OTel metrics (the
// reason attribute) and the otlpretry relay's /status and /metrics give it.
type Reason struct {
	Name string
	N    uint64
}

// DropReasons lists every field of d under its name, so that no view
// leaves a reason out: full, evicted, disk, expired, corrupt, too_large,
// closed, quarantine_evicted.
func DropReasons(d Drops) []Reason {
	return []Reason{
		{"full", d.Full}, {"evicted", d.Evicted}, {"disk", d.Disk}, {"expired", d.Expired},
		{"corrupt", d.Corrupt}, {"too_large", d.TooLarge}, {"closed", d.Closed},
		{"quarantine_evicted", d.QuarantineEvicted},
	}
}

// RefusalReasons lists the reasons Stats.Refused counts, under their
// names: full, disk, too_large, closed.
func RefusalReasons(d Drops) []Reason {
	return []Reason{{"full", d.Full}, {"disk", d.Disk}, {"too_large", d.TooLarge}, {"closed", d.Closed}}
}
