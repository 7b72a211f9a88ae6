package otlpretry

import (
	"io"
	"mime"
	"net/http"

	collectorlogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

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
	var (
		msg proto.Message
		get func() (int64, string)
	)
	switch signal {
	case spool.SignalTraces:
		m := &collectortrace.ExportTraceServiceResponse{}
		msg, get = m, func() (int64, string) {
			return m.GetPartialSuccess().GetRejectedSpans(), m.GetPartialSuccess().GetErrorMessage()
		}
	case spool.SignalMetrics:
		m := &collectormetrics.ExportMetricsServiceResponse{}
		msg, get = m, func() (int64, string) {
			return m.GetPartialSuccess().GetRejectedDataPoints(), m.GetPartialSuccess().GetErrorMessage()
		}
	case spool.SignalLogs:
		m := &collectorlogs.ExportLogsServiceResponse{}
		msg, get = m, func() (int64, string) {
			return m.GetPartialSuccess().GetRejectedLogRecords(), m.GetPartialSuccess().GetErrorMessage()
		}
	default:
		return 0, ""
	}
	switch mt {
	case "application/json":
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, msg)
	case "application/x-protobuf", "application/protobuf":
		err = proto.Unmarshal(body, msg)
	default:
		return 0, ""
	}
	if err != nil {
		return 0, ""
	}
	return get()
}

func otlpMedia(mt string) bool {
	return mt == "application/json" || mt == "application/x-protobuf" || mt == "application/protobuf"
}
