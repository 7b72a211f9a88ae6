package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/otlpretrygrpc"
)

// Timing of a gRPC fault scenario: steady load, a 5 s outage, recovery
// under load; grpcRate spans per second.
const (
	grpcFault = 5 * time.Second
	grpcRate  = 2000
)

// grpcFaultKind is one way an OTLP/gRPC destination fails, set and ended
// on a pipe's proxy (connection faults) or its front (gRPC statuses).
type grpcFaultKind struct {
	name string
	down func(p *grpcPipe) error
	// front: the fault is answered by the front, which counts it.
	front bool
}

func proxyFault(m otlptest.Mode) func(p *grpcPipe) error {
	return func(p *grpcPipe) error { return p.proxy.SetMode(m) }
}

func frontFault(a otlptest.GRPCAnswer) func(p *grpcPipe) error {
	return func(p *grpcPipe) error { p.front.SetAnswer(a); return nil }
}

var grpcFaults = []grpcFaultKind{
	{"refuse", proxyFault(otlptest.Refuse), false},
	{"unavailable", frontFault(otlptest.GRPCAnswer{Code: codes.Unavailable}), true},
	{"exhausted-retryinfo-1s", frontFault(otlptest.GRPCAnswer{Code: codes.ResourceExhausted, RetryInfo: true, RetryDelay: time.Second}), true},
	{"blackhole", proxyFault(otlptest.Blackhole), false},
}

// grpcUp ends any fault of either kind.
func grpcUp(p *grpcPipe) error {
	p.front.SetAnswer(otlptest.GRPCForward)
	return p.proxy.SetMode(otlptest.Pass)
}

// grpcRows orders the gRPC rows of the table: each fault's traces, the
// plain exporter beside them, its metrics and logs; then TLS and the
// restarts.
func grpcRows() []string {
	var order []string
	for _, k := range grpcFaults {
		order = append(order, "grpc/"+k.name, "plain-grpc/"+k.name, "grpc/"+k.name+"/metrics", "grpc/"+k.name+"/logs")
	}
	return append(order, "grpc/tls-refuse", "grpc/sigkill-live-call", "grpc/sigkill-configured")
}

// TestGRPCFaults: the OTel Go SDK exporting traces (otlptracegrpc with its
// defaults, insecure to 127.0.0.1), metrics (otlpmetricgrpc, delta
// temporality, every 100 ms) and logs (otlploggrpc), all three with the
// Transport's DialOption, → fault proxy → gRPC front → the Collector's
// OTLP receiver over gRPC, each fault kind for 5 s in the middle of a 9 s
// run at 2,000 spans/s, one increment and one log record every 5 ms:
// every span, increment and log record acknowledged to the SDK arrives,
// none lost. The plain otlptracegrpc exporter runs beside it with the
// same load and schedule on a pipe of its own; its counts are the
// baseline row plain-grpc/<kind>.
func TestGRPCFaults(t *testing.T) {
	for _, k := range grpcFaults {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			r := scenario(t, "grpc/"+k.name)
			mrow := scenario(t, "grpc/"+k.name+"/metrics")
			lrow := scenario(t, "grpc/"+k.name+"/logs")
			p := newGRPCPipe(t, "grpc/"+k.name, newTransport(t, "grpc/"+k.name, ""), nil, true)
			p.beside = newGRPCPipe(t, "plain-grpc/"+k.name, nil, nil, false)
			p.beside.row = baseline(t, "plain-grpc/"+k.name)
			p.run(t, r, mrow, lrow, k.down)
			st := p.rt.Stats()
			if st.Spooled == 0 {
				t.Errorf("nothing was spooled: the fault did not hit the exports")
			}
			if _, answered, _ := p.front.Counts(); k.front && answered == 0 {
				t.Errorf("the front answered no call with the fault")
			}
		})
	}
}

// TestGRPCTLS: traces over TLS (a certificate made for 127.0.0.1 by the
// test, served by the gRPC front, trusted by the exporter's credentials)
// while the destination refuses connections for 5 s: the exports stored
// during the outage are delivered over the exporter's TLS connection, and
// the destination is known as grpcs.
func TestGRPCTLS(t *testing.T) {
	t.Parallel()
	r := scenario(t, "grpc/tls-refuse")
	serverCreds, clientCreds := testTLSCredentials(t)
	p := newGRPCPipe(t, "grpc/tls", newTransport(t, "grpc/tls", ""), &grpcTLS{serverCreds, clientCreds}, false)
	p.run(t, r, nil, nil, proxyFault(otlptest.Refuse))
	st := p.rt.Stats()
	if st.Spooled == 0 || st.Delivered == 0 {
		t.Errorf("spooled %d, delivered from the spool %d: want both above 0", st.Spooled, st.Delivered)
	}
	want := "grpcs://" + p.proxy.Addr() + "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
	found := false
	for _, d := range st.Destinations {
		found = found || d.URL == want
	}
	if !found {
		t.Errorf("Stats.Destinations %+v, want %s listed", st.Destinations, want)
	}
}

