package batch

import (
	"context"
	"net/http"
	"time"

	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// Answer is what one attempt to send a Request came to, as the send
// function of Settle reports it.
type Answer struct {
	// Outcome is retry.Evaluate's verdict. A refusal that says nothing
	// about the content, such as a 401 or 403 to a request sent without
	// live credentials, must be reported as retryable (retry.ServerBusy):
	// a Rejected answer is bisected down to single exports, which are
	// then quarantined.
	Outcome retry.Outcome
	// Status is the HTTP status, zero without an answer.
	Status int
	// Wait is the server's Retry-After, for a retryable outcome.
	Wait time.Duration
	// Reason names the failure or the refusal (retry.Cause,
	// retry.Refusal); it becomes a quarantined record's reason.
	Reason string
	// Rejected is the count of items a 2xx answer's partial_success says
	// the endpoint dropped. It is counted, never retried: the OTLP
	// specification forbids resending a request that got a
	// partial_success.
	Rejected int64
}

// Verdict is what becomes of one record after Settle.
type Verdict uint8

const (
	// Delivered: a request carrying the record got a 2xx answer. Ack it.
	Delivered Verdict = iota
	// Retry: the record was not delivered and is worth sending again
	// (a retryable answer to its request, or to an earlier sub-request of
	// the same Settle); back to the lane's wait. Release it.
	Retry
	// Quarantine: the endpoint refused the record alone. Quarantine it
	// with Reason.
	Quarantine
	// Canceled: the caller's context ended before the record's request got
	// an answer; not the endpoint's fault, no attempt counted.
	Canceled
)

func (v Verdict) String() string {
	switch v {
	case Delivered:
		return "delivered"
	case Retry:
		return "retry"
	case Quarantine:
		return "quarantine"
	case Canceled:
		return "canceled"
	}
	return "verdict(?)"
}

// RecordOutcome is one record's verdict.
type RecordOutcome struct {
	Record  *spool.Record
	Verdict Verdict
	// Reason: for Quarantine, why the endpoint refused the record; for
	// Retry, the failure that sent it back.
	Reason string
}

// Result is what settling a Request came to.
type Result struct {
	// Records holds one outcome per record of the Request, in its order.
	Records []RecordOutcome
	// Sends counts the requests sent: 1 unless the first was refused and
	// split.
	Sends int
	// Rejected sums the partial_success counts of the 2xx answers.
	Rejected int64
	// Stop is the retryable (or canceled) answer that ended the
	// settlement early, for the window, the lane's wait and its circuit;
	// its Outcome is retry.Delivered when no answer was retryable.
	Stop Answer
	// TooLarge is the length of the smallest body answered with 413, or
	// zero: the endpoint's limit is below it.
	TooLarge int64
}

// ReasonTooLarge prefixes the quarantine reason of a record that the
// endpoint refused with 413 when sent alone, as the exporter sent it:
// splitting cannot make it smaller, and no retry will change the answer.
const ReasonTooLarge = "too large for the endpoint: "

// Settle sends r with send and settles every record it carries:
//
//   - 2xx: every record in the request is Delivered; a partial_success is
//     counted in Rejected.
//   - retryable (408, 429, 5xx, no answer): every record not yet settled,
//     in this request and in the rest of the Settle, goes back to Retry,
//     and nothing more is sent: the endpoint asked for a pause.
//   - a refusal (413 or any other non-retryable answer) of a merged
//     request: it is split in halves, older half first, and each half is
//     settled the same way, so that bisection finds the exports the
//     endpoint refuses. A half that gets a 2xx is never sent again.
//   - a refusal of a single record: Quarantine, with the answer's reason;
//     for 413, prefixed by ReasonTooLarge.
//   - the caller's context ends: every record not yet answered is
//     Canceled.
//
// A record's verdict comes only from an answer to a request that carried
// it: Settle returns after the last answer and sends one request at a
// time. send must not keep the Request or its body after it returns.
func Settle(ctx context.Context, r *Request, send func(context.Context, *Request) Answer) Result {
	s := settlement{ctx: ctx, send: send, res: Result{Records: make([]RecordOutcome, 0, len(r.records))}}
	s.res.Stop.Outcome = retry.Delivered
	s.settle(r)
	return s.res
}

type settlement struct {
	ctx     context.Context
	send    func(context.Context, *Request) Answer
	res     Result
	stopped bool
}

func (s *settlement) settle(r *Request) {
	if !s.stopped && s.ctx.Err() != nil {
		s.stopped = true
		s.res.Stop = Answer{Outcome: retry.Canceled, Reason: "canceled"}
	}
	if s.stopped {
		s.all(r, s.verdictOfStop(), s.res.Stop.Reason)
		return
	}
	a := s.send(s.ctx, r)
	s.res.Sends++
	switch {
	case a.Outcome == retry.Delivered:
		s.res.Rejected += a.Rejected
		s.all(r, Delivered, "")
	case a.Outcome.Retryable(), a.Outcome == retry.Canceled:
		s.stopped = true
		s.res.Stop = a
		s.all(r, s.verdictOfStop(), a.Reason)
	default: // refused
		if a.Status == http.StatusRequestEntityTooLarge && (s.res.TooLarge == 0 || r.size < s.res.TooLarge) {
			s.res.TooLarge = r.size
		}
		if r.Merged() {
			older, newer := r.split()
			s.settle(older)
			s.settle(newer)
			return
		}
		reason := a.Reason
		if a.Status == http.StatusRequestEntityTooLarge {
			reason = ReasonTooLarge + reason
		}
		s.all(r, Quarantine, reason)
	}
}

func (s *settlement) verdictOfStop() Verdict {
	if s.res.Stop.Outcome == retry.Canceled {
		return Canceled
	}
	return Retry
}

func (s *settlement) all(r *Request, v Verdict, reason string) {
	for _, rec := range r.records {
		s.res.Records = append(s.res.Records, RecordOutcome{Record: rec, Verdict: v, Reason: reason})
	}
}
