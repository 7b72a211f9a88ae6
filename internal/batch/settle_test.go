package batch

import (
	"context"
	"fmt"
	"math/bits"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// endpoint is a scripted receiver for Settle: it decodes every body it is
// sent, as a receiver would, and answers by a rule over the spans in it
// and the body's decompressed length (what receivers bound).
type endpoint struct {
	t        *testing.T
	encoding string
	answer   func(names []string, body int64) Answer
	sends    [][]string // the spans of each request, in order
	accepted map[string]int
}

func newEndpoint(t *testing.T, encoding string, answer func(names []string, body int64) Answer) *endpoint {
	return &endpoint{t: t, encoding: encoding, answer: answer, accepted: map[string]int{}}
}

func (e *endpoint) send(_ context.Context, r *Request) Answer {
	names := spanNames(e.t, r.Bytes(), e.encoding)
	e.sends = append(e.sends, names)
	a := e.answer(names, int64(len(unzip(e.t, r.Bytes(), e.encoding))))
	if a.Outcome == retry.Delivered {
		for _, n := range names {
			e.accepted[n]++
		}
	}
	return a
}

var (
	ok      = Answer{Outcome: retry.Delivered, Status: 200}
	refused = Answer{Outcome: retry.Rejected, Status: 400, Reason: "HTTP 400: bad span"}
	busy    = Answer{Outcome: retry.ServerBusy, Status: 503, Wait: 7 * time.Second, Reason: "HTTP 503 Service Unavailable"}
)

func verdicts(res Result) []Verdict {
	var v []Verdict
	for _, o := range res.Records {
		v = append(v, o.Verdict)
	}
	return v
}

func repeat(v Verdict, n int) []Verdict { return slices.Repeat([]Verdict{v}, n) }

func merged(t *testing.T, n int, encoding string) (*Request, []*spool.Record) {
	t.Helper()
	recs := traceRecords(t, n, 100, encoding)
	reqs := NewPacker(0).Pack(recs)
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	return reqs[0], recs
}

// checkOrder asserts the outcomes follow the request's records.
func checkOrder(t *testing.T, res Result, recs []*spool.Record) {
	t.Helper()
	if len(res.Records) != len(recs) {
		t.Fatalf("%d outcomes for %d records", len(res.Records), len(recs))
	}
	for i, o := range res.Records {
		if o.Record != recs[i] {
			t.Fatalf("outcome %d is for another record", i)
		}
	}
}

func TestSettleDelivered(t *testing.T) {
	r, recs := merged(t, 10, "")
	e := newEndpoint(t, "", func([]string, int64) Answer { return ok })
	res := Settle(context.Background(), r, e.send)
	checkOrder(t, res, recs)
	if !slices.Equal(verdicts(res), repeat(Delivered, 10)) || res.Sends != 1 || res.Feedback() != Success {
		t.Fatalf("verdicts %v, sends %d", verdicts(res), res.Sends)
	}
}

func TestSettlePartialSuccessIsCountedNotRetried(t *testing.T) {
	r, _ := merged(t, 4, "")
	e := newEndpoint(t, "", func([]string, int64) Answer {
		a := ok
		a.Rejected = 3
		return a
	})
	res := Settle(context.Background(), r, e.send)
	if !slices.Equal(verdicts(res), repeat(Delivered, 4)) || res.Sends != 1 || res.Rejected != 3 {
		t.Fatalf("verdicts %v, sends %d, rejected %d", verdicts(res), res.Sends, res.Rejected)
	}
}

func TestSettleRetryable(t *testing.T) {
	r, _ := merged(t, 6, "")
	e := newEndpoint(t, "", func([]string, int64) Answer { return busy })
	res := Settle(context.Background(), r, e.send)
	if !slices.Equal(verdicts(res), repeat(Retry, 6)) || res.Sends != 1 {
		t.Fatalf("verdicts %v, sends %d", verdicts(res), res.Sends)
	}
	if res.Stop.Wait != busy.Wait || res.Feedback() != Congestion || res.Records[0].Reason != busy.Reason {
		t.Fatalf("stop %+v, feedback %v", res.Stop, res.Feedback())
	}
}

func TestSettleTooLargeSplitsUntilAccepted(t *testing.T) {
	for _, enc := range []string{"", "gzip"} {
		t.Run("encoding="+enc, func(t *testing.T) {
			r, recs := merged(t, 16, enc)
			// A quarter of the request fits (names r10 and on are a byte longer).
			limit := int64(len(unzip(t, r.Bytes(), enc)))/4 + 8
			e := newEndpoint(t, enc, func(_ []string, body int64) Answer {
				if body > limit {
					return Answer{Outcome: retry.Rejected, Status: 413, Reason: "HTTP 413: too large"}
				}
				return ok
			})
			res := Settle(context.Background(), r, e.send)
			checkOrder(t, res, recs)
			if !slices.Equal(verdicts(res), repeat(Delivered, 16)) {
				t.Fatalf("verdicts %v", verdicts(res))
			}
			// 16 -> 8+8 -> 4+4+4+4: 1 + 2 + 4 sends.
			if res.Sends != 7 {
				t.Errorf("%d sends, want 7", res.Sends)
			}
			if res.TooLarge == 0 || res.TooLarge > r.Len() {
				t.Errorf("TooLarge = %d, want the smallest refused body (the whole is %d)", res.TooLarge, r.Len())
			}
			for name, n := range e.accepted {
				if n != 1 {
					t.Errorf("span %s accepted %d times", name, n)
				}
			}
			if len(e.accepted) != 16 {
				t.Errorf("%d spans accepted, want 16", len(e.accepted))
			}
		})
	}
}

func TestSettleTooLargeAloneIsQuarantined(t *testing.T) {
	recs := traceRecords(t, 1, 100, "")
	r := NewPacker(0).Pack(recs)[0]
	e := newEndpoint(t, "", func([]string, int64) Answer {
		return Answer{Outcome: retry.Rejected, Status: 413, Reason: "HTTP 413: body too large"}
	})
	res := Settle(context.Background(), r, e.send)
	if len(res.Records) != 1 || res.Records[0].Verdict != Quarantine || res.Sends != 1 {
		t.Fatalf("outcomes %+v, sends %d", res.Records, res.Sends)
	}
	if want := ReasonTooLarge + "HTTP 413: body too large"; res.Records[0].Reason != want {
		t.Errorf("reason %q, want %q", res.Records[0].Reason, want)
	}
}

func TestSettleBisectsToTheRefusedExport(t *testing.T) {
	for _, n := range []int{2, 3, 16, 100, 257} {
		for _, bad := range []int{0, n / 3, n - 1} {
			t.Run(fmt.Sprintf("%d records, refused #%d", n, bad), func(t *testing.T) {
				r, recs := merged(t, n, "")
				badName := fmt.Sprintf("r%d#0", bad)
				e := newEndpoint(t, "", func(names []string, _ int64) Answer {
					if slices.Contains(names, badName) {
						return refused
					}
					return ok
				})
				res := Settle(context.Background(), r, e.send)
				checkOrder(t, res, recs)
				for i, o := range res.Records {
					want := Delivered
					if i == bad {
						want = Quarantine
					}
					if o.Verdict != want {
						t.Errorf("record %d: %v, want %v", i, o.Verdict, want)
					}
				}
				if res.Records[bad].Reason != refused.Reason {
					t.Errorf("reason %q", res.Records[bad].Reason)
				}
				// Every delivered span exactly once: no delivered half is sent again.
				for name, c := range e.accepted {
					if c != 1 {
						t.Errorf("span %s accepted %d times", name, c)
					}
				}
				if len(e.accepted) != n-1 {
					t.Errorf("%d spans accepted, want %d", len(e.accepted), n-1)
				}
				// One request, then two halves per level down to the one record.
				if limit := 1 + 2*bits.Len(uint(n-1)); res.Sends > limit {
					t.Errorf("%d sends, want at most %d", res.Sends, limit)
				}
				if res.Feedback() != Success {
					t.Errorf("feedback %v", res.Feedback())
				}
			})
		}
	}
}

func TestSettleBisectsToEveryRefusedExport(t *testing.T) {
	r, _ := merged(t, 32, "")
	bad := map[string]bool{"r3#0": true, "r4#0": true, "r30#0": true}
	e := newEndpoint(t, "", func(names []string, _ int64) Answer {
		for _, n := range names {
			if bad[n] {
				return refused
			}
		}
		return ok
	})
	res := Settle(context.Background(), r, e.send)
	for i, o := range res.Records {
		name := fmt.Sprintf("r%d#0", i)
		if want := map[bool]Verdict{true: Quarantine, false: Delivered}[bad[name]]; o.Verdict != want {
			t.Errorf("record %d: %v, want %v", i, o.Verdict, want)
		}
	}
	if len(e.accepted) != 29 {
		t.Errorf("%d spans accepted, want 29", len(e.accepted))
	}
}

func TestSettleStopsAtARetryableAnswerDuringBisection(t *testing.T) {
	r, recs := merged(t, 8, "")
	calls := 0
	e := newEndpoint(t, "", func(names []string, _ int64) Answer {
		calls++
		switch calls {
		case 1:
			return refused // the whole request
		case 2:
			return ok // the older half, r0..r3
		}
		return busy // the newer half
	})
	res := Settle(context.Background(), r, e.send)
	checkOrder(t, res, recs)
	want := append(repeat(Delivered, 4), repeat(Retry, 4)...)
	if !slices.Equal(verdicts(res), want) {
		t.Fatalf("verdicts %v, want %v", verdicts(res), want)
	}
	if res.Sends != 3 || res.Stop.Outcome != retry.ServerBusy || res.Feedback() != Congestion {
		t.Fatalf("sends %d, stop %+v", res.Sends, res.Stop)
	}
}

func TestSettleRetryableStopsTheRestOfTheBisection(t *testing.T) {
	r, _ := merged(t, 8, "")
	calls := 0
	e := newEndpoint(t, "", func(names []string, _ int64) Answer {
		calls++
		if calls == 1 {
			return refused
		}
		return busy // the older half: the newer one is not sent
	})
	res := Settle(context.Background(), r, e.send)
	if !slices.Equal(verdicts(res), repeat(Retry, 8)) || res.Sends != 2 {
		t.Fatalf("verdicts %v, sends %d", verdicts(res), res.Sends)
	}
}

func TestSettleCanceled(t *testing.T) {
	t.Run("before the first send", func(t *testing.T) {
		r, _ := merged(t, 4, "")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		e := newEndpoint(t, "", func([]string, int64) Answer { return ok })
		res := Settle(ctx, r, e.send)
		if !slices.Equal(verdicts(res), repeat(Canceled, 4)) || res.Sends != 0 || res.Feedback() != Neutral {
			t.Fatalf("verdicts %v, sends %d", verdicts(res), res.Sends)
		}
	})
	t.Run("during bisection", func(t *testing.T) {
		r, _ := merged(t, 4, "")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		calls := 0
		e := newEndpoint(t, "", func([]string, int64) Answer {
			calls++
			switch calls {
			case 1:
				return refused
			case 2:
				cancel() // the caller gives up while the older half is answered
				return ok
			}
			return ok
		})
		res := Settle(ctx, r, e.send)
		want := append(repeat(Delivered, 2), repeat(Canceled, 2)...)
		if !slices.Equal(verdicts(res), want) || res.Sends != 2 {
			t.Fatalf("verdicts %v, want %v; sends %d", verdicts(res), want, res.Sends)
		}
	})
	t.Run("the send reports canceled", func(t *testing.T) {
		r, _ := merged(t, 4, "")
		e := newEndpoint(t, "", func([]string, int64) Answer { return Answer{Outcome: retry.Canceled, Reason: "canceled"} })
		res := Settle(context.Background(), r, e.send)
		if !slices.Equal(verdicts(res), repeat(Canceled, 4)) || res.Feedback() != Neutral {
			t.Fatalf("verdicts %v", verdicts(res))
		}
	})
}

// TestSettleNoVerdictBeforeItsAnswer: at each send, the records it carries
// have no verdict yet, and no record has a verdict from a request that
// did not carry it.
func TestSettleNoVerdictBeforeItsAnswer(t *testing.T) {
	r, _ := merged(t, 16, "")
	answered := map[string]bool{}
	e := newEndpoint(t, "", func(names []string, _ int64) Answer {
		for _, n := range names {
			if answered[n] {
				t.Errorf("span %s sent again after its answer", n)
			}
		}
		if slices.Contains(names, "r5#0") || slices.Contains(names, "r11#0") {
			return refused
		}
		if len(names) == 1 {
			answered[names[0]] = true
		}
		for _, n := range names {
			answered[n] = true
		}
		return ok
	})
	res := Settle(context.Background(), r, e.send)
	for i, o := range res.Records {
		name := fmt.Sprintf("r%d#0", i)
		if o.Verdict == Delivered && !answered[name] {
			t.Errorf("%s delivered without a 2xx to a request carrying it", name)
		}
	}
	if q := strings.Count(fmt.Sprint(verdicts(res)), "quarantine"); q != 2 {
		t.Errorf("%d quarantined, want 2", q)
	}
}

func TestAnswerStatusesFromRealResponses(t *testing.T) {
	// The send function a sender writes: Evaluate plus the status.
	for _, tc := range []struct {
		code int
		want Verdict
	}{
		{200, Delivered}, {400, Quarantine}, {413, Quarantine}, {429, Retry}, {503, Retry},
	} {
		resp := &http.Response{StatusCode: tc.code, Header: http.Header{}}
		out, wait := retry.Evaluate(context.Background(), resp, nil, time.Now)
		r, _ := merged(t, 1, "")
		res := Settle(context.Background(), r, func(context.Context, *Request) Answer {
			return Answer{Outcome: out, Status: tc.code, Wait: wait}
		})
		if res.Records[0].Verdict != tc.want {
			t.Errorf("%d: %v, want %v", tc.code, res.Records[0].Verdict, tc.want)
		}
	}
}
