// Package wire walks the fields of a protobuf message as encoded, without
// its schema: what the spool's merged requests and the reading of an
// answer's partial_success need of an OTLP message.
package wire

import "google.golang.org/protobuf/encoding/protowire"

// Fields calls f, when not nil, with each field of the protobuf message b:
// its number, wire type and encoded value. It reports whether b is a
// sequence of complete fields and f accepted each; it stops at the first
// that is not.
func Fields(b []byte, f func(protowire.Number, protowire.Type, []byte) bool) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 || (f != nil && !f(num, typ, b[:m])) {
			return false
		}
		b = b[m:]
	}
	return true
}
