package relay

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/otlpenv"
	"github.com/otlpretry/otlpretry/spool"
)

func TestHeaderScopeSendsHeadersOnlyToTheirDestination(t *testing.T) {
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	dests := []otlpenv.Destination{
		{Signal: spool.SignalTraces, URL: mustURL("https://a.example/v1/traces"), Header: http.Header{"Authorization": {"Bearer A"}}},
		{Signal: spool.SignalMetrics, URL: mustURL("https://b.example/custom"), Header: http.Header{"Authorization": {"Bearer B"}, "X-Tenant": {"b"}}},
		{Signal: spool.SignalLogs, URL: mustURL("https://b.example/v1/logs")},
	}
	var seen http.Header
	scope := NewHeaderScope(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		seen = r.Header
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(""))}, nil
	}), dests)
	for _, c := range []struct {
		url, auth, tenant string
	}{
		{"https://a.example/v1/traces", "Bearer A", ""},
		{"https://A.EXAMPLE/v1/traces?k=v", "Bearer A", ""},
		{"https://b.example/custom", "Bearer B", "b"},
		{"https://b.example/v1/logs", "", ""},
		{"https://a.example/v1/metrics", "", ""},     // another path of A's host
		{"http://a.example/v1/traces", "", ""},       // another scheme
		{"https://a.example:8443/v1/traces", "", ""}, // another port
	} {
		req, _ := http.NewRequest("POST", c.url, nil)
		req.Header.Set("Authorization", "Bearer from-the-caller")
		if _, err := scope.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		want := c.auth
		if want == "" {
			want = "Bearer from-the-caller"
		}
		if seen.Get("Authorization") != want || seen.Get("X-Tenant") != c.tenant {
			t.Errorf("%s: sent with %v, want Authorization %q, X-Tenant %q", c.url, seen, want, c.tenant)
		}
		if req.Header.Get("Authorization") != "Bearer from-the-caller" || req.Header.Get("X-Tenant") != "" {
			t.Errorf("%s: the caller's request was modified: %v", c.url, req.Header)
		}
	}
}
