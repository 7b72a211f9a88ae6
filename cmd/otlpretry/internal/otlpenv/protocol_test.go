package otlpenv

import (
	"errors"
	"strings"
	"testing"

	"github.com/otlpretry/otlpretry/spool"
)

func TestResolveProtocol(t *testing.T) {
	for _, c := range []struct {
		name     string
		flag     string
		env      map[string]string
		signal   spool.Signal
		want     Protocol
		wantFrom string
	}{
		{"default", "", nil, spool.SignalTraces, ProtocolHTTPProtobuf, ""},
		{"general variable", "", map[string]string{ProtocolVar: "http/json"}, spool.SignalLogs, ProtocolHTTPJSON, ProtocolVar},
		{"signal variable beats general", "", map[string]string{ProtocolVar: "http/json", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"},
			spool.SignalMetrics, ProtocolGRPC, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"},
		{"another signal's variable is not read", "", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"},
			spool.SignalTraces, ProtocolHTTPProtobuf, ""},
		{"flag beats both", "http/protobuf", map[string]string{ProtocolVar: "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
			spool.SignalTraces, ProtocolHTTPProtobuf, ProtocolFlag},
		{"spaces trimmed", " grpc ", nil, spool.SignalTraces, ProtocolGRPC, ProtocolFlag},
	} {
		got, from, err := ResolveProtocol(c.flag, c.signal, getenvOf(c.env))
		if err != nil || got != c.want || from != c.wantFrom {
			t.Errorf("%s: %q from %q, %v; want %q from %q", c.name, got, from, err, c.want, c.wantFrom)
		}
	}
}

func TestResolveProtocolErrors(t *testing.T) {
	for _, c := range []struct {
		name, flag string
		env        map[string]string
		want       string
	}{
		{"unknown flag", "http", nil, `--protocol: unknown protocol "http": want grpc, http/protobuf or http/json`},
		{"case matters", "GRPC", nil, `--protocol: unknown protocol "GRPC"`},
		{"hidden typo still reported", "grpc", map[string]string{ProtocolVar: "http/proto"},
			`OTEL_EXPORTER_OTLP_PROTOCOL: unknown protocol "http/proto"`},
		{"signal variable", "", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "json"},
			`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: unknown protocol "json"`},
	} {
		_, _, err := ResolveProtocol(c.flag, spool.SignalTraces, getenvOf(c.env))
		var pe *ProtocolError
		if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%s: %v, want a *ProtocolError starting %q", c.name, err, c.want)
		}
	}
}
