package otlpretry

import (
	"testing"
	"time"
)

func TestLogLimiterPerKind(t *testing.T) {
	h := newHarness(t)
	l := logLimiter{clock: h.clock, interval: time.Minute}
	if ok, _ := l.allow(); !ok {
		t.Fatal("first message held back")
	}
	for range 3 {
		if ok, _ := l.allow(); ok {
			t.Fatal("message let through within the interval")
		}
	}
	h.clock.Advance(time.Minute)
	if ok, held := l.allow(); !ok || held != 3 {
		t.Fatalf("after the interval: ok %v held %d, want true 3", ok, held)
	}
}
