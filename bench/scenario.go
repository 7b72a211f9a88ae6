package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// result is one system's figures in one scenario (and, for the backlog,
// one round). Spans are counted by ID: lost is what was produced and never
// received, so duplicates cannot hide a loss.
type result struct {
	Scenario string `json:"scenario"`
	System   string `json:"system"`
	Round    int    `json:"round,omitempty"`

	Produced   int64 `json:"produced"`   // spans ended in the SDK
	Handed     int64 `json:"handed"`     // spans whose export call succeeded
	Failed     int64 `json:"failed"`     // spans whose export call failed
	Received   int64 `json:"received"`   // distinct spans at the receiver
	Duplicates int64 `json:"duplicates"` // spans received more than once
	Lost       int64 `json:"lost"`       // produced, never received
	Requests   int   `json:"requests"`   // export requests at the receiver
	WireBytes  int64 `json:"wire_bytes"` // their bodies as sent

	// Recovery: from the endpoint's return until every span produced
	// before it had been received; -1 when that never happened.
	Recovery float64 `json:"recovery_s"`
	// Remaining: spans produced before the return still missing when the
	// run ended (the loss attributable to the outage).
	Remaining int64 `json:"remaining"`

	Build     float64 `json:"build_s,omitempty"`       // backlog: start to the last export answered
	Drain     float64 `json:"drain_s,omitempty"`       // backlog: endpoint back to the last span received; -1 if never
	DrainRate float64 `json:"drain_rate,omitempty"`    // backlog: spans per second over Drain
	FirstAt   float64 `json:"first_s,omitempty"`       // backlog: endpoint back to the first span received
	SendRate  float64 `json:"send_rate,omitempty"`     // backlog: spans per second from the first span received to the last
	VsLimit   float64 `json:"vs_limit,omitempty"`      // backlog: DrainRate / the limit's, same round
	SendVs    float64 `json:"send_vs_limit,omitempty"` // backlog: SendRate / the limit's, same round
	BackAt    float64 `json:"back_at_s,omitempty"`     // backlog: when the endpoint came back, on the series' clock
	RTT       float64 `json:"rtt_s,omitempty"`         // latency: the round trip the proxy added in the drain (0: loopback)
	DiskAfter int64   `json:"disk_after,omitempty"`    // bytes on disk at the end
	Outage    int64   `json:"outage_spans,omitempty"`  // spans produced during the outage

	WorkerCPU float64 `json:"worker_cpu_s"` // the process doing the export work
	WorkerRSS int64   `json:"worker_peak_rss"`
	AppCPU    float64 `json:"app_cpu_s"`
	AppRSS    int64   `json:"app_peak_rss"`
	PeakDisk  int64   `json:"peak_disk"`

	Series []sample `json:"series"`
}

func faultMode(scenario string) otlptest.Mode {
	switch scenario {
	case "refused", "backlog":
		return otlptest.Refuse
	case "503":
		return otlptest.HTTPStatus(http.StatusServiceUnavailable, "")
	case "blackhole":
		return otlptest.Blackhole
	}
	return otlptest.Pass
}

