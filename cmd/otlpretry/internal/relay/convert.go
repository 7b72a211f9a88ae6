package relay

import (
	"errors"

	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/otlpretry/otlpretry/spool"
)

// otlpMessage is what the OTel Collector's pdata offers of an
// Export*ServiceRequest or Export*ServiceResponse: both OTLP encodings.
type otlpMessage interface {
	MarshalProto() ([]byte, error)
	UnmarshalProto([]byte) error
	MarshalJSON() ([]byte, error)
	UnmarshalJSON([]byte) error
}

func newRequest(signal spool.Signal) otlpMessage {
	switch signal {
	case spool.SignalTraces:
		return ptraceotlp.NewExportRequest()
	case spool.SignalMetrics:
		return pmetricotlp.NewExportRequest()
	case spool.SignalLogs:
		return plogotlp.NewExportRequest()
	}
	return nil
}

func newResponse(signal spool.Signal) otlpMessage {
	switch signal {
	case spool.SignalTraces:
		return ptraceotlp.NewExportResponse()
	case spool.SignalMetrics:
		return pmetricotlp.NewExportResponse()
	case spool.SignalLogs:
		return plogotlp.NewExportResponse()
	}
	return nil
}

var errNoSignal = errors.New("relay: no OTLP message for this signal")

// jsonToProtobuf turns an OTLP/JSON Export*ServiceRequest into its
// protobuf encoding, as the OTel Collector's OTLP/HTTP receiver reads
// JSON: trace and span IDs as hex strings (not protojson's base64), enums
// by name or number, 64-bit integers as strings or numbers, unknown
// fields ignored. A body it cannot read is a *BodyError.
func jsonToProtobuf(signal spool.Signal, body []byte) ([]byte, error) {
	m := newRequest(signal)
	if m == nil {
		return nil, errNoSignal
	}
	if err := m.UnmarshalJSON(body); err != nil {
		return nil, &BodyError{Format: "OTLP/JSON", Offset: -1, Reason: err.Error()}
	}
	return m.MarshalProto()
}

// responseJSON turns the protobuf Export*ServiceResponse of a gRPC
// upstream into OTLP/JSON for a client that sent JSON: "{}" when it is
// empty or unreadable, so that the client sees its export accepted.
func responseJSON(signal spool.Signal, reply []byte) []byte {
	m := newResponse(signal)
	if m == nil || len(reply) == 0 || m.UnmarshalProto(reply) != nil {
		return []byte("{}")
	}
	b, err := m.MarshalJSON()
	if err != nil {
		return []byte("{}")
	}
	return b
}
