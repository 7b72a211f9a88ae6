package otlpretry

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/otlpretry/otlpretry/internal/bridge"
	"github.com/otlpretry/otlpretry/internal/retry"
	"github.com/otlpretry/otlpretry/spool"
)

// The gRPC adapter (module otlpretrygrpc) reaches a Transport through
// bridge.Of: its exports take the flow of exchange.go, and the background
// sender sends stored exports to gRPC destinations through the
// bridge.Sender it gives.
func init() {
	bridge.Of = func(t any) bridge.Core { return core{t.(*Transport)} }
}

// core is a Transport as the adapter sees it (bridge.Core).
type core struct{ t *Transport }

var _ bridge.Core = core{}

func (c core) Closed() bool { return c.t.closed.Load() }

func (c core) Export(ctx context.Context, dest bridge.Target, signal spool.Signal, exp bridge.Export) bridge.Ending {
	x := c.t.takeExchange()
	x.start(exp, ctx, destination{scheme: dest.Scheme, host: dest.Host, path: dest.Path}, signal)
	return c.t.export(x)
}

func (c core) Sender(newSender func() bridge.Sender) bridge.Sender {
	s, made := c.t.endpoints.senderOr(newSender)
	if made {
		c.t.delivery.senderArrived()
	}
	return s
}

func (c core) Headers(dest bridge.Target) (http.Header, bool) {
	return c.t.cfg.headersFor(&url.URL{Scheme: dest.Scheme, Host: dest.Host, Path: dest.Path})
}

// newSender gives t the adapter's sender when the program links the
// adapter (bridge.NewSender), so that what an earlier process stored for
// a gRPC destination can go with the headers configured for it before
// any live call.
func (t *Transport) newSender() {
	if bridge.NewSender != nil {
		c := core{t}
		t.endpoints.senderOr(func() bridge.Sender { return bridge.NewSender(c) })
	}
}

// sendGRPC sends body, one serialized request, to a gRPC destination
// through the adapter's sender. false: there is no sender, or dest has
// neither a live call's connection nor configured headers.
func (d *delivery) sendGRPC(dest destination, body []byte, timeout time.Duration) (bridge.Sent, bool) {
	s := d.live.grpcSender()
	if s == nil {
		return bridge.Sent{}, false
	}
	return s.Send(d.ctx, dest.target(), body, timeout)
}

// senderArrived tells the lanes of gRPC destinations that wait for a live
// call that the adapter's sender has come: it may send with headers
// configured for them, as a live request would have brought.
func (d *delivery) senderArrived() {
	for dest := range *d.circuits.m.Load() {
		if dest.isGRPC() {
			d.liveSeen(dest)
		}
	}
}

// noConnection is the verdict on a send to a gRPC destination that has
// neither a live call's connection nor configured headers: like a refusal
// of credentials, the lane waits for a live call.
var noConnection = verdict{out: retry.ServerBusy, detail: "waiting for credentials: waiting for a live connection", credentials: true}
