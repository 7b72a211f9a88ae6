package otlpretry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// grpcCall is one OTLP/gRPC export on its way through the interceptor:
// the first attempt, the immediate retry, the hold and the hand-off, as
// an exchange is for OTLP/HTTP.
type grpcCall struct {
	t       *Transport
	ctx     context.Context // the exporter's
	method  string
	signal  spool.Signal
	dest    destination
	msg     proto.Message // nil when the request came serialized (data)
	cc      *grpc.ClientConn
	invoker grpc.UnaryInvoker
	opts    []grpc.CallOption

	mu   sync.Mutex // guards data
	data []byte     // the serialized export once stored: later attempts send it
	// handedOff: the export is stored and the exporter answered; its
	// deadline no longer bounds the attempts.
	handedOff atomic.Bool
}

// run sends the export and answers the exporter: with the server's answer
// when the attempts end within the hold, else with success once the
// export is stored.
func (c *grpcCall) run(reply any) error {
	t := c.t
	if t.delivery.circuitOpen(c.dest) || t.detached.Load() >= maxDetached {
		return c.handOff("endpoint failing")
	}
	if t.cfg.maxHold <= 0 {
		return c.conclude(c.tryDirect(c.ctx, reply))
	}
	// The attempts write a reply of their own, which the exporter's gets
	// only when it is answered with it: after the hold they may still run.
	own := newReply(reply)
	results := make(chan directResult, 1)
	attemptCtx := detachedContext{t.delivery.ctx, c.ctx}
	go func() { results <- c.tryDirect(attemptCtx, own) }()
	timer := t.cfg.clock.NewTimer(t.cfg.maxHold)
	defer timer.Stop()
	select {
	case r := <-results:
		return c.answer(r, reply, own)
	case <-timer.Chan():
	case <-c.ctx.Done():
	}
	// Slow to settle: store the export, claimed, answer the exporter, and
	// settle the record when the attempts end.
	data, err := c.bytes()
	if err != nil {
		return c.answer(<-results, reply, own)
	}
	rec := c.record(data)
	if err := t.spool.PutClaimed(rec); err != nil {
		return c.answer(<-results, reply, own)
	}
	c.handedOff.Store(true)
	t.detached.Add(1)
	t.delivery.held(c.dest)
	go c.settleDetached(rec, results)
	return nil
}

// newReply returns an empty reply of reply's type (a protobuf message or
// *[]byte), or reply itself for any other type.
func newReply(reply any) any {
	switch m := reply.(type) {
	case proto.Message:
		return m.ProtoReflect().New().Interface()
	case *[]byte:
		return new([]byte)
	}
	return reply
}

// answer concludes with r, giving the exporter the server's reply (its
// partial success) when it accepted the export.
func (c *grpcCall) answer(r directResult, reply, own any) error {
	if r.out == retry.Delivered && reply != own {
		switch dst := reply.(type) {
		case proto.Message:
			proto.Merge(dst, own.(proto.Message))
		case *[]byte:
			*dst = *own.(*[]byte)
		}
	}
	return c.conclude(r)
}

// attempt makes one call, bounded by the per-attempt timeout. Once the
// export is stored it sends the stored bytes rather than the exporter's
// message, which the exporter owns again.
func (c *grpcCall) attempt(ctx context.Context, reply any) error {
	a, cancel := context.WithTimeout(ctx, c.t.cfg.attemptTimeout[c.signal])
	defer cancel()
	c.mu.Lock()
	data := c.data
	c.mu.Unlock()
	opts := c.opts
	var p *peer.Peer
	if c.t.endpoints.grpc.unknown(c.cc) {
		p = &peer.Peer{}
		opts = append(opts[:len(opts):len(opts)], grpc.Peer(p))
	}
	var err error
	if data != nil {
		err = c.invoker(a, c.method, data, reply, c.cc, append(opts[:len(opts):len(opts)], grpc.ForceCodec(rawCodec{}))...)
	} else {
		err = c.invoker(a, c.method, c.msg, reply, c.cc, opts...)
	}
	if p != nil {
		c.t.endpoints.grpc.learn(c.cc, p.AuthInfo)
	}
	return err
}

// tryDirect makes the first attempt and, when it fails in a way worth it,
// the one immediate retry, as Transport.tryDirect does over HTTP.
func (c *grpcCall) tryDirect(ctx context.Context, reply any) directResult {
	t := c.t
	start := t.cfg.clock.Now()
	err := c.attempt(ctx, reply)
	out, wait := retry.EvaluateGRPC(ctx, err, t.cfg.clock.Now())
	if !out.Retryable() {
		return directResult{err: err, out: out}
	}
	cause := retry.CauseGRPC(err)
	t.counters.retried.Add(1)
	if !t.shouldRetryNow(c, start, wait) {
		return directResult{err: err, out: out, retryAfter: wait, cause: cause}
	}
	if wait == 0 {
		wait = t.cfg.immediateRetryDelay
	}
	if err := t.sleep(ctx, wait); err != nil {
		return directResult{err: err, out: retry.Canceled}
	}
	err = c.attempt(ctx, reply)
	out, wait = retry.EvaluateGRPC(ctx, err, t.cfg.clock.Now())
	if out.Retryable() {
		cause = retry.CauseGRPC(err)
		t.counters.retried.Add(1)
	}
	return directResult{err: err, out: out, retryAfter: wait, cause: cause}
}

