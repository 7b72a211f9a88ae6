package otlpretry

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/otlpretry/otlpretry/internal/batch"
	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// maxClaim bounds the records one backlog send claims, whatever their
// size: a destination's claimed records are at most its window times this.
const maxClaim = 4096

// newPacker returns the packer of backlog requests: merged up to maxBytes,
// or, for 0 (merging off), each record alone as stored.
func newPacker(maxBytes int64) *batch.Packer {
	if maxBytes <= 0 {
		// A bound of one byte: every record is over it, so alone.
		return batch.NewPacker(1)
	}
	return batch.NewPacker(int(min(maxBytes, 1<<30)))
}

// claimSize is how many records l's next backlog send claims, first being
// the oldest, already claimed: one when merging is off, else the size the
// last packing suggested, or at first the bound over first's body.
func (d *delivery) claimSize(l *lane, first *spool.Record) int {
	if d.cfg.maxRequestBytes <= 0 {
		return 1
	}
	if l.claim > 0 {
		return l.claim
	}
	return int(min(max(d.cfg.maxRequestBytes/int64(max(len(first.Body), 1)), 1), maxClaim))
}

// sendBacklog starts a backlog send of recs, claimed for l, in l's window.
func (d *delivery) sendBacklog(l *lane, recs []*spool.Record) {
	if l.since.IsZero() {
		l.since = d.cfg.clock.Now()
	}
	l.inflight++
	t, _ := l.window.Acquire() // canSend saw room
	var bytes int64
	for _, rec := range recs {
		bytes += int64(len(rec.Body))
	}
	d.inflightBytes += bytes
	go d.deliverBacklog(l, recs, l.epoch, t, bytes)
}

// deliverBacklog packs recs, stored exports of l's destination oldest
// first, into merged requests, sends them one after the other and settles
// every record by the answer to the request that carried it
// (batch.Settle): delivered records are acknowledged, refused ones
// quarantined, and those a retryable answer sent back are left claimed for
// run to release once it has decided the wait. After a retryable answer
// nothing more is sent. The records' memory goes back to the spool once
// no request body reads it. It reads nothing of the lane but its address.
func (d *delivery) deliverBacklog(l *lane, recs []*spool.Record, epoch uint64, t batch.Ticket, bytes int64) {
	dest := l.dest
	target := *recs[0]
	target.Body = nil
	r := result{lane: l, epoch: epoch, ticket: t, out: retry.Delivered, target: &target, bytes: bytes}
	reqs := d.packer.Pack(recs)
	mem := &claimedBodies{spool: d.spool, recs: recs}
	mem.refs.Store(1)
	var (
		stop        *batch.Answer
		credentials bool
		nameLookup  bool
		sent        bool // some answer came
		congestion  bool
	)
	// Settle's context is d.ctx, which the request's own derives from.
	send := func(_ context.Context, q *batch.Request) batch.Answer {
		a, creds, lookup := d.sendRequest(dest, q, mem)
		credentials, nameLookup = creds, lookup
		return a
	}
	for _, q := range reqs {
		if stop != nil {
			// Not sent: the endpoint asked for a pause, or shutdown.
			if stop.Outcome != retry.Canceled {
				for _, rec := range q.Records() {
					r.again = append(r.again, rec.ID)
				}
				d.counters.retried.Add(uint64(len(q.Records())))
			}
			continue
		}
		res := batch.Settle(d.ctx, q, send)
		sent = sent || res.Sends > 0
		d.settleRecords(dest, res, &r)
		if res.Rejected > 0 {
			d.partial(dest, res.Rejected, len(q.Records()))
		}
		if res.Stop.Outcome != retry.Delivered {
			a := res.Stop
			stop = &a
			congestion = res.Feedback() == batch.Congestion && !credentials
		}
	}
	mem.release()

	switch {
	case stop != nil:
		r.out, r.retryAfter, r.cause = stop.Outcome, stop.Wait, stop.Reason
		r.credentials, r.nameLookup = credentials, nameLookup
	case r.delivered == 0 && sent:
		r.out = retry.Rejected // every record refused: the destination answers
	}
	switch {
	case congestion:
		r.feedback = batch.Congestion
	case r.delivered > 0:
		r.feedback = batch.Success
	default:
		r.feedback = batch.Neutral
	}
	r.claim = nextClaim(recs, reqs, d.cfg.maxRequestBytes)
	d.results <- r
}

