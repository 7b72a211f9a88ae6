package otlpenv

import (
	"errors"
	"strings"
	"testing"

	"github.com/otlpretry/otlpretry/spool"
)

func getenvOf(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestResolve(t *testing.T) {
	for _, c := range []struct {
		name  string
		flags Flags
		env   map[string]string
		// want is each signal's URL, From and Authorization header.
		want map[spool.Signal][3]string
	}{
		{
			name: "base variable",
			env:  map[string]string{EndpointVar: "http://c:4318", HeadersVar: "authorization=Bearer%20g"},
			want: map[spool.Signal][3]string{
				spool.SignalTraces:  {"http://c:4318/v1/traces", EndpointVar, "Bearer g"},
				spool.SignalMetrics: {"http://c:4318/v1/metrics", EndpointVar, "Bearer g"},
				spool.SignalLogs:    {"http://c:4318/v1/logs", EndpointVar, "Bearer g"},
			},
		},
		{
			name: "per-signal variables as given, per-signal headers replace",
			env: map[string]string{
				EndpointVar: "http://c:4318/otlp/", HeadersVar: "authorization=Bearer%20g",
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://t.example/custom/path",
				"OTEL_EXPORTER_OTLP_TRACES_HEADERS":  "authorization=Bearer%20t",
				"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT":   "https://l.example",
			},
			want: map[spool.Signal][3]string{
				spool.SignalTraces:  {"https://t.example/custom/path", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "Bearer t"},
				spool.SignalMetrics: {"http://c:4318/otlp/v1/metrics", EndpointVar, "Bearer g"},
				spool.SignalLogs:    {"https://l.example/", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "Bearer g"},
			},
		},
		{
			name:  "flags beat the environment, the signal's own flag beats --endpoint",
			flags: Flags{Endpoint: "http://f:4318", Signal: map[spool.Signal]string{spool.SignalMetrics: "http://m:9/m"}},
			env:   map[string]string{EndpointVar: "http://e:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/t"},
			want: map[spool.Signal][3]string{
				spool.SignalTraces:  {"http://f:4318/v1/traces", EndpointFlag, ""},
				spool.SignalMetrics: {"http://m:9/m", "--metrics-endpoint", ""},
				spool.SignalLogs:    {"http://f:4318/v1/logs", EndpointFlag, ""},
			},
		},
		{
			name: "only one signal",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://l:1/v1/logs"},
			want: map[spool.Signal][3]string{spool.SignalLogs: {"http://l:1/v1/logs", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", ""}},
		},
		{
			name: "same URL, same headers",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:1/all", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://x:1/all",
			},
			want: map[spool.Signal][3]string{
				spool.SignalTraces: {"http://x:1/all", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""},
				spool.SignalLogs:   {"http://x:1/all", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", ""},
			},
		},
	} {
		dests, err := Resolve(c.flags, getenvOf(c.env))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if len(dests) != len(c.want) {
			t.Errorf("%s: %d destinations, want %d", c.name, len(dests), len(c.want))
		}
		for _, d := range dests {
			got := [3]string{d.URL.String(), d.From, d.Header.Get("Authorization")}
			if got != c.want[d.Signal] {
				t.Errorf("%s: %v: %q, want %q", c.name, d.Signal, got, c.want[d.Signal])
			}
		}
	}
}

func TestResolveRefuses(t *testing.T) {
	for _, c := range []struct {
		name  string
		flags Flags
		env   map[string]string
		want  []string
	}{
		{"nothing", Flags{}, nil, []string{"no upstream: give --endpoint or set OTEL_EXPORTER_OTLP_ENDPOINT"}},
		{"base variable ends in /v1/traces", Flags{}, map[string]string{EndpointVar: "http://c:4318/v1/traces"},
			[]string{`OTEL_EXPORTER_OTLP_ENDPOINT "http://c:4318/v1/traces" is a base URL`, `set OTEL_EXPORTER_OTLP_ENDPOINT to "http://c:4318"`,
				"--traces-endpoint or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"}},
		{"base flag ends in /v1/metrics/", Flags{Endpoint: "https://u:p@c/otlp/v1/metrics/"}, nil,
			[]string{`--endpoint "https://u:xxxxx@c/otlp/v1/metrics/" is a base URL`, `set --endpoint to "https://u:xxxxx@c/otlp"`, "--metrics-endpoint or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"}},
		{"base without scheme", Flags{}, map[string]string{EndpointVar: "collector:4318"},
			[]string{`OTEL_EXPORTER_OTLP_ENDPOINT: endpoint "collector:4318": no scheme: write http://collector:4318 (or https:// for TLS)`}},
		{"IP without scheme", Flags{Endpoint: "10.0.0.1:4318"}, nil, []string{`--endpoint: endpoint "10.0.0.1:4318": no scheme`}},
		{"password without scheme", Flags{Endpoint: "user:secret@c:4318"}, nil, []string{`no scheme`, `xxxxx@c:4318`}},
		{"unsupported scheme", Flags{}, map[string]string{EndpointVar: "grpc://c:4317"},
			[]string{`OTEL_EXPORTER_OTLP_ENDPOINT: endpoint "grpc://c:4317": unsupported scheme "grpc": want an http:// or https:// URL`}},
		{"signal endpoint without scheme", Flags{}, map[string]string{"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "c:4318/v1/logs"},
			[]string{"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: ", "no scheme"}},
		{"signal flag with a query", Flags{Signal: map[spool.Signal]string{spool.SignalTraces: "http://c/v1/traces?x=1"}}, nil,
			[]string{"--traces-endpoint: ", "query string"}},
		{"bad signal headers", Flags{Endpoint: "http://c"}, map[string]string{"OTEL_EXPORTER_OTLP_METRICS_HEADERS": "novalue"},
			[]string{"OTEL_EXPORTER_OTLP_METRICS_HEADERS: header #1"}},
		{"one URL, two sets of headers", Flags{}, map[string]string{
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:1/all", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://x:1/all",
			"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "a=1",
		}, []string{"traces and metrics are both sent to http://x:1/all but with different headers (OTEL_EXPORTER_OTLP_TRACES_HEADERS, none)"}},
	} {
		_, err := Resolve(c.flags, getenvOf(c.env))
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", c.name, err, w)
			}
		}
		if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), ":p@") {
			t.Errorf("%s: the error shows a password: %v", c.name, err)
		}
	}
	_, err := Resolve(Flags{}, getenvOf(map[string]string{EndpointVar: "http://c/v1/logs"}))
	var pe *BaseSignalPathError
	if !errors.As(err, &pe) || pe.Signal != spool.SignalLogs {
		t.Errorf("%v: want a *BaseSignalPathError for logs", err)
	}
}

