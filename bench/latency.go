package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// The latency scenario: the backlog scenario's build (exports stored while
// the endpoint refuses connections), drained through a fault proxy that
// holds every chunk coming back from the receiver by the round-trip time
// (otlptest.Latency): an answer comes one round trip after its request was
// sent, as from a collector that far away. Requests themselves are not
// slowed, nor are connects: the figures leave out TCP's and TLS's extra
// round trips on a new connection and the bandwidth of a real link.
//
// Each round-trip time of -rtt is a set of lanes, one system at a time, the
// order alternating between rounds as in the backlog scenario; ratios to
// the limit are taken within a round and a round-trip time.

// limitBytes is the limit's merge bound.
func (c config) limitBytes() int {
	if c.reqBytes > 0 {
		return c.reqBytes
	}
	return limitRequestBytes
}

// latencyWindow is the limit's posts in flight: the bound the library's
// adaptive window grows to (the limit also keeps to the library's
// in-flight bytes budget).
const latencyWindow = 32

// latencyTuning is what the latency scenario sets in sys.
func (c config) latencyTuning(sys string) tuning {
	const variable = "OTLPRETRY_MAX_REQUEST_BYTES="
	switch sys {
	case "B-off":
		return tuning{env: []string{variable + "-1"}}
	case "B", "D":
		if c.reqBytes != 0 {
			return tuning{env: []string{variable + strconv.Itoa(c.reqBytes)}}
		}
	case "limit":
		return tuning{limitWindow: latencyWindow, limitMerge: c.limitBytes()}
	}
	return tuning{}
}

// latencyDrainLimit is the longest wait for a drain of exports through
// rtt: -drain-limit, plus half a round trip per export, which is what one
// export per request at 4 in flight would take twice over.
func (c config) latencyDrainLimit(exports int, rtt time.Duration) time.Duration {
	return c.drainLimit + time.Duration(exports)*rtt/2
}

func latencyMode(rtt time.Duration) otlptest.Mode {
	if rtt <= 0 {
		return otlptest.Pass
	}
	return otlptest.Latency(rtt)
}

// rttText names a round trip in logs, folders and tables.
func rttText(rtt time.Duration) string {
	if rtt <= 0 {
		return "loopback"
	}
	return rtt.String()
}

// runLatency runs every round-trip time of -rtt in each round, then, with
// -full-spool, the full spool's drain for B and D once.
func (e *env) runLatency(ctx context.Context) ([]*result, error) {
	c := e.cfg
	var results []*result
	for round := 1; round <= c.rounds; round++ {
		for _, rtt := range c.rtts {
			var set []*result
			for _, sys := range roundOrder(c.systemsFor("latency"), round) {
				e.log("latency %s, round %d: system %s: %d exports of ~%d bytes while the endpoint refuses", rttText(rtt), round, sys, c.backlog, c.exportBytes)
				r, err := e.runBacklogLane(ctx, backlogRun{
					scenario: "latency", dir: fmt.Sprintf("latency-%s-%d", rttText(rtt), round), sys: sys, round: round,
					exports: c.backlog, back: latencyMode(rtt), rtt: rtt,
					drainLimit: c.latencyDrainLimit(c.backlog, rtt), tune: c.latencyTuning(sys),
				})
				if err != nil {
					return nil, fmt.Errorf("latency %s, round %d, system %s: %w", rttText(rtt), round, sys, err)
				}
				if r.Drain >= 0 {
					e.log("latency %s, round %d: system %s drained %d spans in %.2f s in %d requests", rttText(rtt), round, sys, r.Handed, r.Drain, r.Requests)
				}
				set = append(set, r)
			}
			vsLimit(set)
			results = append(results, set...)
		}
	}
	if c.fullSpool > 0 {
		for _, sys := range []string{"B", "D"} {
			if !contains(c.systemsFor("latency"), sys) {
				continue
			}
			e.log("full spool: system %s: %d exports of ~%d bytes while the endpoint refuses, then %s round trips", sys, c.fullSpool, c.exportBytes, fullSpoolRTT)
			r, err := e.runBacklogLane(ctx, backlogRun{
				scenario: "full-spool", dir: "full-spool", sys: sys, round: 1,
				exports: c.fullSpool, back: latencyMode(fullSpoolRTT), rtt: fullSpoolRTT,
				drainLimit: c.latencyDrainLimit(c.fullSpool, fullSpoolRTT), tune: c.latencyTuning(sys),
			})
			if err != nil {
				return nil, fmt.Errorf("full spool, system %s: %w", sys, err)
			}
			if r.Drain >= 0 {
				e.log("full spool: system %s drained %d spans in %.2f s in %d requests", sys, r.Handed, r.Drain, r.Requests)
			}
			results = append(results, r)
		}
	}
	return results, nil
}

