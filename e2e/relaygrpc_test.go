package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// Timing and load of a relay gRPC scenario: steady, a refused upstream for
// relayGRPCOutage, recover; relayGRPCRate spans per second.
const (
	relayGRPCOutage = 5 * time.Second
	relayGRPCRate   = 2000
)

// relayGRPCUpstream is the protocol the relay forwards what it receives
// over gRPC with.
type relayGRPCUpstream struct {
	name     string // in the row's name
	protocol string // the relay's --protocol
}

var relayGRPCUpstreams = []relayGRPCUpstream{
	{"grpc-upstream", "grpc"},
	{"http-upstream", "http/protobuf"},
}

// relayGRPCRows orders the relay gRPC rows of the table: per upstream
// protocol, the traces, metrics and logs.
func relayGRPCRows() []string {
	var order []string
	for _, u := range relayGRPCUpstreams {
		name := "relay-grpc/" + u.name + "/refuse"
		order = append(order, name, name+"/metrics", name+"/logs")
	}
	return order
}

// relayGRPCAddrRE finds the relay's OTLP/gRPC address in its "listening"
// line.
var relayGRPCAddrRE = regexp.MustCompile(`otlpretry relay: listening" addr=\S+ grpc_addr=(\S+)`)

// TestRelayGRPC: the OTel Go SDK exporting traces, metrics (delta, every
// 100 ms) and logs with otlptracegrpc, otlpmetricgrpc and otlploggrpc
// (defaults, insecure, the relay's client token as authorization
// metadata) → `otlpretry relay` (a separate process, its gRPC receiver
// requiring that token) → fault proxy → a credential check → the
// Collector's OTLP receiver; upstream over gRPC (the check: a gRPC front
// answering Unauthenticated to a call without the upstream token) and over
// OTLP/HTTP (the check: a front answering 401 to a request without it).
// The upstream refuses connections for 5 s in the middle of a 9 s run at
// 2,000 spans/s, one increment and one log record every 5 ms. Every span,
// increment and log record acknowledged to the SDK arrives, the relay
// stored exports while the upstream was down, and every request upstream
// carried the upstream token from OTEL_EXPORTER_OTLP_HEADERS, never the
// client's.
func TestRelayGRPC(t *testing.T) {
	for _, u := range relayGRPCUpstreams {
		t.Run(u.name, func(t *testing.T) {
			t.Parallel()
			runRelayGRPC(t, u)
		})
	}
}