// For grpc, the endpoint gives the host and, by its scheme, the security;
// its path is ignored and /v1/<signal> is not appended, even to a base
// whose path ends in one. Each signal is its own destination, so two
// signals on one host may have different headers.
func TestResolveGRPC(t *testing.T) {
	dests, err := Resolve(Flags{}, getenvOf(map[string]string{
		EndpointVar: "http://c:4317/v1/traces", ProtocolVar: "grpc",
		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://M.example:443/ignored",
		"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL":    "http/protobuf",
		"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT":    "http://l:4318/v1/logs",
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS":   "a=1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		signal           spool.Signal
		protocol         Protocol
		url, target      string
		secure           bool
		stored, protFrom string
	}{
		{spool.SignalTraces, ProtocolGRPC, "http://c:4317", "c:4317", false,
			"grpc://c:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export", ProtocolVar},
		{spool.SignalMetrics, ProtocolGRPC, "https://M.example:443", "m.example:443", true,
			"grpcs://m.example:443/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", ProtocolVar},
		{spool.SignalLogs, ProtocolHTTPProtobuf, "http://l:4318/v1/logs", "", false, "", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"},
	} {
		var d *Destination
		for i := range dests {
			if dests[i].Signal == c.signal {
				d = &dests[i]
			}
		}
		if d == nil {
			t.Fatalf("%s: no destination", c.signal)
		}
		if d.Protocol != c.protocol || d.ProtocolFrom != c.protFrom || d.URL.String() != c.url {
			t.Errorf("%s: %s %q from %s, want %s %q from %s", c.signal, d.Protocol, d.URL, d.ProtocolFrom, c.protocol, c.url, c.protFrom)
		}
		if c.protocol != ProtocolGRPC {
			continue
		}
		if target, secure := d.GRPCTarget(); target != c.target || secure != c.secure {
			t.Errorf("%s: target %q secure %v, want %q %v", c.signal, target, secure, c.target, c.secure)
		}
		if got := d.StoredURL(); got != c.stored {
			t.Errorf("%s: StoredURL %q, want %q", c.signal, got, c.stored)
		}
	}

	// Different headers for two gRPC signals on one host: allowed.
	if _, err := Resolve(Flags{Endpoint: "http://c:4317", Protocol: "grpc"}, getenvOf(map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "a=2",
	})); err != nil {
		t.Errorf("per-signal headers on one gRPC host: %v", err)
	}
	// An unknown protocol is reported even for a signal with no endpoint.
	var pe *ProtocolError
	if _, err := Resolve(Flags{Endpoint: "http://c:4318"}, getenvOf(map[string]string{"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grcp"})); !errors.As(err, &pe) {
		t.Errorf("unknown protocol: %v, want a *ProtocolError", err)
	}
}