// byRTT groups latency results by round trip, in increasing order.
func byRTT(rs []*result) (rtts []float64, groups map[float64][]*result) {
	groups = map[float64][]*result{}
	for _, r := range rs {
		if _, ok := groups[r.RTT]; !ok {
			rtts = append(rtts, r.RTT)
		}
		groups[r.RTT] = append(groups[r.RTT], r)
	}
	slices.Sort(rtts)
	return rtts, groups
}

// rttLabel names a round trip given in seconds in tables: "100 ms".
func rttLabel(s float64) string {
	if s <= 0 {
		return "loopback"
	}
	return strconv.FormatFloat(math.Round(s*1e4)/10, 'f', -1, 64) + " ms"
}

// latencySection renders the latency scenario: one table per round trip,
// then the full spool's drain.
func latencySection(b *strings.Builder, rs, spool []*result, s settings) {
	rtts, groups := byRTT(rs)
	var names []string
	for _, x := range rtts {
		names = append(names, rttLabel(x))
	}
	fmt.Fprintf(b, "## Latency: %s exports of %s spans (~%s each), built while the endpoint refuses connections, then drained through a round trip of %s\n\n",
		num(int64(s.Backlog)), num(int64(s.Batch)), bytesText(int64(s.ExportBytes)), strings.Join(names, ", "))
	fmt.Fprintf(b, "The fault proxy holds every answer back by the round trip (loopback: no delay); requests and connects are not slowed. The limit packs the held exports into requests of up to %s, sent with otlpretry's own adaptive window and in-flight bytes budget. Medians of the rounds, each system alone; ratios to the limit are taken within a round.\n\n", bytesText(int64(s.RequestBytes)))
	for _, x := range rtts {
		rows := backlogRows(groups[x], s)
		by := map[string]backlogRow{}
		for _, row := range rows {
			by[row.sys] = row
		}
		fmt.Fprintf(b, "### Round trip: %s\n\n", rttLabel(x))
		fmt.Fprintf(b, "| System | exports stored | lost spans | duplicates | first span after | drain s (each round) | drain, exports/s | vs limit | vs C | vs C-batch | requests upstream | MiB upstream | CPU s | peak RSS MiB | app peak RSS MiB |\n")
		fmt.Fprintf(b, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, row := range rows {
			var drains []string
			for _, d := range row.drains {
				if d < 0 {
					drains = append(drains, "never")
				} else {
					drains = append(drains, f2(d))
				}
			}
			first, rate := "", ""
			if row.rate > 0 {
				first = f2(row.first) + " s"
				rate = num(int64(math.Round(row.rate)))
			}
			appRSS := ""
			if row.sys == "C" || row.sys == "C-batch" || row.sys == "D" {
				appRSS = mib(row.appRSS)
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				systemLabel[row.sys], num(row.exports), num(row.lost), num(row.dups), first, strings.Join(drains, ", "), rate,
				pct(row.vs), times(row, by["C"]), times(row, by["C-batch"]),
				num(int64(math.Round(row.requests))), mib(int64(row.wire)), f2(row.workCPU), mib(row.workRSS), appRSS)
		}
		fmt.Fprintln(b)
	}
	fmt.Fprintf(b, "Drain: from the endpoint's return until every span stored had been received; first span after: the layer's wake-up. vs C: drain rate over C's (above 1: faster). Requests and bytes upstream are counted at the receiver (the Collector gzips, the others send protobuf as stored). CPU and peak RSS: the process doing the export work (the application for B-off, B and the limit, the Collector for C, the relay for D); app peak RSS: the application in front of C and D.\n\n")
	if len(spool) == 0 {
		return
	}
	fmt.Fprintf(b, "### A full spool (%s exports of ~%s) drained at a round trip of %s\n\n", num(int64(s.FullSpool)), bytesText(int64(s.ExportBytes)), rttLabel(spool[0].RTT))
	fmt.Fprintf(b, "| System | exports stored | peak disk MiB | lost spans | duplicates | first span after | drain s | drain, exports/s | requests upstream | MiB upstream | CPU s | peak RSS MiB |\n")
	fmt.Fprintf(b, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, row := range backlogRows(spool, s) {
		drain, rate, first := "never", "", ""
		if row.rate > 0 {
			drain, rate, first = f2(row.drain), num(int64(math.Round(row.rate))), f2(row.first)+" s"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			systemLabel[row.sys], num(row.exports), mib(row.peakDisk), num(row.lost), num(row.dups), first, drain, rate,
			num(int64(math.Round(row.requests))), mib(int64(row.wire)), f2(row.workCPU), mib(row.workRSS))
	}
	fmt.Fprintf(b, "\nExports stored: those the spool took; once it is full, new exports are refused (drop-newest) and not counted.\n\n")
}

// times is row's drain rate over other's, as "2.5x"; empty when either
// did not drain or row is other.
func times(row, other backlogRow) string {
	if row.sys == other.sys || row.rate <= 0 || other.rate <= 0 || row.undrained || other.undrained {
		return ""
	}
	return fmt.Sprintf("%.1fx", row.rate/other.rate)
}

// loopbackRate is B's exports per second on loopback in the side-by-side
// backlog run the latency targets compare against.
const loopbackRate = 9100

// latencyTargets judges the latency scenario: at 100 ms, B and D drain in
// under 5 s, at 80 % of the limit or more, faster than C in both of its
// configurations, in under 64 MiB; on loopback B is no slower than
// loopbackRate; nothing is lost.
func latencyTargets(rep *report) []target {
	rs := rep.resultsOf("latency")
	if len(rs) == 0 {
		return nil
	}
	var ts []target
	_, groups := byRTT(rs)
	at := func(rtt float64) map[string]backlogRow {
		rows := map[string]backlogRow{}
		for _, row := range backlogRows(groups[rtt], rep.Settings) {
			rows[row.sys] = row
		}
		return rows
	}
	if _, ok := groups[0.1]; ok {
		rows := at(0.1)
		for _, sys := range []string{"B", "D"} {
			row, ok := rows[sys]
			if !ok {
				continue
			}
			drain := "never"
			if !row.undrained {
				drain = f2(row.drain) + " s"
			}
			ts = append(ts, target{
				fmt.Sprintf("100 ms round trip: %s drains %s exports in under 5 s", sys, num(row.exports)),
				drain + " (median)",
				verdict(!row.undrained && row.drain < 5),
			})
			if lim, ok := rows["limit"]; ok && lim.rate > 0 {
				ts = append(ts, target{
					fmt.Sprintf("100 ms round trip: %s at least 80 %% of the limit", sys),
					fmt.Sprintf("%.0f %% (%s vs %s exports/s; median of the per-round ratios)", 100*row.vs, num(round(row.rate)), num(round(lim.rate))),
					verdict(!row.undrained && row.vs >= 0.8),
				})
			}
			var parts []string
			faster := true
			for _, c := range []string{"C", "C-batch"} {
				other, ok := rows[c]
				if !ok {
					continue
				}
				if other.undrained || other.rate <= 0 {
					parts = append(parts, c+" never drained")
					continue
				}
				parts = append(parts, fmt.Sprintf("%.1fx %s (%s vs %s exports/s)", row.rate/other.rate, c, num(round(row.rate)), num(round(other.rate))))
				faster = faster && row.rate > other.rate
			}
			if len(parts) > 0 {
				ts = append(ts, target{
					fmt.Sprintf("100 ms round trip: %s faster than C and C-batch", sys),
					strings.Join(parts, "; "),
					verdict(!row.undrained && faster),
				})
			}
			ts = append(ts, target{
				fmt.Sprintf("100 ms round trip: %s's peak RSS under 64 MiB", sys),
				mib(row.workRSS) + " MiB (median of the rounds' peaks)",
				verdict(row.workRSS > 0 && row.workRSS < 64<<20),
			})
		}
	}
	// Loopback: the latency scenario's own, else the backlog scenario's.
	var loop map[string]backlogRow
	where := ""
	if _, ok := groups[0]; ok {
		loop, where = at(0), "latency scenario on loopback"
	} else if bl := rep.resultsOf("backlog"); len(bl) > 0 {
		loop = map[string]backlogRow{}
		for _, row := range backlogRows(bl, rep.Settings) {
			loop[row.sys] = row
		}
		where = "backlog scenario"
	}
	if row, ok := loop["B"]; ok {
		ts = append(ts, target{
			fmt.Sprintf("Loopback: B no slower than %s exports/s", num(loopbackRate)),
			fmt.Sprintf("%s exports/s (%s, median)", num(round(row.rate)), where),
			verdict(!row.undrained && row.rate >= loopbackRate),
		})
	}
	var parts []string
	ok := true
	for _, r := range rs {
		if r.System != "B" && r.System != "D" {
			continue
		}
		ok = ok && r.Lost == 0
		if r.Lost != 0 || r.Duplicates != 0 {
			parts = append(parts, fmt.Sprintf("%s at %s round %d: lost %s, duplicates %s", r.System, rttLabel(r.RTT), r.Round, num(r.Lost), num(r.Duplicates)))
		}
	}
	if len(parts) == 0 {
		parts = []string{"no span lost, no duplicate"}
	}
	ts = append(ts, target{"Latency: B and D deliver every span (duplicates reported)", strings.Join(parts, "; "), verdict(ok)})
	return ts
}

func round(x float64) int64 { return int64(math.Round(x)) }
