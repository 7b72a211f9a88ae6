package otlpretry

import "time"

// backoff grows the wait between failed attempts: initial, doubling, never
// above max. Hand-written rather than taken from cenkalti/backoff because
// there the jitter is applied after the cap, so a wait can exceed the
// maximum by half; here the cap bounds the wait itself.
type backoff struct {
	initial, max time.Duration
	jitter       func() float64 // in [0, 1)
	current      time.Duration  // 0 after a success
}

// next returns the wait after one more failure: the current step less up to
// half of it, at random, so that many clients spread out.
func (b *backoff) next() time.Duration {
	switch {
	case b.current == 0:
		b.current = b.initial
	case b.current < b.max/2:
		b.current *= 2
	default:
		b.current = b.max
	}
	return b.current - time.Duration(float64(b.current)*0.5*b.jitter())
}

func (b *backoff) reset() { b.current = 0 }
