// Package otlpenv reads the parts of the OpenTelemetry exporter
// configuration that the otlpretry command shares with the SDKs: the base
// endpoint URL, to which /v1/<signal> is appended, each signal's own
// endpoint, used as given, the headers of OTEL_EXPORTER_OTLP_HEADERS and
// of each signal's own variable, and the protocol of
// OTEL_EXPORTER_OTLP_PROTOCOL and of each signal's own variable.
package otlpenv

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/otlpretry/otlpretry/spool"
)

// The environment variables read by the command, as named by the OTel
// specification.
const (
	EndpointVar = "OTEL_EXPORTER_OTLP_ENDPOINT"
	HeadersVar  = "OTEL_EXPORTER_OTLP_HEADERS"
)

// ParseHeaders reads the OTEL_EXPORTER_OTLP_HEADERS format: comma-separated
// key=value pairs, the value percent-decoded (as the W3C Baggage format the
// specification refers to, and the Go SDK, do), key and value trimmed of
// spaces. Unlike the SDK, which skips a malformed pair, it fails, because a
// relay that silently drops a credential header would spool everything
// until someone noticed. Error messages name the pair by position, never by
// content, since values are usually secrets.
func ParseHeaders(s string) (http.Header, error) {
	h := http.Header{}
	if strings.TrimSpace(s) == "" {
		return h, nil
	}
	for i, pair := range strings.Split(s, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("header #%d: missing '='", i+1)
		}
		k = strings.TrimSpace(k)
		if !validKey(k) {
			return nil, fmt.Errorf("header #%d: invalid header name", i+1)
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("header #%d (%s): bad percent-encoding in the value", i+1, k)
		}
		dv = strings.TrimSpace(dv)
		if strings.ContainsAny(dv, "\r\n\x00") {
			return nil, fmt.Errorf("header #%d (%s): control character in the value", i+1, k)
		}
		h.Add(k, dv)
	}
	return h, nil
}

// validKey reports whether k is an HTTP token (RFC 9110).
func validKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("!#$%&'*+-.^_`|~", r):
		default:
			return false
		}
	}
	return true
}

// ParseEndpoint checks an endpoint URL such as
// "https://collector.example:4318": http or https, with a host. A path is
// kept; a query string or fragment is refused, since OTLP endpoints take
// none and it would be dropped from spooled exports anyway. An *EndpointError
// says what is wrong in words a user can act on ("collector:4318" has no
// scheme; "grpc://..." is not a scheme the relay speaks); its message never
// shows a password given in the URL.
func ParseEndpoint(raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, &EndpointError{URL: raw, Reason: "empty"}
	}
	if !strings.Contains(raw, "://") {
		// url.Parse reads "collector:4318" as the scheme "collector".
		return nil, &EndpointError{URL: redact(raw), Reason: "no scheme: write http://" + redact(raw) + " (or https:// for TLS)"}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, &EndpointError{URL: redact(raw), Reason: "not a URL"}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, &EndpointError{URL: u.Redacted(), Reason: "unsupported scheme " + strconv.Quote(u.Scheme) + ": want an http:// or https:// URL (OTLP/HTTP)"}
	}
	if u.Host == "" {
		return nil, &EndpointError{URL: u.Redacted(), Reason: "no host"}
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, &EndpointError{URL: u.Redacted(), Reason: "a query string or fragment is not supported"}
	}
	return u, nil
}

// An EndpointError reports an endpoint that cannot be used.
type EndpointError struct {
	// URL is the endpoint as given, its password masked.
	URL    string
	Reason string
}

func (e *EndpointError) Error() string { return fmt.Sprintf("endpoint %q: %s", e.URL, e.Reason) }

// redact masks what precedes an '@' in a string that is not a usable URL,
// where a password would be.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Redacted()
	}
	if i := strings.LastIndexByte(raw, '@'); i >= 0 {
		return "xxxxx" + raw[i:]
	}
	return raw
}

// SignalURL returns the URL for signal's exports under base, as the OTel
// specification builds it from OTEL_EXPORTER_OTLP_ENDPOINT: the base path,
// without a trailing slash, then /v1/<signal>. For SignalUnknown it keeps
// the path given, under base's scheme and host.
func SignalURL(base *url.URL, signal spool.Signal, unknownPath string) string {
	u := *base
	u.User = base.User
	prefix := strings.TrimSuffix(base.Path, "/")
	switch signal {
	case spool.SignalTraces, spool.SignalMetrics, spool.SignalLogs:
		u.Path = prefix + "/v1/" + signal.String()
	default:
		u.Path = prefix + unknownPath
	}
	u.RawPath = ""
	return u.String()
}
