package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// The limit holds exports while told the endpoint is down (answering 200
// without sending anything), and delivers every one, in order of arrival
// for a single worker, once released.
func TestOracleHoldsThenDelivers(t *testing.T) {
	coll := otlptest.StartCollector(t)
	o := newOracle(1, 0, slog.New(slog.DiscardHandler))
	defer o.close()
	client := &http.Client{Transport: o}

	o.hold()
	var want int
	for i := range 5 {
		body, _ := otlptest.TraceBody(i + 1)
		want += i + 1
		resp, err := client.Post(coll.Endpoint(otlptest.Traces), "application/x-protobuf", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("held export answered %d", resp.StatusCode)
		}
	}
	if n := coll.Requests("/v1/traces"); n != 0 {
		t.Fatalf("%d requests reached the receiver while held", n)
	}
	o.release()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := coll.WaitSpans(ctx, want); err != nil {
		t.Fatal(err)
	}
	if d := coll.SpanDuplicates(); d != 0 {
		t.Errorf("%d duplicates", d)
	}
	// Released and empty: exports go straight through.
	body, _ := otlptest.TraceBody(1)
	resp, err := client.Post(coll.Endpoint(otlptest.Traces), "application/x-protobuf", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := coll.WaitSpans(ctx, want+1); err != nil {
		t.Fatal(err)
	}
}

// With a merge bound the limit packs consecutive held protobuf exports
// into requests that fit the bound, oldest first, and sends a compressed
// export on its own: every span arrives once, in fewer requests.
func TestOracleMergesHeldExports(t *testing.T) {
	body, _ := otlptest.TraceBody(3)
	for _, tc := range []struct {
		name      string
		bound     int
		gzipAfter bool // one gzip export after the protobuf ones
		requests  int
	}{
		{"one export per request", 0, false, 6},
		{"two per request", 2 * len(body), false, 3},
		{"all in one", 1 << 20, false, 1},
		{"a compressed export breaks the run", 1 << 20, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			coll := otlptest.StartCollector(t)
			o := newOracle(1, tc.bound, slog.New(slog.DiscardHandler))
			defer o.close()
			client := &http.Client{Transport: o}
			o.hold()
			post := func(b []byte, encoding string) {
				req, err := http.NewRequest(http.MethodPost, coll.Endpoint(otlptest.Traces), bytes.NewReader(b))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/x-protobuf")
				if encoding != "" {
					req.Header.Set("Content-Encoding", encoding)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			n := 6
			if tc.gzipAfter {
				n = 5
			}
			var want int
			for range n {
				b, _ := otlptest.TraceBody(3)
				post(b, "")
				want += 3
			}
			if tc.gzipAfter {
				b, _ := otlptest.TraceBody(3)
				var zb bytes.Buffer
				zw := gzip.NewWriter(&zb)
				_, _ = zw.Write(b)
				_ = zw.Close()
				post(zb.Bytes(), "gzip")
				want += 3
			}
			o.release()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := coll.WaitSpans(ctx, want); err != nil {
				t.Fatal(err)
			}
			if err := coll.WaitRequests(ctx, "/v1/traces", tc.requests); err != nil {
				t.Fatal(err)
			}
			if got := coll.Requests("/v1/traces"); got != tc.requests {
				t.Errorf("%d requests, want %d", got, tc.requests)
			}
			if d := coll.SpanDuplicates(); d != 0 {
				t.Errorf("%d duplicates", d)
			}
		})
	}
}

func TestSeqIDs(t *testing.T) {
	g := &seqIDs{prefix: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}}
	for i := range uint64(3) {
		tid, sid := g.NewIDs(t.Context())
		if !bytes.Equal(tid[:8], g.prefix[:]) || binary.BigEndian.Uint64(tid[8:]) != i || binary.BigEndian.Uint64(sid[:]) != i+1 {
			t.Fatalf("span %d: trace %x span %x", i, tid, sid)
		}
	}
	if c := g.NewSpanID(t.Context(), [16]byte{}); binary.BigEndian.Uint64(c[:])>>63 != 1 {
		t.Errorf("child span ID %x collides with the root span IDs' range", c)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-endpoint", "http://127.0.0.1:1/v1/traces"},                               // no prefix
		{"-prefix", "0102030405060708"},                                             // no endpoint
		{"-prefix", "01", "-endpoint", "http://127.0.0.1:1/v1/traces"},              // short prefix
		{"-prefix", "0102030405060708", "-endpoint", "x", "-exporter", "otlpretry"}, // no -dir
		{"-prefix", "0102030405060708", "-endpoint", "x", "-rate", "0"},
		{"-prefix", "0102030405060708", "-endpoint", "x", "-protocol", "thrift"},
		{"-prefix", "0102030405060708", "-endpoint", "x", "-protocol", "grpc", "-exporter", "limit"}, // the limit is HTTP only
	} {
		var stderr bytes.Buffer
		if code := run(args, strings.NewReader(""), io.Discard, &stderr); code != 2 {
			t.Errorf("run(%q) = %d, want 2 (%s)", args, code, stderr.String())
		}
	}
}

// A full app run against a receiver: start, produce, stop; every span
// arrives with the IDs the driver expects.
func TestAppProducesNamedSpans(t *testing.T) {
	coll := otlptest.StartCollector(t)
	prefix := [8]byte{9, 9, 9, 9, 9, 9, 9, 9}
	o := options{exporter: "plain", endpoint: coll.Endpoint(otlptest.Traces), rate: 1000, spans: 300, prefix: prefix, concurrency: 1}
	stdin := &feeder{first: []byte("start\n"), stop: make(chan struct{})}
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- app(o, stdin, io.Discard, &stderr) }()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err := coll.WaitSpans(ctx, 300)
	close(stdin.stop) // end of input: the app stops as if told to
	if err != nil {
		<-done
		t.Fatalf("%v; stderr: %s", err, stderr.String())
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range uint64(300) {
		var tid [16]byte
		var sid [8]byte
		copy(tid[:8], prefix[:])
		binary.BigEndian.PutUint64(tid[8:], i)
		binary.BigEndian.PutUint64(sid[:], i+1)
		if !coll.HasSpan(tid, sid) {
			t.Fatalf("span %d not received", i)
		}
	}
}

// Over gRPC, with the plain exporter and with otlpretry's DialOption,
// every span reaches a gRPC receiver with the IDs the driver expects, and
// otlpretry's Shutdown leaves nothing behind.
func TestAppOverGRPC(t *testing.T) {
	for _, exporter := range []string{"plain", "otlpretry"} {
		t.Run(exporter, func(t *testing.T) {
			coll := otlptest.StartGRPCCollector(t)
			prefix := [8]byte{7, 7, 7, 7, 7, 7, 7, 7}
			o := options{exporter: exporter, protocol: "grpc", endpoint: "http://" + coll.Addr(), dir: t.TempDir(),
				rate: 1000, spans: 300, prefix: prefix, concurrency: 1}
			stdin := &feeder{first: []byte("start\n"), stop: make(chan struct{})}
			var stderr bytes.Buffer
			done := make(chan error, 1)
			go func() { done <- app(o, stdin, io.Discard, &stderr) }()
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			err := coll.Wait(ctx, "300 spans", func(c *otlptest.GRPCCollector) bool { return c.Spans() >= 300 })
			close(stdin.stop)
			if err != nil {
				<-done
				t.Fatalf("%v; stderr: %s", err, stderr.String())
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			for i := range uint64(300) {
				var tid [16]byte
				var sid [8]byte
				copy(tid[:8], prefix[:])
				binary.BigEndian.PutUint64(tid[8:], i)
				binary.BigEndian.PutUint64(sid[:], i+1)
				if !coll.HasSpan(tid, sid) {
					t.Fatalf("span %d not received", i)
				}
			}
		})
	}
}

// feeder yields first, then blocks until stop is closed, then ends: a
// driver that sent one command and went away.
type feeder struct {
	first []byte
	stop  chan struct{}
}

func (f *feeder) Read(p []byte) (int, error) {
	if len(f.first) > 0 {
		n := copy(p, f.first)
		f.first = f.first[n:]
		return n, nil
	}
	<-f.stop
	return 0, io.EOF
}