func runRelayGRPC(t *testing.T, u relayGRPCUpstream) {
	name := "relay-grpc/" + u.name + "/refuse"
	r := scenario(t, name)
	mrow := scenario(t, name+"/metrics")
	lrow := scenario(t, name+"/logs")
	ctx := context.Background()
	upstreamAuth := "Bearer " + relayUpstreamSecret

	// The upstream: the Collector's receiver behind a check of the
	// upstream token behind the fault proxy. checkUpstream fails the test
	// if the check saw a request without the token, or none at all.
	var (
		s             *sink
		proxy         *otlptest.Proxy
		checkUpstream func()
	)
	if u.protocol == "grpc" {
		var addr string
		s, addr = startGRPCSink(t)
		front := otlptest.StartGRPCFront(t, addr, nil)
		front.RequireMetadata("authorization", upstreamAuth)
		proxy = otlptest.StartProxy(t, front.Addr())
		checkUpstream = func() {
			forwarded, _, bad := front.Counts()
			if bad != 0 {
				t.Errorf("the upstream's gRPC front refused %d calls without %q", bad, upstreamAuth)
			}
			if forwarded == 0 {
				t.Errorf("the upstream's gRPC front got no call")
			}
		}
	} else {
		s = startSink(t)
		front := startAuthFront(t, s.url, upstreamAuth)
		proxy = otlptest.StartProxy(t, front.url)
		checkUpstream = func() { checkAuth(t, "the upstream's credential check", front) }
	}

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(relayClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "spool")
	relay := startRelay(t, relayEnv(t,
		"OTEL_EXPORTER_OTLP_ENDPOINT="+proxy.URL(),
		"OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20"+relayUpstreamSecret),
		"--listen", "127.0.0.1:0", "--protocol", u.protocol, "--dir", dir, "--auth-token-file", tokenFile)
	m := relayGRPCAddrRE.FindStringSubmatch(relay.Stderr.String())
	if m == nil || m[1] == "off" {
		t.Fatalf("no gRPC address in the relay's listening line:\n%s", relay.Stderr.String())
	}
	grpcAddr := m[1]

	clientAuth := map[string]string{"authorization": "Bearer " + relayClientSecret}
	exp, err := otlptracegrpc.New(ctx,
		otlptracegrpc.WithEndpoint(grpcAddr), otlptracegrpc.WithInsecure(), otlptracegrpc.WithHeaders(clientAuth))
	if err != nil {
		t.Fatal(err)
	}
	cexp := &countingExporter{SpanExporter: exp}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(cexp))
	t.Cleanup(func() { shutdownWithin(tp.Shutdown) })
	mexp, err := otlpmetricgrpc.New(ctx,
		otlpmetricgrpc.WithEndpoint(grpcAddr), otlpmetricgrpc.WithInsecure(), otlpmetricgrpc.WithHeaders(clientAuth),
		otlpmetricgrpc.WithTemporalitySelector(sdkmetric.DeltaTemporalitySelector))
	if err != nil {
		t.Fatal(err)
	}
	lexp, err := otlploggrpc.New(ctx,
		otlploggrpc.WithEndpoint(grpcAddr), otlploggrpc.WithInsecure(), otlploggrpc.WithHeaders(clientAuth))
	if err != nil {
		t.Fatal(err)
	}
	// The metrics and logs load and their checks are the library gRPC
	// scenario's, on this sink and these providers.
	sig := &grpcPipe{
		name: name,
		sink: s,
		mexp: &countingMetricExporter{Exporter: mexp},
		lexp: &countingLogExporter{Exporter: lexp},
	}
	sig.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(
		sdkmetric.NewPeriodicReader(sig.mexp, sdkmetric.WithInterval(100*time.Millisecond))))
	t.Cleanup(func() { shutdownWithin(sig.mp.Shutdown) })
	sig.lp = sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewBatchProcessor(sig.lexp)))
	t.Cleanup(func() { shutdownWithin(sig.lp.Shutdown) })

	stopSampling := sampleBacklog(func() int { return relay.status(t).Backlog.Records }, r)
	d := steady + relayGRPCOutage + recover
	var (
		produced            *otlptest.Produced
		increments, records int
	)
	spansDone, signalsDone := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(spansDone)
		produced = otlptest.SpanLoad{Rate: relayGRPCRate, Duration: d}.Run(ctx, tp)
	}()
	go func() {
		defer close(signalsDone)
		increments, records = sig.metricsAndLogs(ctx, d)
	}()
	time.Sleep(time.Until(start.Add(steady)))
	if err := proxy.SetMode(otlptest.Refuse); err != nil {
		t.Errorf("SetMode(Refuse): %v", err)
	}
	time.Sleep(time.Until(start.Add(steady + relayGRPCOutage)))
	// Near the end of the outage the backlog is on disk: neither token
	// may be in it.
	checkSpool(t, dir, relayUpstreamSecret, relayClientSecret)
	if err := proxy.SetMode(otlptest.Pass); err != nil {
		t.Errorf("SetMode(Pass): %v", err)
	}
	<-spansDone
	<-signalsDone

	fctx, cancel := context.WithTimeout(ctx, flushLimit)
	defer cancel()
	if err := tp.ForceFlush(fctx); err != nil {
		t.Errorf("TracerProvider.ForceFlush: %v", err)
	}
	if err := sig.mp.ForceFlush(fctx); err != nil {
		t.Errorf("MeterProvider.ForceFlush: %v", err)
	}
	if err := sig.lp.ForceFlush(fctx); err != nil {
		t.Errorf("LoggerProvider.ForceFlush: %v", err)
	}
	// The relay delivers its backlog in the background: wait until it is
	// empty and the receiver has everything, within flushLimit.
	ids := produced.IDs()
	for fctx.Err() == nil {
		distinctLogs, _ := s.recordCounts()
		if relay.status(t).Backlog.Records == 0 && s.missing(ids) == 0 &&
			int(s.pointSum()) == increments && distinctLogs == records {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopSampling()
	st := relay.status(t)

	received, dups := s.spanCounts()
	acked, failed := cexp.counts()
	r.set(func(r *row) {
		r.counted = true
		r.produced, r.acked, r.received, r.dups = len(ids), acked, received, dups
		r.lost = s.missing(ids)
	})
	t.Logf("produced=%d acked=%d (failed %d) received=%d lost=%d dups=%d backlog=%d; relay status %+v",
		r.produced, r.acked, failed, r.received, r.lost, r.dups, r.backlog, st)
	checkCounts(t, r, 0)
	sig.checkMetricsAndLogs(t, mrow, lrow, r.backlog, increments, records)
	if st.Spooled == 0 {
		t.Errorf("the relay stored nothing: the outage did not hit the exports (status %+v)", st)
	}
	if st.Dropped.Total != 0 {
		t.Errorf("the relay dropped %d exports", st.Dropped.Total)
	}
	if st.Backlog.Records != 0 {
		t.Errorf("%d exports still in the relay's spool", st.Backlog.Records)
	}
	checkSpool(t, dir, relayUpstreamSecret, relayClientSecret)
	// Upstream, every request carried the relay's upstream token, those
	// from the spool too, and never the client's: the check in front saw
	// no other, and the receiver got the span exports with it alone.
	checkUpstream()
	if auth := s.authCounts(); len(auth) != 1 || auth[upstreamAuth] == 0 {
		t.Errorf("span exports by Authorization at the Collector: %v, want all with %q alone", auth, upstreamAuth)
	}
	// The providers go before the relay: their shutdown exports what is
	// left, which would be retried until the timeout with the relay gone.
	for _, p := range []struct {
		name     string
		shutdown func(context.Context) error
	}{{"TracerProvider", tp.Shutdown}, {"MeterProvider", sig.mp.Shutdown}, {"LoggerProvider", sig.lp.Shutdown}} {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := p.shutdown(sctx); err != nil {
			t.Errorf("%s.Shutdown: %v", p.name, err)
		}
		cancel()
	}
	if code := relay.signal(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Errorf("relay exit code %d after SIGTERM, want 0", code)
	}
}
