package e2e

import (
	"context"
	"fmt"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/client"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configgrpc"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// spanKey identifies a span: trace ID and span ID.
type spanKey [24]byte

func keyOf(k otlptest.SpanKey) spanKey {
	var s spanKey
	copy(s[:16], k.TraceID[:])
	copy(s[16:], k.SpanID[:])
	return s
}

// sink is the real OpenTelemetry Collector OTLP receiver (HTTP only, on
// 127.0.0.1) with consumers that count what it accepted: spans by trace
// and span ID, metric data points and log records, each with duplicates.
type sink struct {
	url string

	mu          sync.Mutex
	spans       map[spanKey]int
	spanTotal   int
	points      map[string]int // metric name, start, time, attributes
	pointValues map[string]int64
	pointTotal  int
	records     map[string]int // body, timestamp
	recordTotal int
	// seq, when set (useSeq), counts the spans of seqIDs by sequence
	// number instead of in spans: a fixed footprint for the soak.
	seq      []uint8
	seqTotal int
	// auth counts the span exports by the Authorization header they came
	// with.
	auth map[string]int
}

// startSink starts the Collector's OTLP receiver on a free port of
// 127.0.0.1 and shuts it down at the end of the test.
func startSink(t *testing.T) *sink {
	t.Helper()
	s := &sink{spans: map[spanKey]int{}, points: map[string]int{}, pointValues: map[string]int64{}, records: map[string]int{}, auth: map[string]int{}}
	traces, err := consumer.NewTraces(s.consumeTraces)
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := consumer.NewMetrics(s.consumeMetrics)
	if err != nil {
		t.Fatal(err)
	}
	logs, err := consumer.NewLogs(s.consumeLogs)
	if err != nil {
		t.Fatal(err)
	}

	// The receiver binds its own port; a free one is picked first, and
	// another tried if something took it in between.
	var lastErr error
	for range 5 {
		addr, err := freeLoopbackAddr()
		if err != nil {
			t.Fatal(err)
		}
		stop, err := startReceiver(addr, traces, metrics, logs)
		if err != nil {
			lastErr = err
			continue
		}
		t.Cleanup(stop)
		s.url = "http://" + addr
		return s
	}
	t.Fatalf("starting the OTLP receiver: %v", lastErr)
	return nil
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), nil
}

func startReceiver(addr string, traces consumer.Traces, metrics consumer.Metrics, logs consumer.Logs) (stop func(), err error) {
	ctx := context.Background()
	f := otlpreceiver.NewFactory()
	cfg := f.CreateDefaultConfig().(*otlpreceiver.Config)
	cfg.Protocols.GRPC = configoptional.None[configgrpc.ServerConfig]()
	h := cfg.Protocols.HTTP.GetOrInsertDefault()
	h.ServerConfig.NetAddr.Endpoint = addr
	h.ServerConfig.IncludeMetadata = true // for the Authorization check
	set := receivertest.NewNopSettings(f.Type())

	// The three share one receiver (the factory keys it by config).
	tr, err := f.CreateTraces(ctx, set, cfg, traces)
	if err != nil {
		return nil, err
	}
	mr, err := f.CreateMetrics(ctx, set, cfg, metrics)
	if err != nil {
		return nil, err
	}
	lr, err := f.CreateLogs(ctx, set, cfg, logs)
	if err != nil {
		return nil, err
	}
	comps := []component.Component{tr, mr, lr}
	host := componenttest.NewNopHost()
	shutdown := func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		for _, c := range comps {
			_ = c.Shutdown(sctx)
		}
	}
	for _, c := range comps {
		if err := c.Start(ctx, host); err != nil {
			shutdown()
			return nil, err
		}
	}
	return shutdown, nil
}

func (s *sink) consumeTraces(ctx context.Context, td ptrace.Traces) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.auth[strings.Join(client.FromContext(ctx).Metadata.Get("Authorization"), ",")]++
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		sss := rss.At(i).ScopeSpans()
		for j := range sss.Len() {
			spans := sss.At(j).Spans()
			for k := range spans.Len() {
				sp := spans.At(k)
				var key spanKey
				tid, sid := sp.TraceID(), sp.SpanID()
				if n, ok := seqOf(tid); ok && s.seq != nil {
					if n < uint64(len(s.seq)) && s.seq[n] < 255 {
						s.seq[n]++
					}
					s.seqTotal++
					continue
				}
				copy(key[:16], tid[:])
				copy(key[16:], sid[:])
				s.spans[key]++
				s.spanTotal++
			}
		}
	}
	return nil
}

func (s *sink) consumeMetrics(_ context.Context, md pmetric.Metrics) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		sms := rms.At(i).ScopeMetrics()
		for j := range sms.Len() {
			ms := sms.At(j).Metrics()
			for k := range ms.Len() {
				m := ms.At(k)
				var dps pmetric.NumberDataPointSlice
				switch m.Type() {
				case pmetric.MetricTypeSum:
					dps = m.Sum().DataPoints()
				case pmetric.MetricTypeGauge:
					dps = m.Gauge().DataPoints()
				default:
					s.pointTotal++ // counted, not told apart
					continue
				}
				for l := range dps.Len() {
					dp := dps.At(l)
					key := fmt.Sprintf("%s/%d/%d/%v", m.Name(), dp.StartTimestamp(), dp.Timestamp(), dp.Attributes().AsRaw())
					s.points[key]++
					s.pointValues[key] = dp.IntValue()
					s.pointTotal++
				}
			}
		}
	}
	return nil
}

func (s *sink) consumeLogs(_ context.Context, ld plog.Logs) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rls := ld.ResourceLogs()
	for i := range rls.Len() {
		sls := rls.At(i).ScopeLogs()
		for j := range sls.Len() {
			lrs := sls.At(j).LogRecords()
			for k := range lrs.Len() {
				lr := lrs.At(k)
				s.records[fmt.Sprintf("%d/%s", lr.Timestamp(), lr.Body().AsString())]++
				s.recordTotal++
			}
		}
	}
	return nil
}

// spanCounts returns the distinct spans received and the extra copies.
func (s *sink) spanCounts() (distinct, dups int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.spans), s.spanTotal - len(s.spans)
}

// missing returns how many of produced the receiver never accepted.
func (s *sink) missing(produced []otlptest.SpanKey) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range produced {
		if s.spans[keyOf(k)] == 0 {
			n++
		}
	}
	return n
}

// pointCounts and recordCounts return distinct items and extra copies.
func (s *sink) pointCounts() (distinct, dups int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.points), s.pointTotal - len(s.points)
}

// pointSum adds up the integer values of the distinct data points: with
// delta temporality, every increment counted once.
func (s *sink) pointSum() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, v := range s.pointValues {
		n += v
	}
	return n
}

func (s *sink) recordCounts() (distinct, dups int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.records), s.recordTotal - len(s.records)
}

// authCounts returns the span exports received by Authorization header.
func (s *sink) authCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.auth)
}