// grpcTLS is the credentials of a TLS pipe: the front's and the
// exporters'.
type grpcTLS struct {
	server, client credentials.TransportCredentials
}

// grpcPipe is SDK → otlptracegrpc (and, with signals, otlpmetricgrpc and
// otlploggrpc) with the Transport's DialOption → fault proxy → gRPC front
// → Collector receiver (gRPC); without the Transport (rt nil) it is the
// plain exporter's pipe.
type grpcPipe struct {
	name  string
	sink  *sink
	front *otlptest.GRPCFront
	proxy *otlptest.Proxy
	rt    *otlpretry.Transport
	exp   *countingExporter
	tp    *sdktrace.TracerProvider
	// With signals: metrics and logs through the same Transport.
	mp   *sdkmetric.MeterProvider
	mexp *countingMetricExporter
	lp   *sdklog.LoggerProvider
	lexp *countingLogExporter
	// beside, if set, is the plain exporter's pipe; row is its baseline
	// row.
	beside *grpcPipe
	row    *row
}

func newGRPCPipe(t *testing.T, name string, rt *otlpretry.Transport, tlsCreds *grpcTLS, signals bool) *grpcPipe {
	t.Helper()
	ctx := context.Background()
	p := &grpcPipe{name: name, rt: rt}
	var upstream string
	p.sink, upstream = startGRPCSink(t)
	var serverCreds credentials.TransportCredentials
	if tlsCreds != nil {
		serverCreds = tlsCreds.server
	}
	p.front = otlptest.StartGRPCFront(t, upstream, serverCreds)
	p.proxy = otlptest.StartProxy(t, p.front.Addr())
	addr := p.proxy.Addr()

	topts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(addr)}
	if tlsCreds != nil {
		topts = append(topts, otlptracegrpc.WithTLSCredentials(tlsCreds.client))
	} else {
		topts = append(topts, otlptracegrpc.WithInsecure())
	}
	if rt != nil {
		topts = append(topts, otlptracegrpc.WithDialOption(otlpretrygrpc.DialOption(rt)))
	}
	exp, err := otlptracegrpc.New(ctx, topts...)
	if err != nil {
		t.Fatal(err)
	}
	p.exp = &countingExporter{SpanExporter: exp}
	p.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(p.exp))
	t.Cleanup(func() { shutdownWithin(p.tp.Shutdown) })
	if !signals {
		return p
	}

	mexp, err := otlpmetricgrpc.New(ctx,
		otlpmetricgrpc.WithEndpoint(addr),
		otlpmetricgrpc.WithInsecure(),
		otlpmetricgrpc.WithDialOption(otlpretrygrpc.DialOption(rt)),
		otlpmetricgrpc.WithTemporalitySelector(sdkmetric.DeltaTemporalitySelector))
	if err != nil {
		t.Fatal(err)
	}
	p.mexp = &countingMetricExporter{Exporter: mexp}
	p.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(
		sdkmetric.NewPeriodicReader(p.mexp, sdkmetric.WithInterval(100*time.Millisecond))))
	t.Cleanup(func() { shutdownWithin(p.mp.Shutdown) })
	lexp, err := otlploggrpc.New(ctx,
		otlploggrpc.WithEndpoint(addr),
		otlploggrpc.WithInsecure(),
		otlploggrpc.WithDialOption(otlpretrygrpc.DialOption(rt)))
	if err != nil {
		t.Fatal(err)
	}
	p.lexp = &countingLogExporter{Exporter: lexp}
	p.lp = sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewBatchProcessor(p.lexp)))
	t.Cleanup(func() { shutdownWithin(p.lp.Shutdown) })
	return p
}

// shutdownWithin shuts a provider down within 10 s.
func shutdownWithin(shutdown func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = shutdown(ctx)
}

