// Package relay is the otlpretry command's relay: an OTLP/HTTP receiver
// (Relay, an http.Handler) and an OTLP/gRPC one (Relay.NewGRPCServer) for
// local clients, which check each request and forward it through an
// otlpretry.Transport to each signal's upstream collector, plus the
// relay's own /healthz, /status and /metrics.
//
// To an OTLP/HTTP upstream a body is forwarded byte for byte, as it came
// (a gRPC message as application/x-protobuf). To an OTLP/gRPC upstream
// every export goes as the signal's Export call, over a connection through
// the transport's interceptor: protobuf uncompressed, JSON converted once.
//
// A client is answered only once the upstream has accepted the export or
// the transport has stored it on disk: the transport returns the
// upstream's answer, or success after storing. A request refused here
// (wrong path, method, token, content type or encoding, too large, or a
// body that is not a well-formed export) never reaches the transport, so
// it is never stored.
package relay

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/otlpenv"
	"github.com/otlpretry/otlpretry/spool"
)

// DefaultMaxBodyBytes bounds an inbound body. OTLP receivers commonly take
// far less; the OTel Collector's default is 20 MiB.
const DefaultMaxBodyBytes = 64 << 20

// Config describes a Relay.
type Config struct {
	// Destinations are where each signal's exports go; a signal without
	// one is answered 404. The headers of an OTLP/HTTP destination are not
	// set by the relay: see HeaderScope, which the Transport is expected
	// to carry them through. Those of an OTLP/gRPC destination are sent
	// as the metadata of each of its calls.
	Destinations []otlpenv.Destination
	// Upstream is the base endpoint, shown by /status; nil when there is
	// none.
	Upstream *url.URL
	// Transport carries the forwarded requests: an *otlpretry.Transport
	// made with otlpretry.WithCallerRetry, since an export it returns an
	// error for is answered 503 with Retry-After, which the client
	// retries: it counts such an export as refused, not dropped, and
	// logs it. OTLP/gRPC destinations require an *otlpretry.Transport:
	// their connections go through otlpretrygrpc.DialOption.
	Transport http.RoundTripper
	// GRPCTLS is the TLS configuration of connections to https://
	// OTLP/gRPC destinations. If nil, the system's roots and TLS 1.2 at
	// least.
	GRPCTLS *tls.Config
	// Stats reads the transport's counters for /status and /metrics.
	Stats func() otlpretry.Stats
	// AuthToken, when not empty, is the bearer token clients must send.
	AuthToken string
	// HTTPAddr and GRPCAddr are where the OTLP/HTTP receiver (this
	// handler) and the OTLP/gRPC one (NewGRPCServer) listen, shown by
	// /status; empty for a receiver that is off.
	HTTPAddr, GRPCAddr string
	// Dir is the spool folder, shown by /status.
	Dir string
	// MaxBodyBytes bounds inbound bodies, and what a compressed body
	// inflates to; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Relay is an http.Handler.
type Relay struct {
	cfg       Config
	tokenHash [sha256.Size]byte
	registry  *prometheus.Registry
	metrics   http.Handler
	// httpRequests and grpcRequests count the export requests each
	// receiver answered.
	httpRequests, grpcRequests *requestCounter
	started                    time.Time
	// upstreams holds each signal's upstream, by spool.Signal; nil for a
	// signal not forwarded.
	upstreams [4]upstream
	// conns are the connections to OTLP/gRPC upstreams, closed by Close.
	conns   []*grpc.ClientConn
	badBody logLimiter
}

// badBodyLogInterval is the least time between two log lines about
// refused bodies; the lines in between are counted in the next.
const badBodyLogInterval = time.Minute

// New returns a Relay for cfg.
func New(cfg Config) (*Relay, error) {
	if len(cfg.Destinations) == 0 || cfg.Transport == nil || cfg.Stats == nil {
		return nil, errors.New("relay: Destinations, Transport and Stats are required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Relay{cfg: cfg, started: time.Now(), badBody: logLimiter{interval: badBodyLogInterval, now: time.Now}}
	needGRPC := false
	for _, d := range cfg.Destinations {
		if d.URL == nil || int(d.Signal) >= len(r.upstreams) || d.Signal == spool.SignalUnknown {
			return nil, errors.New("relay: a destination needs a URL and a signal")
		}
		if d.Protocol == otlpenv.ProtocolGRPC {
			needGRPC = true
			continue
		}
		r.upstreams[d.Signal] = &httpUpstream{rt: cfg.Transport, target: d.URL.String()}
	}
	if needGRPC {
		t, ok := cfg.Transport.(*otlpretry.Transport)
		if !ok {
			return nil, errors.New("relay: an OTLP/gRPC destination needs Transport to be an *otlpretry.Transport")
		}
		ups, conns, err := dialGRPC(cfg.Destinations, t, cfg.GRPCTLS)
		if err != nil {
			return nil, err
		}
		for sig, u := range ups {
			r.upstreams[sig] = u
		}
		r.conns = conns
	}
	if cfg.AuthToken != "" {
		r.tokenHash = sha256.Sum256([]byte(cfg.AuthToken))
	}
	r.registry = prometheus.NewRegistry()
	r.httpRequests = newRequestCounter("otlpretry_relay_requests_total",
		"OTLP/HTTP requests received by the relay, by signal and the HTTP status answered.")
	r.grpcRequests = newRequestCounter("otlpretry_relay_grpc_requests_total",
		"OTLP/gRPC Export calls received by the relay, by signal and the gRPC status code answered (OK, Unavailable, ...).")
	if err := r.registry.Register(newStatsCollector(cfg.Stats)); err != nil {
		_ = r.Close()
		return nil, err
	}
	r.registry.MustRegister(r.httpRequests.vec, r.grpcRequests.vec,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.metrics = promhttp.HandlerFor(r.registry, promhttp.HandlerOpts{})
	return r, nil
}

// Close closes the connections to OTLP/gRPC upstreams. Call it once the
// receivers have stopped and the Transport is shut down: the Transport's
// background delivery sends stored exports over them.
func (r *Relay) Close() error {
	var errs []error
	for _, cc := range r.conns {
		errs = append(errs, cc.Close())
	}
	r.conns = nil
	return errors.Join(errs...)
}

// Registry is the relay's own Prometheus registry, served on /metrics.
func (r *Relay) Registry() *prometheus.Registry { return r.registry }

// ServeHTTP routes: POST /v1/{traces,metrics,logs}; GET /healthz, /status,
// /metrics; anything else is 404.
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch req.URL.Path {
	case "/v1/traces", "/v1/metrics", "/v1/logs":
		r.ingest(w, req)
	case "/healthz":
		if r.onlyGet(w, req) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = io.WriteString(w, "ok\n")
		}
	case "/status":
		if r.onlyGet(w, req) {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(r.Status())
		}
	case "/metrics":
		if r.onlyGet(w, req) {
			r.metrics.ServeHTTP(w, req)
		}
	default:
		http.Error(w, "not found: the relay takes OTLP/HTTP exports on /v1/traces, /v1/metrics and /v1/logs", http.StatusNotFound)
	}
}

func (r *Relay) onlyGet(w http.ResponseWriter, req *http.Request) bool {
	if req.Method == http.MethodGet || req.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

// acceptedEncodings are the Content-Encodings whose bodies the relay can
// check before it stores them: gzip, the OTLP specification's one
// compression, and deflate (zlib), which the OTel Collector's receiver
// takes too. Bodies are forwarded compressed, as they came.
var acceptedEncodings = map[string]bool{"": true, "identity": true, "gzip": true, "deflate": true}

func (r *Relay) ingest(w http.ResponseWriter, req *http.Request) {
	signal := spool.SignalFromPath(req.URL.Path)
	orig := w
	rec := &statusRecorder{ResponseWriter: w}
	defer func() { r.httpRequests.inc(signal, strconv.Itoa(rec.code())) }()
	w = rec

	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "OTLP/HTTP exports are POSTed", http.StatusMethodNotAllowed)
		return
	}
	if !r.authorized(req) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="otlpretry relay"`)
		http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
		return
	}
	if req.ContentLength > r.cfg.MaxBodyBytes {
		tooLarge(w, r.cfg.MaxBodyBytes)
		return
	}
	up := r.upstreams[signal]
	if up == nil {
		http.Error(w, r.noDestination(signal), http.StatusNotFound)
		return
	}
	// The media type without its parameters is what is forwarded and
	// stored: "application/json; charset=utf-8" is JSON, so answered
	// as JSON when stored.
	mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil || (mt != "application/x-protobuf" && mt != "application/json") {
		http.Error(w, "Content-Type must be application/x-protobuf or application/json", http.StatusUnsupportedMediaType)
		return
	}
	enc := strings.ToLower(strings.TrimSpace(req.Header.Get("Content-Encoding")))
	if !acceptedEncodings[enc] {
		http.Error(w, "unsupported Content-Encoding: the relay takes gzip, deflate or none", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(orig, req.Body, r.cfg.MaxBodyBytes))
	if err != nil {
		var tl *http.MaxBytesError
		if errors.As(err, &tl) {
			tooLarge(w, r.cfg.MaxBodyBytes)
			return
		}
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
		return
	}

	if len(body) == 0 {
		// An export with no data: nothing to deliver or to keep.
		w.Header().Set("Content-Type", mt)
		if mt == "application/json" {
			_, _ = io.WriteString(w, "{}")
		}
		return
	}

	// What the upstream could not decode would be refused there, and
	// quarantined if it was stored meanwhile: refuse it here, whether the
	// upstream is up or down. A gRPC upstream takes protobuf only,
	// uncompressed: the body is inflated and JSON converted, once.
	if up.grpc() {
		body, err = grpcBody(signal, mt, enc, body, r.cfg.MaxBodyBytes)
	} else {
		err = checkBody(signal, mt, enc, body, r.cfg.MaxBodyBytes)
	}
	if err != nil {
		if errors.Is(err, ErrInflatedTooLarge) {
			w.Header().Set("Connection", "close")
			http.Error(w, "the body inflates to over "+strconv.FormatInt(r.cfg.MaxBodyBytes, 10)+" bytes", http.StatusRequestEntityTooLarge)
			return
		}
		if n, ok := r.badBody.allow(); ok {
			r.cfg.Logger.Warn("otlpretry relay: refused a body that is not a well-formed export (400); nothing stored",
				"signal", signal.String(), "content_type", mt, "content_encoding", enc, "reason", err.Error(),
				"refused_since_last_line", n)
		}
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}

	if enc == "" || enc == "identity" {
		enc = ""
	} else {
		enc = req.Header.Get("Content-Encoding")
	}
	ans, err := r.forward(req.Context(), signal, mt, enc, body)
	if err != nil {
		w.Header().Set("Retry-After", strconv.Itoa(int(RetryAfter/time.Second)))
		http.Error(w, errNotTaken, http.StatusServiceUnavailable)
		return
	}
	ans.writeHTTP(w, mt)
}

// RetryAfter is the wait the relay asks of a client whose export it can
// neither deliver nor store: Retry-After over HTTP, RetryInfo over gRPC.
const RetryAfter = 5 * time.Second

const errNotTaken = "the relay can neither deliver nor store this export now; retry later"

// forward sends body, as received with the given media type and
// Content-Encoding ("" for none), to signal's upstream through the
// transport: the one path of HTTP and gRPC exports, so both are stored,
// counted and delivered alike. For a gRPC upstream body is uncompressed
// protobuf (grpcBody). An error means the export was neither delivered nor
// stored (spool full, disk error, shutting down): the client keeps it and
// is told to retry. The transport counts such an export as refused and
// logs it, at most once per log interval.
//
// The call keeps the client's context: if the client leaves, the
// transport keeps the export and settles it in the background.
func (r *Relay) forward(ctx context.Context, signal spool.Signal, mediaType, encoding string, body []byte) (answer, error) {
	ans, err := r.upstreams[signal].send(ctx, mediaType, encoding, body)
	if err != nil {
		r.cfg.Logger.Debug("otlpretry relay: export neither delivered nor stored; the client was told to retry",
			"signal", signal.String(), "err", err)
		return nil, err
	}
	return ans, nil
}

// noDestination says how to give signal a destination.
func (r *Relay) noDestination(signal spool.Signal) string {
	return "this relay forwards no " + signal.String() + ": start it with " + otlpenv.SignalEndpointFlag(signal) + " or " +
		otlpenv.EndpointFlag + " (or " + otlpenv.SignalEndpointVar(signal) + " or " + otlpenv.EndpointVar + ")"
}

func tooLarge(w http.ResponseWriter, limit int64) {
	// The rest of the body is not read; do not keep the connection.
	w.Header().Set("Connection", "close")
	http.Error(w, "request body over "+strconv.FormatInt(limit, 10)+" bytes", http.StatusRequestEntityTooLarge)
}

func (r *Relay) authorized(req *http.Request) bool {
	return r.authorizedValue(req.Header.Get("Authorization"))
}

// authorizedValue reports whether an Authorization value (an HTTP header
// or gRPC "authorization" metadata) carries the configured bearer token;
// any value does when none is configured.
func (r *Relay) authorizedValue(v string) bool {
	if r.cfg.AuthToken == "" {
		return true
	}
	scheme, token, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		token = ""
	}
	// Hashing both sides first makes the comparison constant-time in the
	// token's length too.
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(got[:], r.tokenHash[:]) == 1
}

// hopByHop are the headers that describe one connection, not the message.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Content-Length": true,
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		if !hopByHop[k] {
			dst[k] = append([]string(nil), vs...)
		}
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) code() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}

// Unwrap lets http.ResponseController (and MaxBytesReader's connection
// handling) reach the real writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// logLimiter lets one log line through per interval and counts the ones
// it holds back.
type logLimiter struct {
	interval time.Duration
	now      func() time.Time

	mu         sync.Mutex // guards last and suppressed
	last       time.Time
	suppressed int
}

// allow reports whether to log now, and how many lines were held back
// since the last one logged.
func (l *logLimiter) allow() (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !l.last.IsZero() && now.Sub(l.last) < l.interval {
		l.suppressed++
		return 0, false
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return n, true
}
