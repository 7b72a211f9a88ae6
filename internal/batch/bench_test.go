package batch

import (
	"testing"

	"github.com/otlpretry/otlpretry/spool"
)

// BenchmarkPack packs a backlog of 10,000 stored exports of 8 KiB into
// requests of DefaultMaxBytes. It reports the requests built and the
// bytes of request bodies that are copies rather than the stored bodies
// themselves (copied-B/op): zero for uncompressed protobuf, whose merged
// body is sent from the records' buffers.
func BenchmarkPack(b *testing.B) {
	for _, enc := range []string{"", "gzip"} {
		name := "protobuf"
		if enc != "" {
			name += "+" + enc
		}
		b.Run(name+"/10000x8KiB", func(b *testing.B) {
			recs := traceRecords(b, 10000, 8<<10, enc)
			var stored int64
			for _, r := range recs {
				stored += int64(len(r.Body))
			}
			p := NewPacker(0)
			b.SetBytes(stored)
			b.ReportAllocs()
			var reqs []*Request
			for b.Loop() {
				reqs = p.Pack(recs)
			}
			b.ReportMetric(float64(len(reqs)), "requests/op")
			b.ReportMetric(float64(copied(reqs)), "copied-B/op")
		})
	}
}

// copied counts the body bytes of reqs that do not lie in a record's
// stored body.
func copied(reqs []*Request) int64 {
	var n int64
	for _, r := range reqs {
		for _, piece := range r.wire {
			if !inRecord(piece, r.records) {
				n += int64(len(piece))
			}
		}
	}
	return n
}

// inRecord reports whether piece is one of recs' stored bodies, the same
// memory.
func inRecord(piece []byte, recs []*spool.Record) bool {
	for _, r := range recs {
		if len(piece) == len(r.Body) && (len(piece) == 0 || &piece[0] == &r.Body[0]) {
			return true
		}
	}
	return false
}
