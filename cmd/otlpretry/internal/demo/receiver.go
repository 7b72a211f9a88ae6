package demo

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"strconv"
	"time"

	collectorlogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	collectormetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Receiver is a small OTLP/HTTP receiver (protobuf, optionally gzipped) on
// 127.0.0.1 that counts distinct spans, metric data points and log records,
// and the copies of each it got more than once.
//
// It is written here rather than taken from internal/otlptest, whose
// Collector does the same and more, because otlptest is a test bench that
// imports "testing"; the command should not ship it.
type Receiver struct {
	ln    net.Listener
	srv   *http.Server
	tally *tally
}

const maxReceiveBytes = 64 << 20

// NewReceiver starts a Receiver on a free port of 127.0.0.1.
func NewReceiver() (*Receiver, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Receiver{ln: ln, tally: newTally()}
	r.srv = &http.Server{
		Handler:           http.HandlerFunc(r.handle),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// URL is the receiver's base URL.
func (r *Receiver) URL() string { return "http://" + r.ln.Addr().String() }

// Counts returns a snapshot.
func (r *Receiver) Counts() Counts { return r.tally.counts() }

// Close stops the receiver.
func (r *Receiver) Close() { _ = r.srv.Close() }

func (r *Receiver) handle(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var msg, resp proto.Message
	switch req.URL.Path {
	case "/v1/traces":
		msg, resp = &collectortrace.ExportTraceServiceRequest{}, &collectortrace.ExportTraceServiceResponse{}
	case "/v1/metrics":
		msg, resp = &collectormetrics.ExportMetricsServiceRequest{}, &collectormetrics.ExportMetricsServiceResponse{}
	case "/v1/logs":
		msg, resp = &collectorlogs.ExportLogsServiceRequest{}, &collectorlogs.ExportLogsServiceResponse{}
	default:
		http.NotFound(w, req)
		return
	}
	if mt, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type")); mt != "application/x-protobuf" {
		http.Error(w, "this receiver takes application/x-protobuf", http.StatusUnsupportedMediaType)
		return
	}
	body, err := readBody(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := proto.Unmarshal(body, msg); err != nil {
		http.Error(w, "malformed OTLP payload", http.StatusBadRequest)
		return
	}
	r.tally.count(msg)
	out, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	_, _ = w.Write(out)
}

func readBody(req *http.Request) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(req.Body, maxReceiveBytes+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxReceiveBytes {
		return nil, errors.New("body too large")
	}
	switch req.Header.Get("Content-Encoding") {
	case "", "identity":
		return raw, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(io.LimitReader(zr, maxReceiveBytes))
	}
	return nil, fmt.Errorf("unsupported Content-Encoding %q", req.Header.Get("Content-Encoding"))
}
