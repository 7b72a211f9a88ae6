package otlpenv

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/otlpretry/otlpretry/spool"
)

// Signals are the signals the relay forwards, in the order it reports them.
var Signals = []spool.Signal{spool.SignalTraces, spool.SignalMetrics, spool.SignalLogs}

// EndpointFlag is the relay's flag for the base endpoint.
const EndpointFlag = "--endpoint"

// SignalEndpointVar is the variable of signal's own endpoint, such as
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
func SignalEndpointVar(s spool.Signal) string {
	return "OTEL_EXPORTER_OTLP_" + strings.ToUpper(s.String()) + "_ENDPOINT"
}

// SignalHeadersVar is the variable of signal's own headers, such as
// OTEL_EXPORTER_OTLP_TRACES_HEADERS.
func SignalHeadersVar(s spool.Signal) string {
	return "OTEL_EXPORTER_OTLP_" + strings.ToUpper(s.String()) + "_HEADERS"
}

// SignalEndpointFlag is the relay's flag for signal's own endpoint, such as
// --traces-endpoint.
func SignalEndpointFlag(s spool.Signal) string { return "--" + s.String() + "-endpoint" }

// Flags are the endpoint flags given on the command line; empty when not
// given.
type Flags struct {
	// Endpoint is the base URL (--endpoint).
	Endpoint string
	// Signal holds each signal's own URL (--traces-endpoint, ...).
	Signal map[spool.Signal]string
	// Protocol is every signal's upstream protocol (--protocol).
	Protocol string
}

// Destination is where one signal's exports go.
type Destination struct {
	Signal spool.Signal
	// URL is the full URL exports are POSTed to; for ProtocolGRPC, the
	// endpoint's scheme and host only (see GRPCTarget).
	URL *url.URL
	// From names the flag or variable the URL came from.
	From string
	// Header is sent with every export to URL, and to no other URL. Never
	// written to disk.
	Header http.Header
	// HeaderFrom names the variable the headers came from; empty when
	// there are none.
	HeaderFrom string
	// Protocol is how exports are sent to URL; ProtocolFrom names the flag
	// or variable it came from, empty for DefaultProtocol.
	Protocol     Protocol
	ProtocolFrom string
}

// A BaseSignalPathError reports a base endpoint whose path already ends
// in /v1/<signal>: /v1/<signal> would be appended a second time.
type BaseSignalPathError struct {
	// From names the flag or variable that gave the base endpoint.
	From string
	// URL is the endpoint as given, its password masked; Base is it
	// without the /v1/<signal> suffix.
	URL, Base string
	Signal    spool.Signal
}

func (e *BaseSignalPathError) Error() string {
	return fmt.Sprintf("%s %q is a base URL, to which /v1/<signal> is appended, but it already ends in /v1/%s: "+
		"set %s to %q, or give this full URL with %s or %s (used as given)",
		e.From, e.URL, e.Signal, e.From, e.Base, SignalEndpointFlag(e.Signal), SignalEndpointVar(e.Signal))
}

// ErrNoEndpoint is returned by Resolve when no signal has an endpoint.
var ErrNoEndpoint = fmt.Errorf("no upstream: give %s or set %s (or a signal's own endpoint, such as %s)",
	EndpointFlag, EndpointVar, SignalEndpointVar(spool.SignalTraces))