// sleepUntil waits for t or ctx.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// parallel runs f for every lane at once and joins the errors.
func parallel(lanes []*lane, f func(*lane) error) error {
	errs := make([]error, len(lanes))
	var wg sync.WaitGroup
	for i, l := range lanes {
		wg.Go(func() { errs[i] = f(l) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// tracker measures a lane's recovery: the spans produced before the
// endpoint's return, and when the last of them arrived.
type tracker struct {
	back    time.Time
	missing []uint64 // seqs not received yet, owned by the goroutine
	done    chan struct{}

	mu        sync.Mutex
	recovered time.Duration // -1 until every span has arrived
	remaining int
}

// track follows l's spans 0..cutoff-1 from back until all have arrived or
// stop is closed, checking every 50 ms (the receiver keeps no arrival
// times, so this is the resolution of the recovery figures).
func track(l *lane, cutoff int64, back time.Time, stop <-chan struct{}) *tracker {
	tr := &tracker{back: back, done: make(chan struct{}), recovered: -1}
	go func() {
		defer close(tr.done)
		for seq := uint64(0); seq < uint64(cutoff); seq++ {
			if t, s := l.spanKey(seq); !l.recv.HasSpan(t, s) {
				tr.missing = append(tr.missing, seq)
			}
		}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			kept := tr.missing[:0]
			for _, seq := range tr.missing {
				if t, s := l.spanKey(seq); !l.recv.HasSpan(t, s) {
					kept = append(kept, seq)
				}
			}
			tr.missing = kept
			tr.mu.Lock()
			tr.remaining = len(kept)
			if len(kept) == 0 {
				tr.recovered = time.Since(back)
			}
			tr.mu.Unlock()
			if len(kept) == 0 {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return tr
}

func (tr *tracker) result() (time.Duration, int) {
	<-tr.done
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.recovered, tr.remaining
}

// runTimed runs the steady scenario or one outage scenario with every
// system at once: the same load from the same instant, the same outage at
// the same instants.
func (e *env) runTimed(ctx context.Context, scenario string, round int) (results []*result, err error) {
	c := e.cfg
	mode := faultMode(scenario)
	length := c.steady
	if scenario != "steady" {
		length = 3 * c.outage
	}
	spec := appSpec{rate: c.rate, duration: length}
	if err := settleDisk(ctx, c); err != nil {
		return nil, err
	}
	var lanes []*lane
	defer func() {
		for _, l := range lanes {
			l.close()
		}
	}()
	for _, sys := range c.systemsFor(scenario) {
		l, err := e.newLane(ctx, fmt.Sprintf("%s-%d", scenario, round), sys, spec, otlptest.Pass, tuning{})
		if err != nil {
			return nil, fmt.Errorf("%s, system %s: %w", scenario, sys, err)
		}
		lanes = append(lanes, l)
	}
	for _, l := range lanes {
		if err := l.baseline(); err != nil {
			return nil, err
		}
	}

	t0 := time.Now()
	stopSampling := make(chan struct{})
	sampling := sampler(lanes, t0, stopSampling)
	stopTracking := make(chan struct{})
	stopOnce := sync.OnceFunc(func() { close(stopTracking); close(stopSampling); sampling.Wait() })
	defer stopOnce()
	for _, l := range lanes {
		if err := l.app.send("start"); err != nil {
			return nil, err
		}
	}
	trackers := map[*lane]*tracker{}
	outageSpans := map[*lane]int64{}
	if scenario != "steady" {
		what := mode.String()
		if scenario == "503" && slices.ContainsFunc(lanes, func(l *lane) bool { return l.grecv != nil }) {
			what += " (gRPC lanes: Unavailable)"
		}
		e.log("%s: %v steady, then %v of %s, then %v steady", scenario, c.outage, c.outage, what, c.outage)
		if err := sleepUntil(ctx, t0.Add(c.outage)); err != nil {
			return nil, err
		}
		var mu sync.Mutex
		err := parallel(lanes, func(l *lane) error {
			n, err := l.app.command(ctx, "mark")
			if err == nil {
				if l.sys == "limit" {
					_, err = l.app.command(ctx, "down")
				} else {
					err = l.setFault(scenario, true)
				}
			}
			mu.Lock()
			outageSpans[l] = -n
			mu.Unlock()
			return err
		})
		if err != nil {
			return nil, err
		}
		if err := sleepUntil(ctx, t0.Add(2*c.outage)); err != nil {
			return nil, err
		}
		err = parallel(lanes, func(l *lane) error {
			var n int64
			var err error
			if l.sys == "limit" {
				n, err = l.app.command(ctx, "up")
			} else {
				// The count comes before the return, so every span it
				// covers was produced while the endpoint was down or
				// before.
				if n, err = l.app.command(ctx, "mark"); err == nil {
					err = l.setFault(scenario, false)
				}
			}
			if err != nil {
				return err
			}
			tr := track(l, n, time.Now(), stopTracking)
			mu.Lock()
			trackers[l] = tr
			outageSpans[l] += n
			mu.Unlock()
			return nil
		})
		if err != nil {
			return nil, err
		}
	} else {
		e.log("steady, round %d: %v at %d spans/s", round, length, c.rate)
	}

	// The load ends on its own; then everything produced should arrive.
	loadDeadline := time.NewTimer(time.Until(t0.Add(length + 60*time.Second)))
	defer loadDeadline.Stop()
	for _, l := range lanes {
		select {
		case <-l.app.loaded:
		case <-l.app.done:
			return nil, l.app.failure("exited during the load")
		case <-loadDeadline.C:
			return nil, fmt.Errorf("%s: the load of %s did not end within a minute of its length", scenario, l.sys)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	e.log("%s: load ended; waiting up to %v for delivery", scenario, c.settle)
	if err := e.awaitDelivery(ctx, lanes, c.settle); err != nil {
		return nil, err
	}

	usages := map[*lane][2]usage{}
	for _, l := range lanes {
		app, work, err := l.measure()
		if err != nil {
			return nil, err
		}
		usages[l] = [2]usage{app, work}
	}
	stopOnce()
	if err := parallel(lanes, (*lane).stop); err != nil {
		return nil, err
	}
	for _, l := range lanes {
		r := e.finalCounts(scenario, l)
		r.Round = round
		app, work := usages[l][0], usages[l][1]
		r.AppCPU, r.AppRSS = app.cpu.Seconds(), app.peakRSS
		r.WorkerCPU, r.WorkerRSS = work.cpu.Seconds(), work.peakRSS
		r.PeakDisk = l.peakDisk()
		r.DiskAfter = l.lastDisk()
		r.Recovery = -1
		if tr, ok := trackers[l]; ok {
			rec, remaining := tr.result()
			if rec >= 0 {
				r.Recovery = rec.Seconds()
			}
			r.Remaining = int64(remaining)
			r.Outage = outageSpans[l]
		}
		results = append(results, r)
	}
	return results, nil
}

// awaitDelivery waits until every lane but A and A-grpc has received all
// it produced, or limit passes. A is not waited for: its exporter gives
// spans up, so
// what it has not delivered once the others are done it never will (the
// last partial batch it still holds is flushed when it stops).
func (e *env) awaitDelivery(ctx context.Context, lanes []*lane, limit time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for _, l := range lanes {
		if kind(l.sys) == "A" {
			continue
		}
		if err := l.recv.WaitSpans(wctx, int(l.app.loadedCount())); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			e.log("system %s: not everything delivered within %v (%d of %d)", l.sys, limit, l.recv.Spans(), l.app.loadedCount())
		}
	}
	return nil
}

// finalCounts reads what the lane's receiver got; the app has stopped, so
// its last stat line is final.
func (e *env) finalCounts(scenario string, l *lane) *result {
	st := l.app.lastStat()
	recv := int64(l.recv.Spans())
	return &result{
		Scenario:   scenario,
		System:     l.sys,
		Produced:   st.produced,
		Handed:     st.ok,
		Failed:     st.failed,
		Received:   recv,
		Duplicates: int64(l.recv.SpanDuplicates()),
		// Only this lane's spans reach its receiver, and their IDs are
		// 0..produced-1, so the distinct count is the delivered part.
		Lost:      st.produced - recv,
		Requests:  l.recv.Exports(),
		WireBytes: l.recv.BytesReceived(),
		Series:    l.samples(),
	}
}

// attrBytes sizes the payload attribute so that an export of batch spans
// comes out near exportBytes: about 200 bytes of resource and scope per
// export and 85 bytes of IDs, times and framing per span in the SDK's
// encoding of benchapp's spans (the report gives the mean size actually
// received).
func attrBytes(exportBytes, batch int) int {
	return max(0, (exportBytes-200)/batch-85)
}

// runBacklog builds a backlog of c.backlog exports with each system in turn
// while the endpoint refuses connections, then brings the endpoint back
// and times the drain. Rounds alternate the order of the systems.
func (e *env) runBacklog(ctx context.Context) ([]*result, error) {
	c := e.cfg
	var results []*result
	for round := 1; round <= c.rounds; round++ {
		var roundResults []*result
		for _, sys := range roundOrder(c.systemsFor("backlog"), round) {
			e.log("backlog round %d: system %s: %d exports of ~%d bytes while the endpoint refuses", round, sys, c.backlog, c.exportBytes)
			r, err := e.runBacklogLane(ctx, backlogRun{
				scenario: "backlog", dir: fmt.Sprintf("backlog-%d", round), sys: sys, round: round,
				exports: c.backlog, back: otlptest.Pass, drainLimit: c.drainLimit,
			})
			if err != nil {
				return nil, fmt.Errorf("backlog round %d, system %s: %w", round, sys, err)
			}
			if r.Drain >= 0 {
				e.log("backlog round %d: system %s drained %d spans in %.2f s", round, sys, r.Handed, r.Drain)
			}
			roundResults = append(roundResults, r)
		}
		vsLimit(roundResults)
		results = append(results, roundResults...)
	}
	return results, nil
}

// roundOrder is the order of systems in a round: as given in odd rounds,
// reversed in even ones, so that neither end of the list always runs on
// a machine warmed (or tired) by the others.
func roundOrder(systems []string, round int) []string {
	order := append([]string(nil), systems...)
	if round%2 == 0 {
		sort.Sort(sort.Reverse(sort.StringSlice(order)))
	}
	return order
}

// vsLimit sets each result's ratios to the limit's among rs (one round).
func vsLimit(rs []*result) {
	var limit *result
	for _, r := range rs {
		if r.System == "limit" {
			limit = r
		}
	}
	for _, r := range rs {
		if limit != nil && limit.DrainRate > 0 && r.DrainRate > 0 {
			r.VsLimit = r.DrainRate / limit.DrainRate
		}
		if limit != nil && limit.SendRate > 0 && r.SendRate > 0 {
			r.SendVs = r.SendRate / limit.SendRate
		}
	}
}

// backlogRun is one system's backlog: built while the endpoint refuses
// connections, drained once the proxy is set to back.
type backlogRun struct {
	scenario, dir, sys string
	round              int
	exports            int
	back               otlptest.Mode // the proxy's mode for the drain: Pass, or Latency
	rtt                time.Duration // what back adds to each round trip, for the report
	drainLimit         time.Duration
	tune               tuning
}

func (e *env) runBacklogLane(ctx context.Context, b backlogRun) (*result, error) {
	c := e.cfg
	sys := b.sys
	total := b.exports * c.batch
	spec := appSpec{
		rate:      c.backlogRate * c.batch,
		spans:     total,
		batch:     c.batch,
		blocking:  true, // a backlog of exactly c.backlog exports, none dropped in the SDK
		attrBytes: attrBytes(c.exportBytes, c.batch),
	}
	if err := settleDisk(ctx, c); err != nil {
		return nil, err
	}
	l, err := e.newLane(ctx, b.dir, sys, spec, faultMode("backlog"), b.tune)
	if err != nil {
		return nil, err
	}
	defer l.close()
	if sys == "limit" {
		if _, err := l.app.command(ctx, "down"); err != nil {
			return nil, err
		}
	}
	if err := l.baseline(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	stopSampling := make(chan struct{})
	sampling := sampler([]*lane{l}, t0, stopSampling)
	stopOnce := sync.OnceFunc(func() { close(stopSampling); sampling.Wait() })
	defer stopOnce()
	if err := l.app.send("start"); err != nil {
		return nil, err
	}

	// Built: every export has been answered (stored by the layer, held by
	// the limit, or failed for A).
	buildLimit := time.Duration(float64(time.Second)*float64(total)/float64(spec.rate))*3 + 2*time.Minute
	err = poll(ctx, l.app, buildLimit, func() bool {
		st := l.app.lastStat()
		return st.ok+st.failed >= int64(total)
	}, "done building the backlog")
	if err != nil {
		return nil, err
	}
	build := time.Since(t0)
	l.sampleNow(t0, true)
	handed := l.app.lastStat().ok

	// The clock starts before the limit is told: its drain may end before
	// the acknowledgement comes back.
	back := time.Now()
	if sys == "limit" {
		// The limit's proxy passed nothing while its buffer held the
		// exports; it takes the drain's mode before the buffer is let go.
		if err = l.proxy.SetMode(b.back); err == nil {
			_, err = l.app.command(ctx, "up")
		}
	} else {
		err = l.proxy.SetMode(b.back)
	}
	if err != nil {
		return nil, err
	}
	drain, first := -1.0, -1.0
	if handed > 0 {
		wctx, cancel := context.WithTimeout(ctx, b.drainLimit)
		// Nothing reached the receiver while it was down, so its first
		// span marks the moment sending resumed: what follows is the
		// layer's sending speed, what precedes its wake-up.
		firstDone := make(chan struct{})
		go func() {
			defer close(firstDone)
			if l.recv.WaitSpans(wctx, 1) == nil {
				first = time.Since(back).Seconds()
			}
		}()
		err := l.recv.WaitSpans(wctx, int(handed))
		if err == nil {
			drain = time.Since(back).Seconds()
		}
		cancel()
		<-firstDone
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil, ctx.Err()
		default:
			e.log("system %s: backlog not drained within %v (%d of %d spans)", sys, b.drainLimit, l.recv.Spans(), handed)
		}
	}
	app, work, err := l.measure()
	if err != nil {
		return nil, err
	}
	l.sampleNow(t0, true)
	stopOnce()
	if err := l.stop(); err != nil {
		return nil, err
	}
	r := e.finalCounts(b.scenario, l)
	r.Round = b.round
	r.RTT = b.rtt.Seconds()
	r.Build = build.Seconds()
	r.Drain = drain
	if drain > 0 {
		r.DrainRate = float64(handed) / drain
	}
	r.FirstAt = first
	if drain > first && first >= 0 {
		r.SendRate = float64(handed) / (drain - first)
	}
	r.BackAt = back.Sub(t0).Seconds()
	r.AppCPU, r.AppRSS = app.cpu.Seconds(), app.peakRSS
	r.WorkerCPU, r.WorkerRSS = work.cpu.Seconds(), work.peakRSS
	r.PeakDisk = l.peakDisk()
	r.DiskAfter = l.lastDisk()
	r.Recovery = -1
	return r, nil
}
