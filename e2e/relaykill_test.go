package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// TestRelaySIGKILL: `otlpretry relay` killed with SIGKILL 10 times at
// random moments of a 20 s run while the upstream flaps, restarted on the
// same --dir each time. 20 kills in 60 s is TestRelaySIGKILLSoak, opt-in.
func TestRelaySIGKILL(t *testing.T) {
	t.Parallel()
	runRelayKills(t, "relay/sigkill-10x-20s", 10, 20*time.Second)
}

// TestRelaySIGKILLSoak is the full run, opt-in: 20 kills in 60 s.
func TestRelaySIGKILLSoak(t *testing.T) {
	skipUnlessSoak(t)
	t.Parallel()
	runRelayKills(t, "relay/sigkill-20x-60s", 20, 60*time.Second)
}

// runRelayKills: a client posts OTLP/HTTP trace exports (100 spans each)
// to the relay without pause but 20 ms between posts, counting the spans
// of every 2xx answer as acknowledged; the upstream alternates every
// second between passing, refusing connections and answering 503; the
// relay is killed kills times, once at a random moment of each equal slot
// of total, and restarted on the same folder at once. A final instance
// then drains: every acknowledged span must reach the Collector.
func runRelayKills(t *testing.T, name string, kills int, total time.Duration) {
	r := scenario(t, name)
	s := startSink(t)
	proxy := otlptest.StartProxy(t, s.url)
	dir := filepath.Join(t.TempDir(), "spool")
	env := relayEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT="+proxy.URL())
	start := func() *relayProc {
		return startRelay(t, env, "--listen", "127.0.0.1:0", "--dir", dir)
	}
	var cur atomic.Pointer[relayProc]
	cur.Store(start())

	var (
		mu       sync.Mutex
		produced int
		acked    []otlptest.SpanKey
		posts    [2]int // failed, succeeded
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // the producer
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			body, keys := otlptest.TraceBody(100)
			ok, _ := postTraces(c, cur.Load().url("/v1/traces"), body)
			mu.Lock()
			produced += len(keys)
			if ok {
				acked = append(acked, keys...)
				posts[1]++
			} else {
				posts[0]++
			}
			mu.Unlock()
		}
	})
	wg.Go(func() { // the upstream flaps
		modes := []otlptest.Mode{otlptest.Pass, otlptest.Refuse, otlptest.Pass, otlptest.HTTPStatus(http.StatusServiceUnavailable, "")}
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			if err := proxy.SetMode(modes[i%len(modes)]); err != nil {
				t.Errorf("SetMode: %v", err)
			}
		}
	})
	wg.Go(func() { // the backlog, when a relay answers
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if st, err := quietStatus(cur.Load()); err == nil {
				r.set(func(r *row) { r.backlog = max(r.backlog, st.Backlog.Records) })
			}
		}
	})

	began := time.Now()
	slot := total / time.Duration(kills)
	for i := range kills {
		at := began.Add(time.Duration(i)*slot + rand.N(slot*3/4))
		time.Sleep(time.Until(at))
		p := cur.Load()
		if code := p.signal(t, syscall.SIGKILL, 10*time.Second); code == 0 {
			t.Errorf("kill %d: relay exit code 0 after SIGKILL", i+1)
		}
		cur.Store(start())
	}
	time.Sleep(time.Until(began.Add(total)))
	close(stop)
	wg.Wait()
	if err := proxy.SetMode(otlptest.Pass); err != nil {
		t.Errorf("SetMode(Pass): %v", err)
	}

	// The instance started after the last kill drains the folder.
	final := cur.Load()
	ctx, cancel := context.WithTimeout(context.Background(), flushLimit)
	defer cancel()
	var st relayStatus
	for {
		var err error
		st, err = quietStatus(final)
		if err == nil && st.Backlog.Records == 0 && s.missing(acked) == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Errorf("not drained within %v: status %+v (%v)", flushLimit, st, err)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	received, dups := s.spanCounts()
	r.set(func(r *row) {
		r.counted = true
		r.produced, r.acked, r.received, r.dups = produced, len(acked), received, dups
		r.lost = s.missing(acked)
	})
	t.Logf("%d kills in %v: %d posts failed, %d succeeded; produced=%d acked=%d received=%d lost=%d dups=%d backlog=%d; final relay %+v",
		kills, total, posts[0], posts[1], r.produced, r.acked, r.received, r.lost, r.dups, r.backlog, st)
	if len(acked) == 0 {
		t.Fatalf("no export acknowledged")
	}
	if r.lost != 0 {
		t.Errorf("lost %d of %d acknowledged spans", r.lost, r.acked)
	}
	if received > produced {
		t.Errorf("received %d distinct spans, more than the %d produced", received, produced)
	}
	if st.Dropped.Total != 0 {
		t.Errorf("the final relay dropped %d exports", st.Dropped.Total)
	}
	if code := final.signal(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Errorf("final relay exit code %d after SIGTERM, want 0", code)
	}
}

// quietStatus is GET /status, its failure returned rather than reported:
// the relay may have just been killed.
func quietStatus(p *relayProc) (relayStatus, error) {
	var st relayStatus
	resp, err := p.client.Get(p.url("/status"))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /status: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}