// run produces spans at grpcRate (and, with signals, increments and log
// records every 5 ms) for steady + grpcFault + recover, with down applied
// to the pipe (and the one beside it) for grpcFault after steady; then
// flushes everything and checks the counts as checkCounts does, for the
// metrics and logs too. mrow and lrow are the metrics' and logs' rows
// (nil without signals).
func (p *grpcPipe) run(t *testing.T, r, mrow, lrow *row, down func(*grpcPipe) error) {
	t.Helper()
	ctx := context.Background()
	d := steady + grpcFault + recover
	pipes := []*grpcPipe{p}
	if p.beside != nil {
		pipes = append(pipes, p.beside)
	}
	stopSampling := sampleBacklog(func() int { return p.rt.Stats().Records }, r)

	produced := make([]*otlptest.Produced, len(pipes))
	var load sync.WaitGroup
	for i, q := range pipes {
		load.Go(func() { produced[i] = otlptest.SpanLoad{Rate: grpcRate, Duration: d}.Run(ctx, q.tp) })
	}
	var increments, records int
	if p.mp != nil {
		load.Go(func() { increments, records = p.metricsAndLogs(ctx, d) })
	}
	time.Sleep(steady)
	for _, q := range pipes {
		if err := down(q); err != nil {
			t.Errorf("%s: fault: %v", q.name, err)
		}
	}
	time.Sleep(grpcFault)
	for _, q := range pipes {
		if err := grpcUp(q); err != nil {
			t.Errorf("%s: end of the fault: %v", q.name, err)
		}
	}
	load.Wait()

	fctx, cancel := context.WithTimeout(ctx, flushLimit)
	defer cancel()
	var flush sync.WaitGroup
	if q := p.beside; q != nil {
		// Shut down as well, so that the baseline counts every span the
		// plain exporter still holds and can deliver.
		flush.Go(func() {
			if err := q.tp.ForceFlush(fctx); err != nil {
				t.Logf("%s: TracerProvider.ForceFlush: %v", q.name, err)
			}
			if err := q.tp.Shutdown(fctx); err != nil {
				t.Logf("%s: TracerProvider.Shutdown: %v", q.name, err)
			}
		})
	}
	if err := p.tp.ForceFlush(fctx); err != nil {
		t.Errorf("TracerProvider.ForceFlush: %v", err)
	}
	if p.mp != nil {
		if err := p.mp.ForceFlush(fctx); err != nil {
			t.Errorf("MeterProvider.ForceFlush: %v", err)
		}
		if err := p.lp.ForceFlush(fctx); err != nil {
			t.Errorf("LoggerProvider.ForceFlush: %v", err)
		}
	}
	if err := p.rt.ForceFlush(fctx); err != nil {
		t.Errorf("Transport.ForceFlush: %v", err)
	}
	stopSampling()
	flush.Wait()

	if q := p.beside; q != nil {
		ids := produced[1].IDs()
		received, dups := q.sink.spanCounts()
		acked, failed := q.exp.counts()
		lost := q.sink.missing(ids)
		q.row.set(func(r *row) {
			r.counted = true
			r.produced, r.acked, r.received, r.lost, r.dups = len(ids), acked, received, lost, dups
		})
		t.Logf("%s: produced=%d acked=%d (failed %d) received=%d lost=%d dups=%d",
			q.name, len(ids), acked, failed, received, lost, dups)
	}

	ids := produced[0].IDs()
	received, dups := p.sink.spanCounts()
	acked, _ := p.exp.counts()
	st := p.rt.Stats()
	r.set(func(r *row) {
		r.counted = true
		r.produced, r.acked, r.received, r.dups = len(ids), acked, received, dups
		r.lost = p.sink.missing(ids)
	})
	forwarded, answered, _ := p.front.Counts()
	t.Logf("produced=%d acked=%d received=%d lost=%d dups=%d backlog=%d; transport direct=%d spooled=%d delivered=%d retried=%d dropped=%d records=%d; front forwarded=%d answered=%d",
		r.produced, r.acked, r.received, r.lost, r.dups, r.backlog,
		st.Direct, st.Spooled, st.Delivered, st.Retried, st.Dropped.Total(), st.Records, forwarded, answered)
	checkCounts(t, r, 0)
	if p.mp != nil {
		p.checkMetricsAndLogs(t, mrow, lrow, r.backlog, increments, records)
	}
	if st.Dropped.Total() != 0 {
		t.Errorf("the transport dropped %d exports: %+v", st.Dropped.Total(), st.Dropped)
	}
	if st.Records != 0 {
		t.Errorf("%d exports still in the spool after ForceFlush", st.Records)
	}
	if st.Quarantined != 0 {
		t.Errorf("%d exports quarantined, want none", st.Quarantined)
	}
}

