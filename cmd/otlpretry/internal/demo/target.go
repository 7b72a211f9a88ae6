package demo

import "fmt"

// The protocols the demo speaks, named as OTEL_EXPORTER_OTLP_PROTOCOL
// names them.
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// target is the receiver and the fault proxy in front of it, for one
// protocol: what the exporters send to and what the script switches.
type target interface {
	// endpoint is what the exporters are given: a base URL for HTTP, a
	// host:port for gRPC.
	endpoint() string
	// set plays a mode: Pass, Refuse, or Unavailable (the protocol's
	// "cannot take data now" answer).
	set(Mode) error
	counts() Counts
	close()
	// words names the Unavailable phase and the receiver in the output.
	words() wording
}

// wording is what the output calls a protocol's parts.
type wording struct {
	receiver    string // "a local <receiver>"
	unavailable string // the answer of the second outage phase
	phase       string // that phase's name on the status line
	event       string // the event line starting that phase
}

// newTarget starts the receiver and the fault proxy for protocol.
func newTarget(protocol string) (target, error) {
	switch protocol {
	case ProtocolHTTP:
		recv, err := NewReceiver()
		if err != nil {
			return nil, err
		}
		front, err := NewFront(recv.URL())
		if err != nil {
			recv.Close()
			return nil, err
		}
		return &httpTarget{recv: recv, front: front}, nil
	case ProtocolGRPC:
		recv, err := NewGRPCReceiver()
		if err != nil {
			return nil, err
		}
		front, err := NewTCPFront(recv.Addr())
		if err != nil {
			recv.Close()
			return nil, err
		}
		return &grpcTarget{recv: recv, front: front}, nil
	}
	return nil, fmt.Errorf("unknown protocol %q (want %q or %q)", protocol, ProtocolHTTP, ProtocolGRPC)
}

// httpTarget is the OTLP/HTTP receiver behind the HTTP Front, which
// refuses connections and answers 503 itself.
type httpTarget struct {
	recv  *Receiver
	front *Front
}

func (t *httpTarget) endpoint() string { return t.front.URL() }
func (t *httpTarget) set(m Mode) error { return t.front.SetMode(m) }
func (t *httpTarget) counts() Counts   { return t.recv.Counts() }
func (t *httpTarget) close()           { t.front.Close(); t.recv.Close() }
func (t *httpTarget) words() wording {
	return wording{
		receiver:    "OTLP receiver",
		unavailable: "HTTP 503",
		phase:       "HTTP 503",
		event:       "a proxy answers 503 Service Unavailable",
	}
}

// grpcTarget is the OTLP/gRPC receiver behind a TCPFront: the front
// refuses connections, the receiver answers Unavailable.
type grpcTarget struct {
	recv  *GRPCReceiver
	front *TCPFront
}

func (t *grpcTarget) endpoint() string { return t.front.Addr() }
func (t *grpcTarget) counts() Counts   { return t.recv.Counts() }
func (t *grpcTarget) close()           { t.front.Close(); t.recv.Close() }
func (t *grpcTarget) words() wording {
	return wording{
		receiver:    "OTLP/gRPC receiver",
		unavailable: "gRPC Unavailable",
		phase:       "Unavailable",
		event:       "the receiver answers gRPC status Unavailable",
	}
}

// set switches the receiver before opening the front, so that no export
// reaches a receiver in the previous phase's state.
func (t *grpcTarget) set(m Mode) error {
	switch m {
	case Refuse:
		return t.front.SetMode(Refuse)
	case Unavailable:
		t.recv.SetUnavailable(true)
	case Pass:
		t.recv.SetUnavailable(false)
	default:
		return fmt.Errorf("unknown mode %v", m)
	}
	return t.front.SetMode(Pass)
}
