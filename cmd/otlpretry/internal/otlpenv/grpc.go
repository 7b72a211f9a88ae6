package otlpenv

import (
	"strings"

	"github.com/otlpretry/otlpretry/spool"
)

// GRPCMethod is the full name of signal's OTLP/gRPC Export method, such as
// "/opentelemetry.proto.collector.trace.v1.TraceService/Export"; empty for
// a signal without one.
func GRPCMethod(s spool.Signal) string {
	switch s {
	case spool.SignalTraces:
		return "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
	case spool.SignalMetrics:
		return "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
	case spool.SignalLogs:
		return "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
	}
	return ""
}

// GRPCTarget is where an OTLP/gRPC destination's calls go, as the OTel
// specification reads a gRPC endpoint: target is the URL's host and port,
// lower-cased, for grpc.NewClient (without a port, gRPC's DNS resolver
// uses 443); secure is true for https (TLS), false for http (no TLS).
func (d Destination) GRPCTarget() (target string, secure bool) {
	return strings.ToLower(d.URL.Host), d.URL.Scheme == "https"
}

// StoredURL is the URL under which the otlpretry transport stores this
// destination's exports sent over OTLP/gRPC (grpc://host:port/<method>,
// grpcs:// once the connection is seen to use TLS), for
// otlpretry.WithEndpointHeaders.
func (d Destination) StoredURL() string {
	target, secure := d.GRPCTarget()
	scheme := "grpc"
	if secure {
		scheme = "grpcs"
	}
	return scheme + "://" + target + GRPCMethod(d.Signal)
}
