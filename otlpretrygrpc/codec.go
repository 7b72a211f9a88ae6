package otlpretrygrpc

import (
	"fmt"

	"google.golang.org/protobuf/proto"
)

// rawCodec sends stored exports as they are, without decoding and
// encoding them again: a []byte is the serialized message. Replies and
// other protobuf messages go through the protobuf encoding; a reply into
// *[]byte keeps its bytes. It names itself "proto", so the server sees
// the usual content-subtype.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case []byte:
		return m, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("otlpretry: raw codec cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *[]byte:
		*m = append((*m)[:0], data...)
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("otlpretry: raw codec cannot unmarshal into %T", v)
}

func (rawCodec) Name() string { return "proto" }