// Resolve works out each signal's destination as the OTel specification
// defines it. For OTLP/HTTP, a signal's own endpoint is used as given (its
// path, or "/" when it has none) and a base endpoint gets /v1/<signal>
// appended to its path. For OTLP/gRPC (see GRPCTarget), either endpoint
// gives the host and, by its scheme, the security; its path is ignored.
// For each signal the first that is set wins: its own flag, the base
// flag, its own variable, the base variable; flags beat the environment,
// and within each the signal's own setting beats the base. The headers of
// a signal are those of its own variable when set, else those of
// OTEL_EXPORTER_OTLP_HEADERS (the one replaces the other, as in the SDKs).
// The protocol is ResolveProtocol's.
//
// A base endpoint whose path ends in /v1/traces, /v1/metrics or /v1/logs
// is refused with a *BaseSignalPathError when an OTLP/HTTP signal uses
// it, an unusable endpoint with a message naming the flag or variable
// (wrapping an *EndpointError), an unknown protocol with a
// *ProtocolError. Two OTLP/HTTP signals sent to the same URL with
// different headers are refused, since a destination has one set of
// credentials (OTLP/gRPC signals are each their own destination: the
// host and the signal's Export method). A signal with no endpoint at all
// is left out; when none has one, the error is ErrNoEndpoint.
func Resolve(flags Flags, getenv func(string) string) ([]Destination, error) {
	base, baseFrom := flags.Endpoint, EndpointFlag
	if base == "" {
		base, baseFrom = getenv(EndpointVar), EndpointVar
	}
	var baseURL *url.URL
	if strings.TrimSpace(base) != "" {
		u, err := ParseEndpoint(base)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", baseFrom, err)
		}
		baseURL = u
	}
	generalHeaders, err := ParseHeaders(getenv(HeadersVar))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", HeadersVar, err)
	}

	var dests []Destination
	for _, s := range Signals {
		d := Destination{Signal: s}
		if d.Protocol, d.ProtocolFrom, err = ResolveProtocol(flags.Protocol, s, getenv); err != nil {
			return nil, err
		}
		grpc := d.Protocol == ProtocolGRPC
		own, ownFrom := flags.Signal[s], SignalEndpointFlag(s)
		if own == "" && flags.Endpoint == "" {
			own, ownFrom = getenv(SignalEndpointVar(s)), SignalEndpointVar(s)
		}
		switch {
		case strings.TrimSpace(own) != "":
			u, err := ParseEndpoint(own)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", ownFrom, err)
			}
			if u.Path == "" {
				u.Path = "/"
			}
			d.URL, d.From = u, ownFrom
		case baseURL != nil && grpc:
			u := *baseURL
			d.URL, d.From = &u, baseFrom
		case baseURL != nil:
			if err := checkBasePath(baseURL, baseFrom); err != nil {
				return nil, err
			}
			u, err := url.Parse(SignalURL(baseURL, s, ""))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", baseFrom, err)
			}
			d.URL, d.From = u, baseFrom
		default:
			continue
		}
		if grpc {
			// The OTel specification's gRPC endpoint: scheme and host;
			// a path means nothing to gRPC.
			d.URL = &url.URL{Scheme: d.URL.Scheme, Host: d.URL.Host}
		}
		d.Header, d.HeaderFrom = generalHeaders, HeadersVar
		if v := getenv(SignalHeadersVar(s)); strings.TrimSpace(v) != "" {
			if d.Header, err = ParseHeaders(v); err != nil {
				return nil, fmt.Errorf("%s: %w", SignalHeadersVar(s), err)
			}
			d.HeaderFrom = SignalHeadersVar(s)
		}
		if len(d.Header) == 0 {
			d.HeaderFrom = ""
		}
		for _, o := range dests {
			if !grpc && o.Protocol != ProtocolGRPC && SameDestination(o.URL, d.URL) && !sameHeader(o.Header, d.Header) {
				return nil, fmt.Errorf("%s and %s are both sent to %s but with different headers (%s, %s): a destination has one set of headers",
					o.Signal, s, d.URL.Redacted(), orNone(o.HeaderFrom), orNone(d.HeaderFrom))
			}
		}
		dests = append(dests, d)
	}
	if len(dests) == 0 {
		return nil, ErrNoEndpoint
	}
	return dests, nil
}

// checkBasePath refuses a base endpoint whose path already ends in
// /v1/<signal>, to which /v1/<signal> would be appended a second time.
func checkBasePath(u *url.URL, from string) error {
	for _, s := range Signals {
		suffix := "/v1/" + s.String()
		if p := strings.TrimSuffix(u.Path, "/"); strings.HasSuffix(p, suffix) {
			b := *u
			b.Path, b.RawPath = strings.TrimSuffix(p, suffix), ""
			return &BaseSignalPathError{From: from, URL: u.Redacted(), Base: b.Redacted(), Signal: s}
		}
	}
	return nil
}

// SameDestination reports whether a and b name the same destination: the
// same scheme, host (case aside) and path.
func SameDestination(a, b *url.URL) bool {
	return a.Scheme == b.Scheme && strings.EqualFold(a.Host, b.Host) && a.Path == b.Path
}

func sameHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, av := range a {
		bv, ok := b[k]
		if !ok || len(av) != len(bv) {
			return false
		}
		for i := range av {
			if av[i] != bv[i] {
				return false
			}
		}
	}
	return true
}

func orNone(from string) string {
	if from == "" {
		return "none"
	}
	return from
}
