package batch

import (
	"testing"

	"github.com/otlpretry/otlpretry/internal/retry"
)

// round fills the window, as a lane with a backlog does, then releases
// every ticket with f, as when one round trip's answers come back. It
// returns how many requests went out.
func round(w *Window, f Feedback) int {
	var tickets []Ticket
	for {
		t, ok := w.Acquire()
		if !ok {
			break
		}
		tickets = append(tickets, t)
	}
	for _, t := range tickets {
		w.Release(t, f)
	}
	return len(tickets)
}

func TestWindowDefaults(t *testing.T) {
	w := NewWindow(0, 0)
	if w.Limit() != DefaultInitialWindow {
		t.Fatalf("initial limit %d, want %d", w.Limit(), DefaultInitialWindow)
	}
	for range 4 {
		if _, ok := w.Acquire(); !ok {
			t.Fatal("a place below the limit refused")
		}
	}
	if _, ok := w.Acquire(); ok {
		t.Fatal("a fifth place given in a window of 4")
	}
	if w.InFlight() != 4 {
		t.Fatalf("in flight %d", w.InFlight())
	}
	if got := NewWindow(50, 8).Limit(); got != 8 {
		t.Fatalf("initial above max: limit %d, want 8", got)
	}
}

func TestWindowSlowStartDoublesToItsBound(t *testing.T) {
	w := NewWindow(4, 32)
	for _, want := range []int{4, 8, 16, 32, 32, 32} {
		if got := round(w, Success); got != want {
			t.Fatalf("round sent %d, want %d", got, want)
		}
	}
}

// TestWindowGrowsOnePerRoundTripAfterCongestion: past a congestion the
// window grows by one per round trip, from half the size it had.
func TestWindowGrowsOnePerRoundTripAfterCongestion(t *testing.T) {
	w := NewWindow(16, 32)
	round(w, Congestion) // 16 -> 8, threshold 8
	for want := 8; want <= 32; want++ {
		if got := round(w, Success); got != want {
			t.Fatalf("round sent %d, want %d", got, want)
		}
	}
	if got := round(w, Success); got != 32 {
		t.Fatalf("round sent %d past the bound 32", got)
	}
}

func TestWindowDoesNotGrowWhenNotInUse(t *testing.T) {
	w := NewWindow(8, 32)
	// One request at a time: the window is not what limits the rate.
	for range 100 {
		tk, _ := w.Acquire()
		w.Release(tk, Success)
	}
	if w.Limit() != 8 {
		t.Fatalf("limit %d after successes at 1 of 8 in flight, want 8", w.Limit())
	}
}

func TestWindowHalvesOncePerRoundTrip(t *testing.T) {
	w := NewWindow(32, 32)
	// 32 in flight all meet the same 503s: one decrease, not five.
	if round(w, Congestion); w.Limit() != 16 {
		t.Fatalf("limit %d after a round of congestion, want 16", w.Limit())
	}
	for _, want := range []int{8, 4, 2, 1, 1} {
		if round(w, Congestion); w.Limit() != want {
			t.Fatalf("limit %d, want %d", w.Limit(), want)
		}
	}
}

func TestWindowCongestionFromEarlierFlightIgnored(t *testing.T) {
	w := NewWindow(8, 32)
	var early []Ticket
	for range 8 {
		tk, _ := w.Acquire()
		early = append(early, tk)
	}
	w.Release(early[0], Congestion) // 8 -> 4
	if _, ok := w.Acquire(); ok {
		t.Fatal("a place given with 7 in flight in a window of 4")
	}
	for _, tk := range early[1:] {
		w.Release(tk, Congestion)
	}
	if w.Limit() != 4 {
		t.Fatalf("limit %d: failures sent before the decrease decreased it again", w.Limit())
	}
	late, _ := w.Acquire()
	w.Release(late, Congestion)
	if w.Limit() != 2 {
		t.Fatalf("limit %d: a failure sent after the decrease must decrease it", w.Limit())
	}
}

func TestWindowNeutral(t *testing.T) {
	w := NewWindow(4, 32)
	for range 10 {
		round(w, Neutral)
	}
	if w.Limit() != 4 || w.InFlight() != 0 {
		t.Fatalf("limit %d, in flight %d", w.Limit(), w.InFlight())
	}
}

// TestWindowAfterRecovery is the package documentation's account of the
// first seconds after an outage. An outage of refused connections ends in
// Restart: 4, 8, 16, 32 requests per round trip. An overload (503s) that
// halved the window to 1 is climbed out of one request per round trip:
// 1, 2, 3..., 55 in ten round trips.
func TestWindowAfterRecovery(t *testing.T) {
	w := NewWindow(4, 32)
	for range 5 { // the outage: probes one at a time, each refused
		tk, _ := w.Acquire()
		w.Release(tk, FeedbackOf(retry.Unreachable))
	}
	if w.Limit() != 1 {
		t.Fatalf("limit %d after the outage, want 1", w.Limit())
	}
	w.Restart()
	for _, want := range []int{4, 8, 16, 32, 32} {
		if got := round(w, Success); got != want {
			t.Fatalf("after Restart a round sent %d, want %d", got, want)
		}
	}

	w = NewWindow(4, 32)
	for range 5 { // an overload: each answer a 503
		tk, _ := w.Acquire()
		w.Release(tk, FeedbackOf(retry.ServerBusy))
	}
	total := 0
	for i := 1; i <= 10; i++ {
		n := round(w, Success)
		if n != i {
			t.Fatalf("round trip %d sent %d, want %d", i, n, i)
		}
		total += n
	}
	if total != 55 {
		t.Fatalf("%d requests in 10 round trips, want 55", total)
	}
}

func TestFeedbackOf(t *testing.T) {
	for out, want := range map[retry.Outcome]Feedback{
		retry.Delivered:   Success,
		retry.ServerBusy:  Congestion,
		retry.Unreachable: Congestion,
		retry.Rejected:    Neutral,
		retry.Canceled:    Neutral,
	} {
		if got := FeedbackOf(out); got != want {
			t.Errorf("FeedbackOf(%v) = %v, want %v", out, got, want)
		}
	}
}