// nextClaim learns the claim size from a packing of recs into reqs. When
// the bound cut a kind of export (URL, Content-Type and encoding) into
// several requests, the first full request's records are one bound's
// worth. Otherwise the bound was not reached: a plain request tells how
// many more would fit, and a compressed one (whose merged size is not
// known here) doubles the claim.
func nextClaim(recs []*spool.Record, reqs []*batch.Request, bound int64) int {
	type kind struct{ url, contentType, encoding string }
	seen := map[kind]bool{}
	for _, q := range reqs {
		k := kind{q.URL(), q.ContentType(), q.ContentEncoding()}
		if seen[k] && q.Merged() {
			// The bound ended the first request of this kind.
			for _, p := range reqs {
				if (kind{p.URL(), p.ContentType(), p.ContentEncoding()}) == k {
					return max(1, len(p.Records()))
				}
			}
		}
		seen[k] = true
	}
	if len(reqs) == 1 && reqs[0].ContentEncoding() == "" && reqs[0].Len() > 0 {
		return int(min(max(int64(len(recs))*bound/reqs[0].Len(), 1), maxClaim))
	}
	return min(2*len(recs), maxClaim)
}

// settleRecords applies a settlement's verdicts to the spool and the
// counts; records sent back are listed in r.again.
func (d *delivery) settleRecords(dest destination, res batch.Result, r *result) {
	for _, o := range res.Records {
		var err error
		switch o.Verdict {
		case batch.Delivered:
			err = d.spool.Ack(o.Record.ID)
			d.counters.delivered.Add(1)
			r.delivered++
		case batch.Quarantine:
			err = d.spool.Quarantine(o.Record.ID, o.Reason)
			d.counters.quarantined.Add(1)
			if ok, held := d.rejectLimit.allow(); ok {
				d.cfg.logger.Warn("otlpretry: the endpoint refused a spooled export; it is quarantined",
					"destination", dest.String(), "answer", o.Reason, "dir", d.spool.Dir(), "similar_since_last", held)
			}
		case batch.Retry:
			d.counters.retried.Add(1)
			r.again = append(r.again, o.Record.ID)
		}
		// Canceled: shutting down; the spool returns the record to the line.
		if err != nil && !errors.Is(err, spool.ErrClosed) {
			d.cfg.logger.Warn("otlpretry: cannot update the spool", "id", o.Record.ID.String(), "err", err)
		}
	}
}

// partial counts and logs the items an endpoint said it dropped from
// exports it accepted (partial_success). They are not sent again: the
// OTLP specification forbids retrying a request that got one.
func (d *delivery) partial(dest destination, rejected int64, exports int) {
	d.counters.partialRejected.Add(uint64(rejected))
	if ok, held := d.partialLimit.allow(); ok {
		d.cfg.logger.Warn("otlpretry: the endpoint accepted spooled exports but dropped part of them (partial_success); they are not sent again",
			"destination", dest.String(), "rejected_items", rejected, "exports", exports, "similar_since_last", held)
	}
}

// sendRequest makes one attempt at a backlog request and judges its
// answer (judge): the verdict for batch.Settle, whether it refused the
// request's credentials, and whether the destination's name did not
// resolve.
func (d *delivery) sendRequest(dest destination, q *batch.Request, mem *claimedBodies) (a batch.Answer, credentials, nameLookup bool) {
	if dest.isGRPC() {
		// Sent before the caller gives the records' memory back: Send
		// returns once the call has read the body.
		s, ok := d.sendGRPC(dest, q.Bytes(), d.cfg.attemptTimeout[q.Signal()])
		v := noConnection
		if ok {
			v = d.judge(dest, s)
		}
		a = batch.Answer{Outcome: v.out, Wait: v.wait, Reason: v.detail}
		if v.out == retry.Delivered {
			a.Rejected, _ = partialProtobuf(s.Reply)
		}
		return a, v.credentials, false
	}
	first := q.Records()[0]
	req, cancel, live, err := d.request(first, nil, q.ContentType(), q.ContentEncoding(), d.cfg.attemptTimeout[q.Signal()])
	if err != nil {
		return batch.Answer{Outcome: retry.Rejected, Reason: err.Error()}, false, false
	}
	defer cancel()
	mem.refs.Add(1)
	bodies := trackReaders(req, q.Len(), q.Body, mem.release)
	resp, err := d.next.RoundTrip(req)
	bodies.roundTripDone()
	if err == nil && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		a.Rejected, _ = partialSuccess(resp, q.Signal(), q.ContentType())
	}
	v := d.judge(dest, d.sentHTTP(resp, err, live))
	a.Outcome, a.Wait, a.Reason, credentials = v.out, v.wait, v.detail, v.credentials
	if resp != nil {
		a.Status = resp.StatusCode
	}
	return a, credentials, isNameLookup(err)
}

// claimedBodies gives the memory of a backlog send's records back to the
// spool once the send is over and no request body reading it is open
// (bodyTracker): a merged body may alias every record's.
type claimedBodies struct {
	spool *spool.Spool
	recs  []*spool.Record
	refs  atomic.Int64 // the send's own, and one per request body tracker
}

func (m *claimedBodies) release() {
	if m.refs.Add(-1) == 0 {
		for _, rec := range m.recs {
			m.spool.Recycle(rec)
		}
	}
}
