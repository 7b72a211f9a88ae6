package otlpretry

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry/spool"
)

// partialAnswer is a 2xx answer with body, typed ct.
func partialAnswer(ct string, body []byte) *http.Response {
	h := http.Header{}
	if ct != "" {
		h.Set("Content-Type", ct)
	}
	return &http.Response{StatusCode: 200, Header: h, Body: io.NopCloser(bytes.NewReader(body))}
}

// TestPartialSuccess: the rejected count and message of each signal's
// response, in protobuf and in OTLP JSON, as the collector's generated
// types encode them and as other servers may write them.
func TestPartialSuccess(t *testing.T) {
	traces := &coltrace.ExportTraceServiceResponse{PartialSuccess: &coltrace.ExportTracePartialSuccess{RejectedSpans: 3, ErrorMessage: "bad span"}}
	metrics := &colmetrics.ExportMetricsServiceResponse{PartialSuccess: &colmetrics.ExportMetricsPartialSuccess{RejectedDataPoints: 1 << 40, ErrorMessage: "too old"}}
	logs := &collogs.ExportLogsServiceResponse{PartialSuccess: &collogs.ExportLogsPartialSuccess{RejectedLogRecords: 2}}
	pb := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	js := func(m proto.Message) []byte {
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Two partial_success fields: protobuf merges them, the last count and
	// message win.
	merged := append(pb(traces), pb(&coltrace.ExportTraceServiceResponse{PartialSuccess: &coltrace.ExportTracePartialSuccess{RejectedSpans: 5}})...)
	// A known field of another wire type is an unknown field: skipped.
	wrongType := protowire.AppendTag(nil, 1, protowire.VarintType)
	wrongType = protowire.AppendVarint(wrongType, 7)
	wrongType = append(wrongType, pb(traces)...)
	// An unknown field before partial_success.
	unknown := protowire.AppendTag(nil, 9, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte("later version"))
	unknown = append(unknown, pb(logs)...)
	// A message that is not UTF-8.
	badUTF8 := protowire.AppendTag(nil, 1, protowire.BytesType)
	inner := protowire.AppendTag(nil, 1, protowire.VarintType)
	inner = protowire.AppendVarint(inner, 4)
	inner = protowire.AppendTag(inner, 2, protowire.BytesType)
	inner = protowire.AppendBytes(inner, []byte{0xff, 0xfe})
	badUTF8 = protowire.AppendBytes(badUTF8, inner)

	for _, tc := range []struct {
		name     string
		signal   spool.Signal
		reqCT    string // the request's Content-Type
		respCT   string // the answer's
		body     []byte
		rejected int64
		message  string
	}{
		{"traces protobuf", spool.SignalTraces, "application/x-protobuf", "application/x-protobuf", pb(traces), 3, "bad span"},
		{"metrics protobuf", spool.SignalMetrics, "application/x-protobuf", "application/x-protobuf", pb(metrics), 1 << 40, "too old"},
		{"logs protobuf", spool.SignalLogs, "application/x-protobuf", "application/protobuf", pb(logs), 2, ""},
		{"answer untyped: the request's encoding", spool.SignalTraces, "application/x-protobuf", "application/octet-stream", pb(traces), 3, "bad span"},
		{"protobuf merged occurrences", spool.SignalTraces, "application/x-protobuf", "", merged, 5, "bad span"},
		{"protobuf wrong wire type skipped", spool.SignalTraces, "application/x-protobuf", "", wrongType, 3, "bad span"},
		{"protobuf unknown field skipped", spool.SignalLogs, "application/x-protobuf", "", unknown, 2, ""},
		{"protobuf empty partial success", spool.SignalTraces, "application/x-protobuf", "", pb(&coltrace.ExportTraceServiceResponse{}), 0, ""},
		{"protobuf truncated", spool.SignalTraces, "application/x-protobuf", "", pb(traces)[:5], 0, ""},
		{"protobuf garbage", spool.SignalTraces, "application/x-protobuf", "", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 0, ""},
		{"protobuf message not UTF-8", spool.SignalTraces, "application/x-protobuf", "", badUTF8, 0, ""},
		{"traces JSON", spool.SignalTraces, "application/json", "application/json", js(traces), 3, "bad span"},
		{"metrics JSON (count as string)", spool.SignalMetrics, "application/json", "application/json; charset=utf-8", js(metrics), 1 << 40, "too old"},
		{"logs JSON", spool.SignalLogs, "application/json", "", js(logs), 2, ""},
		{"JSON count as number", spool.SignalTraces, "application/json", "", []byte(`{"partialSuccess":{"rejectedSpans":7,"errorMessage":"x"}}`), 7, "x"},
		{"JSON proto names", spool.SignalMetrics, "application/json", "", []byte(`{"partial_success":{"rejected_data_points":"9","error_message":"y"}}`), 9, "y"},
		{"JSON unknown fields", spool.SignalLogs, "application/json", "", []byte(`{"extra":[1,2],"partialSuccess":{"rejectedLogRecords":"4","more":{}}}`), 4, ""},
		{"JSON another signal's count", spool.SignalTraces, "application/json", "", []byte(`{"partialSuccess":{"rejectedLogRecords":"4"}}`), 0, ""},
		{"JSON null partial success", spool.SignalTraces, "application/json", "", []byte(`{"partialSuccess":null}`), 0, ""},
		{"JSON empty object", spool.SignalTraces, "application/json", "", []byte(`{}`), 0, ""},
		{"JSON count not an integer", spool.SignalTraces, "application/json", "", []byte(`{"partialSuccess":{"rejectedSpans":"many"}}`), 0, ""},
		{"JSON count a fraction", spool.SignalTraces, "application/json", "", []byte(`{"partialSuccess":{"rejectedSpans":1.5}}`), 0, ""},
		{"JSON count an object", spool.SignalTraces, "application/json", "", []byte(`{"partialSuccess":{"rejectedSpans":{}}}`), 0, ""},
		{"JSON message not a string", spool.SignalTraces, "application/json", "", []byte(`{"partialSuccess":{"rejectedSpans":1,"errorMessage":5}}`), 0, ""},
		{"JSON partial success not an object", spool.SignalTraces, "application/json", "", []byte(`{"partialSuccess":[1]}`), 0, ""},
		{"JSON garbage", spool.SignalTraces, "application/json", "", []byte(`{"partialSuccess":{"rejectedSpans":`), 0, ""},
		{"JSON not an object", spool.SignalTraces, "application/json", "", []byte(`"text"`), 0, ""},
		{"empty body", spool.SignalTraces, "application/x-protobuf", "", nil, 0, ""},
		{"another media type", spool.SignalTraces, "text/plain", "text/plain", pb(traces), 0, ""},
		{"unknown signal", spool.SignalUnknown, "application/x-protobuf", "", pb(traces), 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rejected, message := partialSuccess(partialAnswer(tc.respCT, tc.body), tc.signal, tc.reqCT)
			if rejected != tc.rejected || message != tc.message {
				t.Errorf("partialSuccess = %d, %q; want %d, %q", rejected, message, tc.rejected, tc.message)
			}
		})
	}
}

// FuzzPartialSuccess: no answer body makes partialSuccess panic, in
// either encoding.
func FuzzPartialSuccess(f *testing.F) {
	f.Add([]byte{0x0a, 0x04, 0x08, 0x03, 0x12, 0x00}, false)
	f.Add([]byte(`{"partialSuccess":{"rejectedSpans":"3","errorMessage":"x"}}`), true)
	f.Fuzz(func(t *testing.T, body []byte, json bool) {
		ct := "application/x-protobuf"
		if json {
			ct = "application/json"
		}
		for _, s := range []spool.Signal{spool.SignalTraces, spool.SignalMetrics, spool.SignalLogs} {
			partialSuccess(partialAnswer(ct, body), s, ct)
		}
	})
}
