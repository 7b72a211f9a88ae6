// Package otlpenv reads the parts of the OpenTelemetry exporter
// configuration that the otlpretry command shares with the SDKs: the base
// endpoint URL, to which /v1/<signal> is appended, and the headers of
// OTEL_EXPORTER_OTLP_HEADERS.
package otlpenv

import (
	"fmt"
	"net/http"
	"net/url"
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

// ParseEndpoint checks a base endpoint URL such as
// "https://collector.example:4318": http or https, with a host. A path is
// kept as a prefix ("https://gw.example/otlp" sends traces to
// /otlp/v1/traces); a query string or fragment is refused, since OTLP
// endpoints take none and it would be dropped from spooled exports anyway.
func ParseEndpoint(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, fmt.Errorf("endpoint: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("endpoint %q: want an http:// or https:// URL", u.Redacted())
	}
	if u.Host == "" {
		return nil, fmt.Errorf("endpoint %q: no host", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("endpoint %q: a query string or fragment is not supported", u.Redacted())
	}
	return u, nil
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
