package relay

import (
	"net/http"

	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/otlpenv"
)

// HeaderScope is the RoundTripper under the relay's otlpretry.Transport:
// it adds to each request leaving the process the headers configured for
// its destination, and to a request for any other URL none. Every request
// is covered this way, live or from the spool, of this run or left by an
// earlier one, so a destination's credentials never reach another.
// OTLP/gRPC destinations are left out: their headers go as the metadata
// of their calls.
//
// The relay's own requests carry no configured headers: the transport
// remembers a live request's headers by endpoint, in memory, and would
// otherwise only repeat what this adds.
type HeaderScope struct {
	next  http.RoundTripper
	dests []otlpenv.Destination
}

var _ http.RoundTripper = (*HeaderScope)(nil)

// NewHeaderScope returns a HeaderScope over next for dests. If next is nil,
// http.DefaultTransport is used.
func NewHeaderScope(next http.RoundTripper, dests []otlpenv.Destination) *HeaderScope {
	if next == nil {
		next = http.DefaultTransport
	}
	return &HeaderScope{next: next, dests: dests}
}

// RoundTrip sends req with its destination's headers set, replacing any of
// the same names; req itself is not modified.
func (h *HeaderScope) RoundTrip(req *http.Request) (*http.Response, error) {
	for _, d := range h.dests {
		if len(d.Header) == 0 || d.Protocol == otlpenv.ProtocolGRPC || !otlpenv.SameDestination(d.URL, req.URL) {
			continue
		}
		out := *req
		out.Header = make(http.Header, len(req.Header)+len(d.Header))
		for k, v := range req.Header {
			out.Header[k] = v
		}
		for k, v := range d.Header {
			out.Header[k] = v
		}
		return h.next.RoundTrip(&out)
	}
	return h.next.RoundTrip(req)
}

// CloseIdleConnections closes next's idle connections, when it has any.
func (h *HeaderScope) CloseIdleConnections() {
	if ci, ok := h.next.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
