package otlpretry

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/otlpretry/otlpretry/internal/wire"
	"github.com/otlpretry/otlpretry/spool"
)

// maxResponseBody bounds what is read of a 2xx answer's body for its
// partial_success: an Export*ServiceResponse is a count and a message.
const maxResponseBody = 64 << 10

// partialSuccess reads the partial_success of a 2xx answer to an export of
// signal sent as contentType: how many spans, data points or log records
// the endpoint says it dropped, and its message. It reads at most
// maxResponseBody bytes of the body and leaves it for the caller to close.
// An answer that is empty, of another type or unreadable says nothing was
// dropped: the OTLP specification makes an empty body a full success.
func partialSuccess(resp *http.Response, signal spool.Signal, contentType string) (rejected int64, message string) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil || len(body) == 0 {
		return 0, ""
	}
	// The answer's own media type when it names one of OTLP's, else the
	// request's: the specification answers in the request's encoding, and
	// some servers label a body they did not type as octet-stream.
	mt, _, _ := mime.ParseMediaType(contentType)
	if rt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err == nil && otlpMedia(rt) {
		mt = rt
	}
	names, ok := partialNames[signal]
	if !ok {
		return 0, ""
	}
	switch mt {
	case "application/json":
		return partialJSON(body, names)
	case "application/x-protobuf", "application/protobuf":
		return partialProtobuf(body)
	}
	return 0, ""
}

func otlpMedia(mt string) bool {
	return mt == "application/json" || mt == "application/x-protobuf" || mt == "application/protobuf"
}

// The fields of Export{Trace,Metrics,Logs}ServiceResponse that
// partialSuccess reads. The three messages are laid out alike: the
// response's field 1 is partial_success, whose field 1 is the int64 count
// of what was rejected and field 2 the error message; only the count's
// name differs.
const (
	fieldPartialSuccess = 1
	fieldRejected       = 1
	fieldErrorMessage   = 2
)

// partialNames are the JSON names of each signal's rejected count: OTLP
// JSON's lowerCamelCase and the proto field's own name, both of which
// protobuf's JSON mapping accepts.
var partialNames = map[spool.Signal][2]string{
	spool.SignalTraces:  {"rejectedSpans", "rejected_spans"},
	spool.SignalMetrics: {"rejectedDataPoints", "rejected_data_points"},
	spool.SignalLogs:    {"rejectedLogRecords", "rejected_log_records"},
}

// partialProtobuf reads partial_success from a protobuf-encoded response.
// As protobuf does, the last value of a field wins, occurrences of the
// partial_success message merge, and a field of an unexpected wire type is
// skipped as unknown. A malformed message, or a message that is not UTF-8,
// says nothing was dropped.
func partialProtobuf(b []byte) (rejected int64, message string) {
	ok := wire.Fields(b, func(num protowire.Number, typ protowire.Type, v []byte) bool {
		if num != fieldPartialSuccess || typ != protowire.BytesType {
			return true
		}
		msg, n := protowire.ConsumeBytes(v)
		if n < 0 {
			return false
		}
		return wire.Fields(msg, func(num protowire.Number, typ protowire.Type, v []byte) bool {
			switch {
			case num == fieldRejected && typ == protowire.VarintType:
				x, n := protowire.ConsumeVarint(v)
				rejected = int64(x)
				return n >= 0
			case num == fieldErrorMessage && typ == protowire.BytesType:
				s, n := protowire.ConsumeBytes(v)
				message = string(s)
				return n >= 0 && utf8.Valid(s)
			}
			return true
		})
	})
	if !ok {
		return 0, ""
	}
	return rejected, message
}

// partialJSON reads partialSuccess from an OTLP JSON response: fields by
// their lowerCamelCase or proto name, unknown ones ignored, the int64
// count as a JSON number or string. Anything malformed says nothing was
// dropped.
func partialJSON(b []byte, rejectedNames [2]string) (rejected int64, message string) {
	var resp map[string]json.RawMessage
	if json.Unmarshal(b, &resp) != nil {
		return 0, ""
	}
	var ps map[string]json.RawMessage
	if raw := jsonField(resp, "partialSuccess", "partial_success"); raw == nil || json.Unmarshal(raw, &ps) != nil {
		return 0, "" // absent, null or not an object
	}
	if raw := jsonField(ps, rejectedNames[0], rejectedNames[1]); raw != nil {
		n, ok := jsonInt64(raw)
		if !ok {
			return 0, ""
		}
		rejected = n
	}
	if raw := jsonField(ps, "errorMessage", "error_message"); raw != nil && json.Unmarshal(raw, &message) != nil {
		return 0, ""
	}
	return rejected, message
}

// jsonField returns the value of an object's field by either name, the
// first name winning; nil when absent.
func jsonField(obj map[string]json.RawMessage, name, alt string) json.RawMessage {
	if v, ok := obj[name]; ok {
		return v
	}
	return obj[alt]
}

// jsonInt64 reads an int64 as protobuf's JSON mapping writes it, a
// decimal string, or as a JSON number; null is zero.
func jsonInt64(raw json.RawMessage) (int64, bool) {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return 0, false
	}
	var s string
	switch x := v.(type) {
	case nil:
		return 0, true
	case string:
		s = x
	case float64:
		s = string(raw)
	default:
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
