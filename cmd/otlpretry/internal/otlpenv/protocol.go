package otlpenv

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/otlpretry/otlpretry/spool"
)

// Protocol is an OTLP transport protocol, named as OTEL_EXPORTER_OTLP_PROTOCOL
// names it.
type Protocol string

// The protocols of the OTel specification.
const (
	ProtocolGRPC         Protocol = "grpc"
	ProtocolHTTPProtobuf Protocol = "http/protobuf"
	ProtocolHTTPJSON     Protocol = "http/json"
)

// DefaultProtocol is the protocol when none is set: http/protobuf, the
// specification's default.
const DefaultProtocol = ProtocolHTTPProtobuf

// ProtocolVar is the variable of every signal's protocol; ProtocolFlag is
// the relay's flag for it.
const (
	ProtocolVar  = "OTEL_EXPORTER_OTLP_PROTOCOL"
	ProtocolFlag = "--protocol"
)

// SignalProtocolVar is the variable of signal's own protocol, such as
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL.
func SignalProtocolVar(s spool.Signal) string {
	return "OTEL_EXPORTER_OTLP_" + strings.ToUpper(s.String()) + "_PROTOCOL"
}

// A ProtocolError reports a protocol setting that names no OTLP protocol.
type ProtocolError struct {
	// From names the flag or variable that gave the value.
	From  string
	Value string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("%s: unknown protocol %s: want %s, %s or %s",
		e.From, strconv.Quote(e.Value), ProtocolGRPC, ProtocolHTTPProtobuf, ProtocolHTTPJSON)
}

// ParseProtocol reads a protocol name, spaces trimmed, case as the
// specification writes it ("grpc", "http/protobuf", "http/json"). from names
// the flag or variable, for the *ProtocolError.
func ParseProtocol(from, s string) (Protocol, error) {
	switch p := Protocol(strings.TrimSpace(s)); p {
	case ProtocolGRPC, ProtocolHTTPProtobuf, ProtocolHTTPJSON:
		return p, nil
	}
	return "", &ProtocolError{From: from, Value: s}
}

// ResolveProtocol returns the protocol of signal's upstream and the flag or
// variable it came from ("" for the default). The first set wins: flag
// (--protocol, for every signal), the signal's own variable
// (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, ...), OTEL_EXPORTER_OTLP_PROTOCOL,
// then DefaultProtocol. A value that names no protocol is an error, whether
// or not a setting of higher precedence would have hidden it: a typo in
// the environment is reported, not ignored.
func ResolveProtocol(flag string, s spool.Signal, getenv func(string) string) (Protocol, string, error) {
	candidates := []struct{ from, value string }{
		{ProtocolFlag, flag},
		{SignalProtocolVar(s), getenv(SignalProtocolVar(s))},
		{ProtocolVar, getenv(ProtocolVar)},
	}
	var (
		got  Protocol
		from string
	)
	for _, c := range candidates {
		if strings.TrimSpace(c.value) == "" {
			continue
		}
		p, err := ParseProtocol(c.from, c.value)
		if err != nil {
			return "", "", err
		}
		if got == "" {
			got, from = p, c.from
		}
	}
	if got == "" {
		return DefaultProtocol, "", nil
	}
	return got, from, nil
}
