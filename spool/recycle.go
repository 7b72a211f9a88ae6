package spool

import "sync"

// Bodies handed out by Claim are read into pooled buffers, which the caller
// may give back with Recycle once nothing uses the body any more, which
// spares a drain an allocation per record, its zeroing, and the page faults
// of memory the runtime has just returned to the system. Callers that never
// recycle lose nothing but that.

// maxPooledBody bounds the buffers kept: larger records are read into
// memory of their own, not kept after.
const maxPooledBody = 256 << 10

var readBufs = sync.Pool{}

func getReadBuf(n int) *[]byte {
	if n <= maxPooledBody {
		if bp, ok := readBufs.Get().(*[]byte); ok && cap(*bp) >= n {
			*bp = (*bp)[:n]
			return bp
		}
		b := make([]byte, n, max(n, 16<<10))
		return &b
	}
	b := make([]byte, n)
	return &b
}

func putReadBuf(bp *[]byte) {
	if cap(*bp) <= maxPooledBody {
		readBufs.Put(bp)
	}
}

// Recycle gives back the memory of a record handed out by Claim, for a
// later Claim to reuse. The caller must not use r.Body, or anything sliced
// from it, afterwards; r.Body is set to nil. Recycling a record twice, or
// one not from Claim, does nothing.
func (s *Spool) Recycle(r *Record) {
	bp := r.buf
	r.buf, r.Body = nil, nil
	if bp != nil {
		putReadBuf(bp)
	}
}
