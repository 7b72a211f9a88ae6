package relay

import (
	"bytes"
	stdzlib "compress/zlib"
	"fmt"
	"io"
	"testing"

	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// BenchmarkCheck weighs the body check against a plain reference on the
// same bodies in one run, so that the ratio holds on a noisy machine: the
// ref sub-benchmarks walk with protowire field by field (refWalk) and
// inflate with a pooled reader into a bytes.Buffer (gzip) or a new
// standard library zlib reader (deflate).
//
//	go test -run '^$' -bench '^BenchmarkCheck$' -count 6 ./cmd/otlpretry/internal/relay/ | benchstat -col /impl -
func BenchmarkCheck(b *testing.B) {
	s := requestSchemas[spool.SignalTraces]
	for _, spans := range []int{20, 512} {
		pb, _ := otlptest.TraceBody(spans)
		gz, zl := gzipped(pb), zlibbed(pb)
		for _, c := range []struct {
			name     string
			ref, new func() error
		}{
			{"walk", func() error { return refCheckProtobuf(s, pb) }, func() error { return checkProtobuf(spool.SignalTraces, pb) }},
			{"gzip", func() error {
				plain, release, err := refInflateGzip(gz, DefaultMaxBodyBytes)
				if err != nil {
					return err
				}
				defer release()
				return refCheckProtobuf(s, plain)
			}, func() error {
				return checkBody(spool.SignalTraces, "application/x-protobuf", "gzip", gz, DefaultMaxBodyBytes)
			}},
			{"deflate", func() error {
				zr, err := stdzlib.NewReader(bytes.NewReader(zl))
				if err != nil {
					return err
				}
				var buf bytes.Buffer
				if _, err := buf.ReadFrom(io.LimitReader(zr, DefaultMaxBodyBytes+1)); err != nil {
					return err
				}
				return refCheckProtobuf(s, buf.Bytes())
			}, func() error {
				return checkBody(spool.SignalTraces, "application/x-protobuf", "deflate", zl, DefaultMaxBodyBytes)
			}},
		} {
			for _, impl := range []struct {
				name  string
				check func() error
			}{{"ref", c.ref}, {"new", c.new}} {
				b.Run(fmt.Sprintf("%s/spans=%d/impl=%s", c.name, spans, impl.name), func(b *testing.B) {
					b.SetBytes(int64(len(pb)))
					b.ReportAllocs()
					for range b.N {
						if err := impl.check(); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
