package main

import (
	"context"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// exportSpans sends n spans through otlptracegrpc to addr, one export per
// span, with the SDK's own retries off so that what it sees is the relay's
// first answer, and returns the first error the exporter returned.
func exportSpans(t *testing.T, addr string, n int, opts ...otlptracegrpc.Option) error {
	t.Helper()
	ctx := context.Background()
	exp, err := otlptracegrpc.New(ctx, append([]otlptracegrpc.Option{otlptracegrpc.WithEndpoint(addr), otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Shutdown(ctx)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	for range n {
		_, span := tp.Tracer("relay-test").Start(ctx, "op")
		span.End()
	}
	for _, s := range rec.Ended() {
		if err := exp.ExportSpans(ctx, []sdktrace.ReadOnlySpan{s}); err != nil {
			return err
		}
	}
	return nil
}

// The real binary takes OTLP/gRPC from the SDK's exporter, with the token
// and gzip: delivered once while the upstream is up, stored while it is
// down (the exporter sees success), delivered after it is back; /status and
// /metrics count the calls.
func TestRelayGRPCForwardsAndStores(t *testing.T) {
	t.Parallel()
	col := otlptest.StartCollector(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, cleanEnv(t, secretEnv, "OTEL_EXPORTER_OTLP_ENDPOINT="+col.URL(), "OTLPRETRY_PROBE_INTERVAL=50ms"),
		"--dir", dir, "--auth-token-file", tokenFile)
	auth := otlptracegrpc.WithHeaders(map[string]string{"authorization": "Bearer tok-123"})

	if err := exportSpans(t, r.grpcAddr, 4, auth); err != nil {
		t.Fatalf("plain: %v", err)
	}
	if err := exportSpans(t, r.grpcAddr, 3, auth, otlptracegrpc.WithCompressor("gzip")); err != nil {
		t.Fatalf("gzip: %v", err)
	}
	if col.Spans() != 7 || col.SpanDuplicates() != 0 {
		t.Fatalf("collector has %d spans (%d duplicates), want 7 once each", col.Spans(), col.SpanDuplicates())
	}
	if h := col.LastHeader("/v1/traces"); h.Get("X-Api-Key") != secretValue || h.Get("Authorization") != "" {
		t.Errorf("upstream headers %v: want the configured ones, not the client's token", h)
	}
	err := exportSpans(t, r.grpcAddr, 1)
	if st, _ := status.FromError(err); st.Code() != codes.Unauthenticated {
		t.Errorf("without the token: %v, want Unauthenticated", err)
	}

	col.Stop()
	if err := exportSpans(t, r.grpcAddr, 5, auth); err != nil {
		t.Fatalf("during the outage: %v, want success (stored)", err)
	}
	if st := relayStatus(t, r); st.Backlog.Records != 5 {
		t.Fatalf("backlog %d during the outage, want 5", st.Backlog.Records)
	}
	if err := col.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := col.WaitSpans(ctx, 12); err != nil {
		t.Fatal(err)
	}
	for relayStatus(t, r).Backlog.Records != 0 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if col.Spans() != 12 || col.SpanDuplicates() != 0 {
		t.Errorf("collector has %d spans (%d duplicates), want 12 once each", col.Spans(), col.SpanDuplicates())
	}

	st := relayStatus(t, r)
	g := st.Receivers["grpc"]
	if st.Delivered.Total != 12 || st.Backlog.Records != 0 {
		t.Errorf("/status delivered %+v, backlog %d; want 12 delivered, none left", st.Delivered, st.Backlog.Records)
	}
	if g.Addr != r.grpcAddr || g.Requests["OK"] != 12 || g.Requests["Unauthenticated"] != 1 || st.Receivers["http"].Addr != r.Addr {
		t.Errorf("/status receivers %+v; want gRPC on %s with 12 OK and 1 Unauthenticated, HTTP on %s", st.Receivers, r.grpcAddr, r.Addr)
	}
	_, m := get(t, r.url("/metrics"))
	for _, line := range []string{
		`otlpretry_relay_grpc_requests_total{code="OK",signal="traces"} 12`,
		`otlpretry_relay_grpc_requests_total{code="Unauthenticated",signal="traces"} 1`,
	} {
		if !strings.Contains(string(m), line+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", line, m)
		}
	}
	if code := r.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// freeAddr is a 127.0.0.1 address nothing listens on, as far as the test
// can tell.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Each receiver can be turned off, by "off" or an empty flag, beating the
// variable; the other still works.
func TestRelayReceiversOff(t *testing.T) {
	t.Parallel()
	col := otlptest.StartCollector(t)
	for _, grpcOff := range [][]string{{"--grpc-listen", "off"}, {"--grpc-listen="}} {
		addr := freeAddr(t)
		r := startRelay(t, cleanEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT="+col.URL(), "OTLPRETRY_RELAY_GRPC_LISTEN="+addr),
			append([]string{"--dir", t.TempDir()}, grpcOff...)...)
		if r.grpcAddr != "off" {
			t.Errorf("%v: the relay reports gRPC on %s", grpcOff, r.grpcAddr)
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%v: something listens on %s, OTLPRETRY_RELAY_GRPC_LISTEN's address", grpcOff, addr)
		}
		if _, ok := relayStatus(t, r).Receivers["grpc"]; ok {
			t.Errorf("%v: /status shows a gRPC receiver", grpcOff)
		}
		if code := r.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
			t.Errorf("%v: exit code %d after SIGTERM, want 0", grpcOff, code)
		}
	}

	// HTTP off: gRPC alone, reported on the listening line; the HTTP
	// address from the variable is left alone.
	addr := freeAddr(t)
	r := startRelay(t, cleanEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT="+col.URL(), "OTLPRETRY_RELAY_LISTEN="+addr),
		"--dir", t.TempDir(), "--listen", "off")
	if r.Addr != "off" {
		t.Errorf("HTTP off: the relay reports HTTP on %s", r.Addr)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("HTTP off: something listens on %s", addr)
	}
	if err := exportSpans(t, r.grpcAddr, 2); err != nil || col.Spans() != 2 {
		t.Errorf("gRPC with HTTP off: %v, %d spans delivered", err, col.Spans())
	}
	if code := r.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Errorf("HTTP off: exit code %d after SIGTERM, want 0", code)
	}
}

// A gRPC call that is not an OTLP Export is Unimplemented.
func TestRelayGRPCOtherMethods(t *testing.T) {
	t.Parallel()
	col := otlptest.StartCollector(t)
	r := startRelay(t, cleanEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT="+col.URL()), "--dir", t.TempDir())
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = conn.Invoke(ctx, "/grpc.health.v1.Health/Check", &emptypb.Empty{}, &emptypb.Empty{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("health check: %v, want Unimplemented", err)
	}
}

func TestRelayProtocolAndListenErrors(t *testing.T) {
	t.Parallel()
	env := cleanEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9")
	for _, c := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"unknown protocol flag", nil, []string{"--protocol", "gRPC"}, `--protocol: unknown protocol "gRPC"`},
		{"unknown protocol", []string{"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=http/proto"}, nil,
			`OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: unknown protocol "http/proto": want grpc, http/protobuf or http/json`},
		{"both off", nil, []string{"--listen", "off", "--grpc-listen", ""}, "both receivers are off"},
		{"gRPC loop", nil, []string{"--endpoint", "http://localhost:4317", "--grpc-listen", "127.0.0.1:4317"}, "is the relay's own address"},
	} {
		dir := t.TempDir()
		res := runCmd(t, append(append([]string{}, env...), c.env...), append([]string{"relay", "--dir", dir, "--listen", "127.0.0.1:0"}, c.args...)...)
		if res.code != exitUsage || !strings.Contains(res.stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", c.name, res.code, res.stderr, exitUsage, c.want)
		}
	}
	// http/json is taken: bodies go as they came.
	col := otlptest.StartCollector(t)
	r := startRelay(t, cleanEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT="+col.URL(), "OTEL_EXPORTER_OTLP_PROTOCOL=http/json"), "--dir", t.TempDir())
	if err := exportSpans(t, r.grpcAddr, 1); err != nil || col.Spans() != 1 {
		t.Errorf("http/json upstream: %v, %d spans", err, col.Spans())
	}
}

// The real binary with an OTLP/gRPC upstream (OTEL_EXPORTER_OTLP_PROTOCOL
// =grpc): spans from a gRPC client and from an HTTP client sending JSON
// reach the upstream once each, with the configured headers as metadata;
// while the upstream is down they are stored, and delivered over gRPC once
// it is back.
func TestRelayGRPCUpstream(t *testing.T) {
	t.Parallel()
	col := otlptest.StartGRPCCollector(t)
	dir := t.TempDir()
	r := startRelay(t, cleanEnv(t, secretEnv, "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+col.Addr(),
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTLPRETRY_PROBE_INTERVAL=50ms"), "--dir", dir)

	if err := exportSpans(t, r.grpcAddr, 3); err != nil {
		t.Fatalf("gRPC client: %v", err)
	}
	const traceJSON = `{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"j"}]}]}]}`
	resp, err := http.Post(r.url("/v1/traces"), "application/json", strings.NewReader(traceJSON))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || col.Spans() != 4 {
		t.Fatalf("HTTP JSON client: %d, upstream has %d spans; want 200, 4", resp.StatusCode, col.Spans())
	}
	var tid [16]byte
	var sid [8]byte
	hex.Decode(tid[:], []byte("5b8efff798038103d269b633813fc60c"))
	hex.Decode(sid[:], []byte("eee19b7ec3c1b174"))
	if !col.HasSpan(tid, sid) {
		t.Error("the JSON span arrived without its trace and span IDs")
	}

	col.Stop()
	if err := exportSpans(t, r.grpcAddr, 2); err != nil {
		t.Fatalf("during the outage: %v, want success (stored)", err)
	}
	if st := relayStatus(t, r); st.Backlog.Records != 2 {
		t.Fatalf("backlog %d during the outage, want 2", st.Backlog.Records)
	}
	if err := col.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := col.Wait(ctx, "6 spans", func(c *otlptest.GRPCCollector) bool { return c.Spans() >= 6 }); err != nil {
		t.Fatal(err)
	}
	if col.Spans() != 6 || col.SpanDuplicates() != 0 {
		t.Errorf("upstream has %d spans (%d duplicates), want 6 once each", col.Spans(), col.SpanDuplicates())
	}
	for _, c := range col.Calls() {
		if v := c.MD.Get("x-api-key"); len(v) != 1 || v[0] != secretValue {
			t.Errorf("%s call without the configured metadata: %v", c.Method, c.MD)
		}
	}
	if code := r.signal(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}