// metricsAndLogs adds one to a counter and emits one log record with a
// unique body every 5 ms for d, and returns how many of each.
func (p *grpcPipe) metricsAndLogs(ctx context.Context, d time.Duration) (increments, records int) {
	counter, err := p.mp.Meter("e2e").Int64Counter("e2e.increments")
	if err != nil {
		panic(err) // a valid instrument name: not data
	}
	logger := p.lp.Logger("e2e")
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); {
		<-ticker.C
		counter.Add(ctx, 1)
		increments++
		var rec otellog.Record
		rec.SetTimestamp(time.Now())
		rec.SetBody(attribute.StringValue(fmt.Sprintf("e2e log #%d", records)))
		logger.Emit(ctx, rec)
		records++
	}
	return increments, records
}

// checkMetricsAndLogs fills the metrics' and logs' rows and checks that
// every increment and every log record arrived, acknowledged to the SDK.
func (p *grpcPipe) checkMetricsAndLogs(t *testing.T, mrow, lrow *row, backlog, increments, records int) {
	t.Helper()
	sum := int(p.sink.pointSum())
	_, pointDups := p.sink.pointCounts()
	distinctLogs, logDups := p.sink.recordCounts()
	mrow.set(func(r *row) {
		r.counted = true
		r.produced, r.received, r.dups, r.backlog = increments, sum, pointDups, backlog
		if p.mexp.failed.Load() == 0 {
			r.acked = increments
		}
		r.lost = max(increments-sum, 0)
	})
	lrow.set(func(r *row) {
		r.counted = true
		r.produced, r.acked, r.received, r.dups, r.backlog = records, int(p.lexp.acked.Load()), distinctLogs, logDups, backlog
		r.lost = max(records-distinctLogs, 0)
	})
	t.Logf("metrics: %d increments, distinct data points add up to %d, %d duplicate points; logs: %d emitted, %d distinct received, %d duplicates",
		increments, sum, pointDups, records, distinctLogs, logDups)
	if n := p.mexp.failed.Load(); n != 0 {
		t.Errorf("%d metric exports failed to the SDK", n)
	}
	if sum != increments {
		t.Errorf("the distinct data points add up to %d, want the %d increments (lost or counted twice)", sum, increments)
	}
	if n := p.lexp.failed.Load(); n != 0 || int(p.lexp.acked.Load()) != records {
		t.Errorf("%d of %d log records acknowledged to the SDK (%d failed)", p.lexp.acked.Load(), records, n)
	}
	if distinctLogs != records {
		t.Errorf("%d distinct log records received, want %d", distinctLogs, records)
	}
}

// startGRPCSink starts the Collector's OTLP receiver with gRPC only, on a
// free port of 127.0.0.1, counting what it accepts as the HTTP sink does;
// it returns the sink and the receiver's host:port.
func startGRPCSink(t *testing.T) (*sink, string) {
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
	var lastErr error
	for range 5 {
		addr, err := freeLoopbackAddr()
		if err != nil {
			t.Fatal(err)
		}
		stop, err := startGRPCReceiver(addr, traces, metrics, logs)
		if err != nil {
			lastErr = err
			continue
		}
		t.Cleanup(stop)
		return s, addr
	}
	t.Fatalf("starting the OTLP/gRPC receiver: %v", lastErr)
	return nil, ""
}

// startGRPCReceiver is startReceiver with the gRPC protocol in place of
// HTTP.
func startGRPCReceiver(addr string, traces consumer.Traces, metrics consumer.Metrics, logs consumer.Logs) (stop func(), err error) {
	ctx := context.Background()
	f := otlpreceiver.NewFactory()
	cfg := f.CreateDefaultConfig().(*otlpreceiver.Config)
	cfg.Protocols.HTTP = configoptional.None[otlpreceiver.HTTPConfig]()
	g := cfg.Protocols.GRPC.GetOrInsertDefault()
	g.NetAddr.Endpoint = addr
	g.IncludeMetadata = true
	set := receivertest.NewNopSettings(f.Type())
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

// testTLSCredentials returns the server's credentials with a
// self-signed certificate for 127.0.0.1 and a client's trusting it.
func testTLSCredentials(t *testing.T) (server, client credentials.TransportCredentials) {
	t.Helper()
	cert, pool := otlptest.Certificate(t)
	server = credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	client = credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	return server, client
}
