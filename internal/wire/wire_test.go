package wire

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// TestFields: every complete field is seen in order; a message cut inside
// a field, or a malformed tag, is not a sequence of fields; f stops the
// walk.
func TestFields(t *testing.T) {
	msg := protowire.AppendTag(nil, 1, protowire.VarintType)
	msg = protowire.AppendVarint(msg, 300)
	msg = protowire.AppendTag(msg, 2, protowire.BytesType)
	msg = protowire.AppendBytes(msg, []byte("hi"))

	var seen []protowire.Number
	if !Fields(msg, func(num protowire.Number, _ protowire.Type, _ []byte) bool {
		seen = append(seen, num)
		return true
	}) || len(seen) != 2 || seen[0] != 1 || seen[1] != 2 {
		t.Errorf("fields seen %v, want [1 2]", seen)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		f    func(protowire.Number, protowire.Type, []byte) bool
		want bool
	}{
		{"empty", nil, nil, true},
		{"whole", msg, nil, true},
		{"cut inside a field", msg[:len(msg)-1], nil, false},
		{"bad tag", []byte{0x80}, nil, false},
		{"field number 0", []byte{0x00, 0x01}, nil, false},
		{"stopped by f", msg, func(protowire.Number, protowire.Type, []byte) bool { return false }, false},
	} {
		if got := Fields(tc.b, tc.f); got != tc.want {
			t.Errorf("%s: Fields = %v, want %v", tc.name, got, tc.want)
		}
	}
}