// exporterDeadline is the exporter's deadline while it waits for the
// attempts (see exchange.exporterDeadline).
func (c *grpcCall) exporterDeadline() (time.Time, bool) {
	if c.handedOff.Load() {
		return time.Time{}, false
	}
	return c.ctx.Deadline()
}

// conclude answers the exporter once the direct attempts have ended: a
// delivery or a refusal as the server gave it, anything else stored.
func (c *grpcCall) conclude(r directResult) error {
	t := c.t
	switch r.out {
	case retry.Delivered:
		t.counters.direct.Add(1)
		t.delivery.reached(c.dest)
		return r.err
	case retry.Rejected:
		t.counters.rejected.Add(1)
		t.delivery.reached(c.dest)
		if ok, held := t.rejectLimit.allow(); ok {
			t.cfg.logger.Warn("otlpretry: the endpoint refused an export; it is not retried",
				"destination", c.dest.String(), "status", retry.CauseGRPC(r.err), "similar_since_last", held)
		}
		return r.err
	}
	if r.out.Retryable() {
		t.delivery.failed(c.dest, r, c.record(nil), false)
	}
	return c.handOff(r.reason())
}

// handOff stores the export and answers the exporter with success and an
// empty reply, so that it neither retries nor drops the export.
func (c *grpcCall) handOff(why string) error {
	t := c.t
	data, err := c.bytes()
	if err == nil {
		err = t.spool.Put(c.record(data))
	}
	if err != nil {
		err = t.notStored(err)
		if t.cfg.callerRetry {
			return status.Error(codes.Unavailable, err.Error())
		}
		return err
	}
	t.counters.spooled.Add(1)
	t.delivery.wake()
	t.warnRetryingDest(c.dest, why)
	return nil
}

// bytes serializes the export, once: the same bytes as an OTLP/HTTP
// protobuf body.
func (c *grpcCall) bytes() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.data != nil {
		if len(c.data) > spool.MaxBodySize {
			return nil, fmt.Errorf("%w: export of %d bytes", spool.ErrTooLarge, len(c.data))
		}
		return c.data, nil
	}
	if size := proto.Size(c.msg); size > spool.MaxBodySize {
		return nil, fmt.Errorf("%w: export of %d bytes", spool.ErrTooLarge, size)
	}
	data, err := proto.Marshal(c.msg)
	if err != nil {
		return nil, fmt.Errorf("otlpretry: serialize export: %w", err)
	}
	if data == nil {
		data = []byte{}
	}
	c.data = data
	return data, nil
}

// record describes the export for the spool: no metadata, and the
// uncompressed message, so that it can be sent over gRPC or as an
// OTLP/HTTP protobuf body alike.
func (c *grpcCall) record(data []byte) *spool.Record {
	return &spool.Record{
		URL:         c.dest.String(),
		ContentType: "application/x-protobuf",
		Signal:      c.signal,
		Body:        data,
	}
}

// settleDetached waits for the attempts of an export answered at the end
// of its hold and settles its record, as Transport.settleDetached does.
func (c *grpcCall) settleDetached(rec *spool.Record, results <-chan directResult) {
	t := c.t
	defer func() {
		t.detached.Add(-1)
		signal(t.detachedDone)
	}()
	r := <-results
	var err error
	switch r.out {
	case retry.Delivered:
		err = t.spool.Ack(rec.ID)
		t.counters.direct.Add(1)
		t.delivery.heldEnded(c.dest, r)
	case retry.Rejected:
		detail := retry.CauseGRPC(r.err)
		err = t.spool.Quarantine(rec.ID, detail)
		t.counters.quarantined.Add(1)
		t.delivery.heldEnded(c.dest, r)
		if ok, held := t.rejectLimit.allow(); ok {
			t.cfg.logger.Warn("otlpretry: the endpoint refused an export; it is quarantined",
				"destination", c.dest.String(), "answer", detail, "similar_since_last", held)
		}
	default:
		t.delivery.failed(c.dest, r, rec, true)
		err = t.spool.Release(rec.ID)
		t.counters.spooled.Add(1)
		t.delivery.wake()
		t.warnRetryingDest(c.dest, r.reason())
	}
	if err != nil && !errors.Is(err, spool.ErrClosed) {
		t.cfg.logger.Warn("otlpretry: cannot update the spool", "id", rec.ID.String(), "err", err)
	}
}
