package otlpenv

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/otlpretry/otlpretry/spool"
)

func TestParseHeaders(t *testing.T) {
	for _, c := range []struct {
		in   string
		want http.Header
	}{
		{"", http.Header{}},
		{"  ", http.Header{}},
		{"api-key=abc", http.Header{"Api-Key": {"abc"}}},
		{" a = 1 , b=two%20words ", http.Header{"A": {"1"}, "B": {"two words"}}},
		{"authorization=Bearer%20x%2By", http.Header{"Authorization": {"Bearer x+y"}}},
		{"k=a+b", http.Header{"K": {"a+b"}}},      // '+' is not a space here
		{"k=v=w", http.Header{"K": {"v=w"}}},      // split at the first '='
		{"k=1,k=2", http.Header{"K": {"1", "2"}}}, // repeated keys add
		{"k=", http.Header{"K": {""}}},
		{"a=1,,b=2", http.Header{"A": {"1"}, "B": {"2"}}},
	} {
		got, err := ParseHeaders(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: %v, want %v", c.in, got, c.want)
		}
	}
	for _, in := range []string{"novalue", "=v", "bad key=v", "k=%zz-secret", "k=a%0Db"} {
		_, err := ParseHeaders(in)
		if err == nil {
			t.Errorf("%q: no error", in)
			continue
		}
		if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "%zz") {
			t.Errorf("%q: the error shows the value: %v", in, err)
		}
	}
}

func TestSignalURL(t *testing.T) {
	for _, c := range []struct {
		base   string
		signal spool.Signal
		path   string
		want   string
	}{
		{"http://c:4318", spool.SignalTraces, "", "http://c:4318/v1/traces"},
		{"http://c:4318/", spool.SignalMetrics, "", "http://c:4318/v1/metrics"},
		{"https://gw.example/otlp", spool.SignalLogs, "", "https://gw.example/otlp/v1/logs"},
		{"https://gw.example/otlp/", spool.SignalTraces, "", "https://gw.example/otlp/v1/traces"},
		{"http://c:4318", spool.SignalUnknown, "/custom/path", "http://c:4318/custom/path"},
	} {
		u, err := ParseEndpoint(c.base)
		if err != nil {
			t.Fatal(err)
		}
		if got := SignalURL(u, c.signal, c.path); got != c.want {
			t.Errorf("SignalURL(%s, %v) = %s, want %s", c.base, c.signal, got, c.want)
		}
	}
	for _, bad := range []string{"", "localhost:4318", "ftp://c", "http://", "http://c:4318?x=1", "http://c/#f"} {
		if _, err := ParseEndpoint(bad); err == nil {
			t.Errorf("ParseEndpoint(%q): no error", bad)
		}
	}
}
