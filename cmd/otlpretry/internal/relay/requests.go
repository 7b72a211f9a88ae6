package relay

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/otlpretry/otlpretry/spool"
)

// requestCounter counts the export requests one receiver answered, by
// signal and the code answered: in a Prometheus counter for /metrics and
// by code for /status.
type requestCounter struct {
	vec *prometheus.CounterVec

	mu     sync.Mutex // guards byCode
	byCode map[string]uint64
}

func newRequestCounter(name, help string) *requestCounter {
	return &requestCounter{
		vec:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"signal", "code"}),
		byCode: map[string]uint64{},
	}
}

func (c *requestCounter) inc(signal spool.Signal, code string) {
	c.vec.WithLabelValues(signal.String(), code).Inc()
	c.mu.Lock()
	c.byCode[code]++
	c.mu.Unlock()
}

// snapshot returns the counts by code.
func (c *requestCounter) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.byCode))
	for k, v := range c.byCode {
		out[k] = v
	}
	return out
}
