package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/otlpenv"
	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/relay"
	"github.com/otlpretry/otlpretry/spool"
)

// The receivers' default addresses: the OTLP ports, on this machine only.
const (
	defaultListen     = "127.0.0.1:4318"
	defaultGRPCListen = "127.0.0.1:4317"
)

// listenOff is the address value that turns a receiver off.
const listenOff = "off"

func runRelay(ctx context.Context, args []string, e *env) int {
	fs := newFlagSet("relay", "[flags]", `
Runs an OTLP/HTTP receiver (127.0.0.1:4318) and an OTLP/gRPC one
(127.0.0.1:4317) for local applications, in any language, and forwards
what they send to the upstream collector over OTLP/HTTP or OTLP/gRPC
through the otlpretry transport: retried, and kept in a spool on disk while
the upstream is down. A client is answered only once the upstream has
accepted its export or the export is stored; the upstream's refusals come
back to the client as they came. To an OTLP/HTTP upstream bodies are
forwarded byte for byte (compressed ones stay so; gRPC messages go as
application/x-protobuf, uncompressed).

Receives POST /v1/traces, /v1/metrics and /v1/logs (application/x-protobuf
or application/json, gzip, deflate or uncompressed, at most 64 MiB, also
once inflated), and the gRPC TraceService, MetricsService and LogsService
Export calls (gzip or uncompressed, the same cap). Each body is checked
before it is stored or forwarded: protobuf by a walk of its wire structure,
JSON for syntax; one that fails is answered 400 (gRPC: InvalidArgument)
with the reason and never stored. One that can be neither delivered nor
stored is answered 503 with Retry-After (gRPC: Unavailable with RetryInfo).
--listen off or --grpc-listen off turns a receiver off (an empty value
too). Serves GET /healthz, /status (JSON) and /metrics (Prometheus) on the
HTTP address. SIGINT or SIGTERM stops it: it
finishes the requests in flight within --shutdown-timeout and leaves the
backlog on disk for the next run; it exits 0 when everything it
acknowledged is delivered or on disk (an upload cut by the timeout was
never acknowledged, so its client still has it).

Endpoints follow the OTel specification: --endpoint and
OTEL_EXPORTER_OTLP_ENDPOINT are a base URL to which /v1/<signal> is
appended; --traces-endpoint and OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (and
the same for metrics and logs) are used as given. For each signal the
first set wins: its own flag, --endpoint, its own variable,
OTEL_EXPORTER_OTLP_ENDPOINT. For grpc, either gives the host and port
(http:// without TLS, https:// with TLS and the system's roots); a path
is ignored.

The upstream protocol is --protocol, else the signal's own
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL (METRICS, LOGS), else
OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf; whatever a client used.
http/protobuf and http/json are sent alike: each body as it came, which
any OTLP/HTTP receiver takes. grpc sends each export as the signal's
OTLP/gRPC Export call: JSON received over HTTP is converted to protobuf
once, compressed bodies are inflated.

Headers for the upstream (credentials, typically) come from
OTEL_EXPORTER_OTLP_HEADERS, or for one signal from
OTEL_EXPORTER_OTLP_TRACES_HEADERS (METRICS, LOGS), which replaces it
("key=value,key2=value2", values percent-decoded; gRPC metadata for
grpc). A signal's headers are sent to its endpoint only, and are never
written to disk. Other settings of the transport are read from the
OTLPRETRY_* variables (see the package documentation). Flags take
precedence over the environment.`, e)
	listen := fs.String("listen", "", "OTLP/HTTP address, or off (env OTLPRETRY_RELAY_LISTEN; default "+defaultListen+", this machine only)")
	grpcListen := fs.String("grpc-listen", "", "OTLP/gRPC address, or off (env OTLPRETRY_RELAY_GRPC_LISTEN; default "+defaultGRPCListen+", this machine only)")
	protocol := fs.String("protocol", "", "upstream protocol: grpc, http/protobuf or http/json (env "+otlpenv.ProtocolVar+" and per signal "+
		otlpenv.SignalProtocolVar(spool.SignalTraces)+", ...; default "+string(otlpenv.DefaultProtocol)+")")
	endpoint := fs.String("endpoint", "", "upstream base URL, e.g. https://collector:4318; /v1/<signal> is appended (grpc: host and port only) (env "+otlpenv.EndpointVar+")")
	signalEndpoints := map[spool.Signal]*string{}
	for _, sig := range otlpenv.Signals {
		signalEndpoints[sig] = fs.String(strings.TrimPrefix(otlpenv.SignalEndpointFlag(sig), "--"), "",
			"full URL for "+sig.String()+", used as given, e.g. https://collector:4318/v1/"+sig.String()+" (env "+otlpenv.SignalEndpointVar(sig)+"; default the base endpoint's)")
	}
	dir := fs.String("dir", "", "spool folder (env OTLPRETRY_DIR; default "+defaultDir()+")")
	maxBytes := fs.Int64("max-bytes", 0, fmt.Sprintf("spool cap in bytes (env OTLPRETRY_MAX_BYTES; default %d)", otlpretry.DefaultMaxBytes))
	syncMode := fs.String("sync", "", "what a stored export survives: process (kill -9) or durable (also power loss) (env OTLPRETRY_SYNC; default durable)")
	fullPolicy := fs.String("full-policy", "", "at the cap: drop-newest or drop-oldest (env OTLPRETRY_FULL_POLICY; default drop-newest)")
	maxAge := fs.Duration("max-age", 0, "drop spooled exports older than this; 0 never (env OTLPRETRY_MAX_AGE; default 0)")
	tokenFile := fs.String("auth-token-file", "", "file holding a bearer token that clients must send (env OTLPRETRY_RELAY_AUTH_TOKEN_FILE; default none)")
	shutdownTimeout := fs.Duration("shutdown-timeout", 10*time.Second, "longest a SIGINT/SIGTERM shutdown may take")
	if code, done := parseFlags(fs, args, e); done {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "otlpretry relay: "+format+"\n", a...)
		return exitUsage
	}
	pick := func(flagValue, envName, def string) string {
		if flagValue != "" {
			return flagValue
		}
		if v := e.getenv(envName); v != "" {
			return v
		}
		return def
	}

	flags := otlpenv.Flags{Endpoint: *endpoint, Signal: map[spool.Signal]string{}, Protocol: *protocol}
	for sig, v := range signalEndpoints {
		flags.Signal[sig] = *v
	}
	dests, err := otlpenv.Resolve(flags, e.getenv)
	if err != nil {
		return fail("%v", err)
	}
	// The base endpoint, for /status and the "listening" line; nil when
	// no signal uses it.
	var upstream *url.URL
	for _, d := range dests {
		if d.From == otlpenv.EndpointFlag || d.From == otlpenv.EndpointVar {
			u := *d.URL
			u.Path = strings.TrimSuffix(u.Path, "/v1/"+d.Signal.String())
			upstream = &u
			break
		}
	}
	// A flag given empty turns its receiver off, as "off" does.
	listenAddr, grpcAddr := pick(*listen, "OTLPRETRY_RELAY_LISTEN", defaultListen), pick(*grpcListen, "OTLPRETRY_RELAY_GRPC_LISTEN", defaultGRPCListen)
	if isSet(fs, "listen") && strings.TrimSpace(*listen) == "" {
		listenAddr = listenOff
	}
	if isSet(fs, "grpc-listen") && strings.TrimSpace(*grpcListen) == "" {
		grpcAddr = listenOff
	}
	if listenAddr == listenOff && grpcAddr == listenOff {
		return fail("both receivers are off (--listen and --grpc-listen): nothing to relay")
	}
	for _, d := range dests {
		for _, a := range []string{listenAddr, grpcAddr} {
			if a != listenOff && sameAddress(a, d.URL.Host) {
				return fail("the upstream %s (%s) is the relay's own address", d.URL.Redacted(), d.From)
			}
		}
	}
	var token string
	if f := pick(*tokenFile, "OTLPRETRY_RELAY_AUTH_TOKEN_FILE", ""); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return fail("auth token: %v", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return fail("auth token file %s is empty", f)
		}
	}
	spoolDir := resolveDir(*dir, e)

	// Each destination's headers are added to its requests, and to no
	// other, under the transport (relay.HeaderScope). The transport's own
	// clone of http.DefaultTransport keeps this many idle connections a
	// host for the same reason: fewer than the sends in flight while
	// draining would reconnect for every request.
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 16
	scope := relay.NewHeaderScope(base, dests)
	defer scope.CloseIdleConnections()

	// Options only for what was set here: what is not set is left to the
	// transport, which reads OTLPRETRY_* itself; so flags > environment >
	// defaults throughout.
	opts := []otlpretry.Option{
		otlpretry.WithDir(spoolDir),
		otlpretry.WithTransport(scope),
		// An export the spool cannot take is answered 503 with
		// Retry-After: the client retries it, so it is refused, not lost.
		otlpretry.WithCallerRetry(),
	}
	for _, d := range dests {
		// The backlog of an earlier run is sent at once rather than after
		// a live request to its destination. For OTLP/HTTP, the scope
		// adds that destination's headers below the transport, as for
		// live requests, so the transport itself has none to add. For
		// OTLP/gRPC, the transport sends them as metadata over a
		// connection of its own, under the URL it stores the exports
		// with: grpcs:// for a TLS destination, so that they never go
		// over a connection without TLS (those stored as grpc:// before
		// the connection was seen to use TLS wait for a live call).
		if d.Protocol == otlpenv.ProtocolGRPC {
			opts = append(opts, otlpretry.WithEndpointHeaders(d.StoredURL(), d.Header))
			continue
		}
		opts = append(opts, otlpretry.WithEndpointHeaders(d.URL.String(), http.Header{}))
	}
	if isSet(fs, "max-bytes") {
		if *maxBytes <= 0 {
			return fail("--max-bytes must be positive")
		}
		opts = append(opts, otlpretry.WithMaxBytes(*maxBytes))
	}
	switch {
	case *syncMode != "":
		m, err := spool.ParseSyncMode(*syncMode)
		if err != nil {
			return fail("--sync: %v", err)
		}
		opts = append(opts, otlpretry.WithSync(m))
	case e.getenv("OTLPRETRY_SYNC") == "":
		// The relay acknowledges exports to other processes, which then
		// forget them: it stores them durably unless told otherwise.
		opts = append(opts, otlpretry.WithSync(spool.SyncDurable))
	}
	if *fullPolicy != "" {
		p, err := spool.ParseFullPolicy(*fullPolicy)
		if err != nil {
			return fail("--full-policy: %v", err)
		}
		opts = append(opts, otlpretry.WithFullPolicy(p))
	}
	if isSet(fs, "max-age") {
		if *maxAge < 0 {
			return fail("--max-age must not be negative")
		}
		opts = append(opts, otlpretry.WithMaxAge(*maxAge))
	}

	logger := slog.New(slog.NewTextHandler(e.stderr, nil))
	opts = append(opts, otlpretry.WithLogger(logger))
	rt, err := otlpretry.New(opts...)
	if err != nil {
		fmt.Fprintf(e.stderr, "otlpretry relay: %v\n", err)
		return exitFailure
	}
	// Both receivers listen before either serves: a port in use fails
	// the start, with nothing served.
	var ln, gln net.Listener
	closeAll := func(err error) int {
		for _, l := range []net.Listener{ln, gln} {
			if l != nil {
				_ = l.Close()
			}
		}
		_ = rt.Shutdown(context.Background())
		fmt.Fprintf(e.stderr, "otlpretry relay: %v\n", err)
		return exitFailure
	}
	cfg := relay.Config{
		Destinations: dests,
		Upstream:     upstream,
		Transport:    rt,
		Stats:        rt.Stats,
		AuthToken:    token,
		Dir:          spoolDir,
		Logger:       logger,
	}
	if listenAddr != listenOff {
		if ln, err = net.Listen("tcp", listenAddr); err != nil {
			return closeAll(fmt.Errorf("OTLP/HTTP receiver: %w", err))
		}
		cfg.HTTPAddr = ln.Addr().String()
	}
	if grpcAddr != listenOff {
		if gln, err = net.Listen("tcp", grpcAddr); err != nil {
			return closeAll(fmt.Errorf("OTLP/gRPC receiver: %w", err))
		}
		cfg.GRPCAddr = gln.Addr().String()
	}
	h, err := relay.New(cfg)
	if err != nil {
		return closeAll(err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	// The handler is in place before the "listening" line, on which
	// supervisors and tests act: a SIGTERM right after it must shut the
	// relay down cleanly, not kill it.
	sigCtx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 2)
	httpShown, grpcShown := listenOff, listenOff
	if ln != nil {
		go func() { served <- srv.Serve(ln) }()
		httpShown = ln.Addr().String()
	}
	var gsrv *grpc.Server
	if gln != nil {
		gsrv = h.NewGRPCServer()
		go func() { served <- gsrv.Serve(gln) }()
		grpcShown = gln.Addr().String()
	}
	for _, l := range []net.Listener{ln, gln} {
		if l != nil && !l.Addr().(*net.TCPAddr).IP.IsLoopback() && token == "" {
			logger.Warn("otlpretry relay: listening beyond this machine without --auth-token-file; anyone who can reach it can send through it",
				"addr", l.Addr().String())
		}
	}
	st := rt.Stats()
	// addr, the OTLP/HTTP address, stays first: supervisors and tests
	// read it from this line.
	attrs := []any{"addr", httpShown, "grpc_addr", grpcShown}
	for _, d := range dests {
		attrs = append(attrs, d.Signal.String(), d.URL.Redacted())
	}
	attrs = append(attrs, "dir", spoolDir, "backlog", st.Records, "auth", token != "")
	logger.Info("otlpretry relay: listening", attrs...)

	select {
	case <-sigCtx.Done():
	case err := <-served:
		stop()
		logger.Error("otlpretry relay: server stopped", "err", err)
		_ = srv.Close()
		if gsrv != nil {
			gsrv.Stop()
		}
		_ = rt.Shutdown(context.Background())
		_ = h.Close()
		return exitFailure
	}
	stop() // a second signal ends the process at once
	logger.Info("otlpretry relay: shutting down; finishing the requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	code := exitOK
	if gsrv != nil {
		stopGRPC(sctx, gsrv, logger)
	}
	if err := srv.Shutdown(sctx); err != nil {
		// A request still running was not answered, so not acknowledged:
		// its client keeps the export and sends it again. Cutting it
		// loses nothing the relay answered for.
		logger.Warn("otlpretry relay: requests still in flight at the shutdown timeout were cut; "+
			"they were never acknowledged, so their clients still hold them", "err", err)
		_ = srv.Close()
	}
	if err := rt.Shutdown(sctx); err != nil {
		// Whatever the transport acknowledged is delivered or stored; a
		// sender or attempt cut by the timeout leaves its export on disk
		// for the next run. Any other error (closing the spool) may leave
		// a stored export unsafe, and fails the exit code.
		if lostNothing(err) {
			logger.Warn("otlpretry relay: transport shutdown cut by the timeout; the backlog stays on disk", "err", err)
		} else {
			logger.Error("otlpretry relay: transport shutdown", "err", err)
			code = exitFailure
		}
	}
	// The transport's background delivery uses the gRPC upstreams'
	// connections until it is shut down.
	if err := h.Close(); err != nil {
		logger.Warn("otlpretry relay: closing the OTLP/gRPC upstream connections", "err", err)
	}
	st = rt.Stats()
	logger.Info("otlpretry relay: stopped", "backlog_left_on_disk", st.Records, "bytes", st.Bytes)
	return code
}

// stopGRPC stops s gracefully, its calls in flight answered, or at ctx's
// end at once: a call cut then was never answered, so its client still has
// the export.
func stopGRPC(ctx context.Context, s *grpc.Server, logger *slog.Logger) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		logger.Warn("otlpretry relay: gRPC calls still in flight at the shutdown timeout were cut; " +
			"they were never acknowledged, so their clients still hold them")
		s.Stop()
		<-done
	}
}

// lostNothing reports whether every error joined in err is a context's end:
// work cut short, with what it was about still on disk.
func lostNothing(err error) bool {
	switch u := err.(type) {
	case nil:
		return true
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if !lostNothing(e) {
				return false
			}
		}
		return true
	case interface{ Unwrap() error }:
		return lostNothing(u.Unwrap())
	}
	return err == context.DeadlineExceeded || err == context.Canceled
}

// sameAddress reports whether the upstream host:port is where the relay
// listens, which would make it forward to itself.
func sameAddress(listen, upstreamHost string) bool {
	lh, lp, err1 := net.SplitHostPort(listen)
	uh, up, err2 := net.SplitHostPort(upstreamHost)
	if err1 != nil || err2 != nil || lp != up || lp == "0" {
		return false
	}
	loop := func(h string) bool {
		ip := net.ParseIP(h)
		return h == "localhost" || h == "" || (ip != nil && (ip.IsLoopback() || ip.IsUnspecified()))
	}
	return lh == uh || (loop(lh) && loop(uh))
}
