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

// Buffers are pooled by size class, so that a record is read into a
// buffer little larger than itself: what a drain holds in memory is then
// close to the bytes it sends. The classes go by 1 KiB up to 16 KiB, by
// 4 KiB up to 64 KiB and by 16 KiB up to maxPooledBody: a buffer is at
// most 1 KiB, or a quarter, larger than its record.
const readBufClasses = 16 + 12 + 12

var readBufs [readBufClasses]sync.Pool

// sizeClass returns the class of a record of n bytes (n <= maxPooledBody):
// its index in readBufs and its buffers' size.
func sizeClass(n int) (index, size int) {
	switch {
	case n <= 16<<10:
		c := max((n+1<<10-1)>>10, 1)
		return c - 1, c << 10
	case n <= 64<<10:
		c := (n + 4<<10 - 1) >> 12
		return 16 + c - 5, c << 12
	default:
		c := (n + 16<<10 - 1) >> 14
		return 28 + c - 5, c << 14
	}
}

func getReadBuf(n int) *[]byte {
	if n > maxPooledBody {
		b := make([]byte, n)
		return &b
	}
	i, size := sizeClass(n)
	if bp, ok := readBufs[i].Get().(*[]byte); ok {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, size)
	return &b
}

func putReadBuf(bp *[]byte) {
	c := cap(*bp)
	if c > maxPooledBody {
		return
	}
	if i, size := sizeClass(c); size == c {
		readBufs[i].Put(bp)
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
