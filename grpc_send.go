package otlpretry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/otlpretry/otlpretry/internal/batch"
	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// rawCodec sends stored exports as they are, without decoding and
// encoding them again: a []byte is the serialized message. Replies and
// other protobuf messages go through the protobuf encoding; a reply into
// *[]byte keeps its bytes. It names itself "proto", so the server sees
// the usual content-subtype.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case []byte:
		return m, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("otlpretry: raw codec cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *[]byte:
		*m = append((*m)[:0], data...)
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("otlpretry: raw codec cannot unmarshal into %T", v)
}

func (rawCodec) Name() string { return "proto" }

// errNoConnection: a gRPC destination has neither a live connection nor
// configured headers; its exports wait for a live call.
var errNoConnection = errors.New("waiting for a live connection")

// invokeGRPC sends body to dest's method on the connection lookup gives,
// with its metadata, bounded by timeout. live tells whether the
// connection and metadata are a live call's.
func (d *delivery) invokeGRPC(dest destination, body []byte, timeout time.Duration) (live bool, err error) {
	call, ok := d.live.grpc.lookup(dest, d.cfg)
	if !ok {
		return false, errNoConnection
	}
	ctx, cancel := context.WithTimeout(context.WithValue(d.ctx, ownCallKey{}, true), timeout)
	defer cancel()
	if len(call.md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, call.md)
	}
	var reply []byte
	opts := append(call.opts[:len(call.opts):len(call.opts)], grpc.ForceCodec(rawCodec{}))
	return call.live, call.cc.Invoke(ctx, dest.path, body, &reply, opts...)
}

// deliverOneGRPC is deliverOne for a record stored from gRPC: sent as
// stored to its own destination, over the latest live connection to it
// (or one of its own for a destination with configured headers).
func (d *delivery) deliverOneGRPC(dest destination, rec *spool.Record) result {
	target := *rec
	target.Body = nil
	live, err := d.invokeGRPC(dest, rec.Body, d.cfg.attemptTimeout[rec.Signal])
	d.spool.Recycle(rec)
	out, wait, detail, credentials := d.judgeGRPC(dest, err, live)
	d.settleOne(dest, rec.ID, out, detail)
	return result{out: out, retryAfter: wait, target: &target, cause: detail, credentials: credentials}
}

// sendRequestGRPC is sendRequest for a gRPC destination: the merged
// request's body (stored requests concatenated, one valid
// Export*ServiceRequest) goes as one call. Invoke has returned, and so
// read the body, before the caller gives the records' memory back.
func (d *delivery) sendRequestGRPC(dest destination, q *batch.Request) (a batch.Answer, credentials bool) {
	live, err := d.invokeGRPC(dest, q.Bytes(), d.cfg.attemptTimeout[q.Signal()])
	a.Outcome, a.Wait, a.Reason, credentials = d.judgeGRPC(dest, err, live)
	return a, credentials
}

// judgeGRPC is judge for a gRPC call's error: the outcome and wait
// (retry.EvaluateGRPC), the cause, and whether it refused the call's
// credentials (a call without a live one's is not quarantined for that:
// it waits, as for a busy server).
func (d *delivery) judgeGRPC(dest destination, err error, live bool) (out retry.Outcome, wait time.Duration, detail string, credentials bool) {
	if errors.Is(err, errNoConnection) {
		// Like a refusal of credentials: the lane waits for a live call.
		return retry.ServerBusy, 0, "waiting for credentials: " + errNoConnection.Error(), true
	}
	out, wait = retry.EvaluateGRPC(d.ctx, err, d.cfg.clock.Now())
	detail = retry.CauseGRPC(err)
	if out != retry.Rejected || live || !retry.WantsCredentialsGRPC(err) {
		return out, wait, detail, false
	}
	detail = "waiting for credentials: " + detail
	if ok, held := d.credsLimit.allow(); ok {
		d.cfg.logger.Warn("otlpretry: a spooled export was refused for want of credentials; it waits for a live call to its destination (or WithEndpointHeaders for it)",
			"destination", dest.String(), "answer", detail, "similar_since_last", held)
	}
	return retry.ServerBusy, 0, detail, true
}

// probeGRPC sends an empty export (a valid OTLP request with no data) to
// dest and says how it went.
func (d *delivery) probeGRPC(dest destination) retry.Outcome {
	_, err := d.invokeGRPC(dest, []byte{}, d.cfg.probeTimeout)
	if errors.Is(err, errNoConnection) {
		return retry.Unreachable
	}
	out, _ := retry.EvaluateGRPC(d.ctx, err, d.cfg.clock.Now())
	return out
}
