package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

var outageName = map[string]string{
	"refused":   "refused connections",
	"503":       "HTTP 503",
	"blackhole": "blackholed connections",
}

// outageText names the outage of scenario, among whose results rs are:
// the 503 outage is gRPC Unavailable to the gRPC systems.
func outageText(scenario string, rs []*result) string {
	if scenario == "503" && slices.ContainsFunc(rs, func(r *result) bool { return isGRPC(r.System) }) {
		return outageName[scenario] + ", gRPC Unavailable"
	}
	return outageName[scenario]
}

// markdown renders the report: settings, one table per scenario, the
// targets with a verdict each, and links to the plots.
func markdown(rep *report, plots map[string][]string) string {
	var b strings.Builder
	s := rep.Settings
	m := rep.Machine
	fmt.Fprintf(&b, "# otlpretry side by side: results\n\n")
	fmt.Fprintf(&b, "Run %s to %s UTC: `%s`\n\n", rep.Started.Format("2006-01-02 15:04"), rep.Finished.Format("15:04"), strings.TrimSpace(rep.Command))
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %s of memory, Linux %s, %s; load average %s at the start, %s at the end. otlpretry at %s.\n\n",
		m.CPUs, m.CPUModel, m.Memory, m.Kernel, m.Go, m.LoadAtStart, m.LoadAtEnd, m.Commit)
	if rep.Error != "" {
		fmt.Fprintf(&b, "**The run failed before the end**: %s\n\n", firstLineOf(rep.Error))
	}
	present := map[string]bool{}
	anyGRPC := false
	for _, r := range rep.Results {
		present[r.System] = true
		anyGRPC = anyGRPC || isGRPC(r.System)
	}
	exporters := "otlptracehttp"
	if anyGRPC {
		exporters = "otlptracehttp, otlptracegrpc in the -grpc systems"
	}
	fmt.Fprintf(&b, "Systems (each application is the OTel Go SDK v1.47: TracerProvider, BatchSpanProcessor, %s):\n\n", exporters)
	for _, sys := range knownSystems {
		if present[sys] {
			fmt.Fprintf(&b, "- **%s**: %s\n", systemLabel[sys], systemText[sys])
		}
	}
	fmt.Fprintf(&b, "\nCPU and peak RSS are those of the process doing the export work: the application for A, B and the limit, the Collector for C, the relay for D (the same for their -grpc variants); the application's own follow for C and D. CPU counts from the start of the load to the moment everything was delivered (or the wait ended), so it includes the drain; peak RSS is the process's VmHWM. Disk is the space the spool folder or the Collector's storage folder takes (allocated blocks), sampled every 0.5 s.\n\n")

	byScenario := map[string][]*result{}
	for _, r := range rep.Results {
		byScenario[r.Scenario] = append(byScenario[r.Scenario], r)
	}
	for _, sc := range allScenarios {
		rs := byScenario[sc]
		if len(rs) == 0 {
			continue
		}
		switch sc {
		case "steady":
			fmt.Fprintf(&b, "## Steady: %s at %s spans/s, no fault\n\n", secs(s.Steady), num(int64(s.Rate)))
			timedTable(&b, rs, false)
		case "backlog":
			fmt.Fprintf(&b, "## Backlog: %s exports of %s spans (~%s each), built while the endpoint refuses connections, then drained\n\n",
				num(int64(s.Backlog)), num(int64(s.Batch)), bytesText(int64(s.ExportBytes)))
			backlogTable(&b, rs, s)
		case "latency":
			latencySection(&b, rs, byScenario["full-spool"], s)
		default:
			fmt.Fprintf(&b, "## Outage: %s for %s in a %s run at %s spans/s (from %s to %s)\n\n",
				outageText(sc, rs), secs(s.Outage), secs(3*s.Outage), num(int64(s.Rate)), secs(s.Outage), secs(2*s.Outage))
			timedTable(&b, rs, true)
		}
		for _, p := range plots[sc] {
			fmt.Fprintf(&b, "![%s](%s)\n\n", strings.TrimSuffix(p, ".png"), p)
		}
	}
	fmt.Fprintf(&b, "## Targets\n\n")
	targetsTable(&b, rep)
	return b.String()
}

var systemText = map[string]string{
	"A":       "the plain exporter, defaults (in-memory retries of 429/502/503/504 for up to 1 min; refused connections are not retried).",
	"B":       "the same exporter over `otlpretry.New(otlpretry.WithDir(...))`'s client, every other setting at its default.",
	"C":       "the application's plain exporter sends to a local Collector (v0.165.0 core, file_storage v0.165.1): otlp receiver, otlp_http exporter with `sending_queue` on `file_storage` (queue large enough for the backlog), `retry_on_failure` with `max_elapsed_time: 0`, all else default (10 consumers, gzip to the upstream, fsync off).",
	"D":       "the application's plain exporter sends to `otlpretry relay` (defaults: `--sync durable`).",
	"limit":   "the application's exporter hands its payloads to a buffer in memory that the driver tells when the endpoint goes down and comes back; it posts them with a plain HTTP client, 4 at a time (otlpretry's concurrency), at once on the return. No layer, no disk: what nothing can beat. In the latency scenario it packs consecutive exports into requests of up to the merge bound (1 MiB unless `-request-bytes` says otherwise) with otlpretry's own adaptive window in flight (internal/batch: 4, growing in slow start to 32): the same bytes and the same window, without the layer.",
	"B-off":   "B with merged backlog requests off (`OTLPRETRY_MAX_REQUEST_BYTES=-1`): one stored export per request, as before merging (latency scenario only).",
	"A-grpc":  "the plain gRPC exporter (otlptracegrpc), defaults: in-memory retries of Unavailable (a refused connection included) and the other retryable codes, from 5 s apart, but within each export's 10 s timeout, so an export is tried about twice before it is given up.",
	"B-grpc":  "the same gRPC exporter with `otlptracegrpc.WithDialOption(otlpretrygrpc.DialOption(rt))` with `rt` from `otlpretry.New(otlpretry.WithDir(...))`, every other setting at its default.",
	"C-grpc":  "C over gRPC: the application's plain gRPC exporter sends to the Collector's otlp receiver on gRPC, which forwards with the otlp_grpc exporter (insecure) with the same `sending_queue` on `file_storage` and `retry_on_failure` as C, all else default (gzip to the upstream).",
	"D-grpc":  "the application's plain gRPC exporter sends to the gRPC receiver of `otlpretry relay --protocol grpc`, which forwards over gRPC (defaults otherwise: `--sync durable`).",
	"C-batch": "C with the sending queue's batching enabled (`sending_queue.batch`: `flush_timeout: 200ms`, `sizer: items`, `min_size: 8192`, the values the Collector gives it when enabled; latency scenario only).",
}

// timedRow is one system in a time-based scenario: counts summed over the
// rounds (the steady run is repeated), CPU and memory medians.
type timedRow struct {
	sys                                    string
	produced, outage, received, lost, dups int64
	recovery                               float64
	cpu, appCPU                            float64
	cpus                                   []float64
	rss, appRSS, disk                      int64
}

func timedRows(rs []*result) []timedRow {
	var rows []timedRow
	for _, sys := range knownSystems {
		row := timedRow{sys: sys, recovery: -1}
		var cpu, appCPU, rss, appRSS []float64
		for _, r := range rs {
			if r.System != sys {
				continue
			}
			row.produced += r.Produced
			row.outage += r.Outage
			row.received += r.Received
			row.lost += r.Lost
			row.dups += r.Duplicates
			row.recovery = r.Recovery // outage scenarios run once
			cpu = append(cpu, r.WorkerCPU)
			appCPU = append(appCPU, r.AppCPU)
			rss = append(rss, float64(r.WorkerRSS))
			appRSS = append(appRSS, float64(r.AppRSS))
			row.disk = max(row.disk, r.PeakDisk)
		}
		if len(cpu) == 0 {
			continue
		}
		row.cpus = cpu
		row.cpu, row.appCPU = median(cpu), median(appCPU)
		row.rss, row.appRSS = int64(median(rss)), int64(median(appRSS))
		rows = append(rows, row)
	}
	return rows
}

func timedTable(b *strings.Builder, rs []*result, outage bool) {
	rounds := 0
	for _, r := range rs {
		rounds = max(rounds, r.Round)
	}
	cpuHead := "CPU s"
	if rounds > 1 {
		fmt.Fprintf(b, "%d rounds, every system at once in each: spans summed over the rounds; CPU and memory are medians, with each round's CPU in brackets.\n\n", rounds)
		cpuHead = "CPU s (each round)"
	}
	if outage {
		fmt.Fprintf(b, "| System | produced | produced in the outage | received | lost | duplicates | recovery | %s | peak RSS MiB | app CPU s | app peak RSS MiB | peak disk MiB |\n", cpuHead)
		fmt.Fprintf(b, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	} else {
		fmt.Fprintf(b, "| System | produced | received | lost | duplicates | %s | peak RSS MiB | app CPU s | app peak RSS MiB | peak disk MiB |\n", cpuHead)
		fmt.Fprintf(b, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	}
	for _, r := range timedRows(rs) {
		appCPU, appRSS := "", ""
		if k := kind(r.sys); k == "C" || k == "D" {
			appCPU, appRSS = f2(r.appCPU), mib(r.appRSS)
		}
		cpu := f2(r.cpu)
		if len(r.cpus) > 1 {
			var each []string
			for _, c := range r.cpus {
				each = append(each, f2(c))
			}
			cpu += " (" + strings.Join(each, ", ") + ")"
		}
		disk := ""
		if k := kind(r.sys); k == "B" || k == "C" || k == "D" {
			disk = mib(r.disk)
		}
		if outage {
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				systemLabel[r.sys], num(r.produced), num(r.outage), num(r.received), num(r.lost), num(r.dups), recText(r.recovery),
				cpu, mib(r.rss), appCPU, appRSS, disk)
		} else {
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				systemLabel[r.sys], num(r.produced), num(r.received), num(r.lost), num(r.dups),
				cpu, mib(r.rss), appCPU, appRSS, disk)
		}
	}
	if outage {
		fmt.Fprintf(b, "\nRecovery: from the endpoint's return until every span produced before it had been received (checked every 50 ms); \"never\" when some were lost.\n")
	}
	fmt.Fprintln(b)
}

// backlogRow is one system's backlog figures over the rounds: medians,
// with the drain of each round listed.
type backlogRow struct {
	sys                              string
	exports, lost, dups              int64
	build, first, drain, rate, vs    float64
	send, sendVs                     float64
	drains                           []float64
	workCPU, appCPU                  float64
	workRSS, appRSS, peakDisk, after int64
	meanExport                       float64
	requests, wire                   float64 // upstream: requests and bytes at the receiver
	undrained                        bool
}

func backlogRows(rs []*result, s settings) []backlogRow {
	batch := float64(max(1, s.Batch))
	var rows []backlogRow
	for _, sys := range knownSystems {
		var mine []*result
		for _, r := range rs {
			if r.System == sys {
				mine = append(mine, r)
			}
		}
		if len(mine) == 0 {
			continue
		}
		row := backlogRow{sys: sys}
		var build, first, drain, rate, vs, send, sendVs, wcpu, acpu, wrss, arss, disk, after, mean, reqs, wire []float64
		for _, r := range mine {
			row.exports += r.Handed / int64(batch)
			row.lost += r.Lost
			row.dups += r.Duplicates
			build = append(build, r.Build)
			row.drains = append(row.drains, r.Drain)
			if r.Drain < 0 {
				row.undrained = row.undrained || r.Handed > 0
			} else {
				first = append(first, r.FirstAt)
				drain = append(drain, r.Drain)
				rate = append(rate, r.DrainRate/batch)
				vs = append(vs, r.VsLimit)
				send = append(send, r.SendRate/batch)
				sendVs = append(sendVs, r.SendVs)
			}
			wcpu = append(wcpu, r.WorkerCPU)
			acpu = append(acpu, r.AppCPU)
			wrss = append(wrss, float64(r.WorkerRSS))
			arss = append(arss, float64(r.AppRSS))
			disk = append(disk, float64(r.PeakDisk))
			after = append(after, float64(r.DiskAfter))
			if r.Requests > 0 {
				mean = append(mean, float64(r.WireBytes)/float64(r.Requests))
			}
			reqs = append(reqs, float64(r.Requests))
			wire = append(wire, float64(r.WireBytes))
		}
		row.requests, row.wire = median(reqs), median(wire)
		row.exports /= int64(len(mine))
		row.build, row.first, row.drain = median(build), median(first), median(drain)
		row.rate, row.vs, row.send, row.sendVs = median(rate), median(vs), median(send), median(sendVs)
		row.workCPU, row.appCPU = median(wcpu), median(acpu)
		row.workRSS, row.appRSS = int64(median(wrss)), int64(median(arss))
		row.peakDisk, row.after = int64(median(disk)), int64(median(after))
		row.meanExport = median(mean)
		rows = append(rows, row)
	}
	return rows
}

func pct(x float64) string {
	if x <= 0 {
		return ""
	}
	return fmt.Sprintf("%.0f %%", 100*x)
}

func backlogTable(b *strings.Builder, rs []*result, s settings) {
	rounds := 0
	for _, r := range rs {
		rounds = max(rounds, r.Round)
	}
	rows := backlogRows(rs, s)
	fmt.Fprintf(b, "Medians of %d round(s), each system alone; the drain of each round is listed, and ratios to the limit are taken within each round.\n\n", rounds)
	fmt.Fprintf(b, "| System | exports stored | lost spans | duplicates | build s | first span after | drain s (each round) | drain, exports/s | vs limit | sending, exports/s | vs limit |\n")
	fmt.Fprintf(b, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, row := range rows {
		var drains []string
		for _, d := range row.drains {
			if d < 0 {
				drains = append(drains, "never")
			} else {
				drains = append(drains, f2(d))
			}
		}
		first, rate, send := "", "", ""
		if row.rate > 0 {
			first = f2(row.first) + " s"
			rate = num(int64(math.Round(row.rate)))
			send = num(int64(math.Round(row.send)))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			systemLabel[row.sys], num(row.exports), num(row.lost), num(row.dups), f2(row.build), first, strings.Join(drains, ", "),
			rate, pct(row.vs), send, pct(row.sendVs))
	}
	fmt.Fprintf(b, "\nDrain: from the endpoint's return until every span exported during the outage had been received; drain rate: the backlog over that time. First span after: from the return to the first span received (the layer's wake-up: a probe, a backoff). Sending: the backlog over the time from the first span received to the last. A stores nothing (its exporter does not retry refused connections), so it has no backlog.\n\n")
	fmt.Fprintf(b, "| System | CPU s | peak RSS MiB | app CPU s | app peak RSS MiB | peak disk MiB | disk after MiB | bytes per request upstream |\n")
	fmt.Fprintf(b, "|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, row := range rows {
		appCPU, appRSS := "", ""
		if row.sys == "C" || row.sys == "D" {
			appCPU, appRSS = f2(row.appCPU), mib(row.appRSS)
		}
		disk, after := "", ""
		if row.sys == "B" || row.sys == "C" || row.sys == "D" {
			disk, after = mib(row.peakDisk), mib(row.after)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n",
			systemLabel[row.sys], f2(row.workCPU), mib(row.workRSS), appCPU, appRSS, disk, after, num(int64(math.Round(row.meanExport))))
	}
	fmt.Fprintf(b, "\nCPU: from the start of the build to the end of the drain. The limit holds the whole backlog in memory, hence its RSS. The Collector gzips what it sends upstream (its default), hence its fewer bytes per request; its storage file does not shrink once drained.\n\n")
}

// target is one line of the targets table.
type target struct{ what, measured, verdict string }

func targetsTable(b *strings.Builder, rep *report) {
	get := func(scenario, sys string) []*result {
		var out []*result
		for _, r := range rep.Results {
			if r.Scenario == scenario && r.System == sys {
				out = append(out, r)
			}
		}
		return out
	}
	var ts []target

	// Nothing lost.
	for _, set := range []struct {
		systems []string
		what    string
	}{
		{[]string{"B", "D"}, "B and D lose nothing in every scenario"},
		{[]string{"C"}, "C loses nothing"},
		{[]string{"B-grpc", "D-grpc"}, "B-grpc and D-grpc lose nothing in every scenario"},
		{[]string{"C-grpc"}, "C-grpc loses nothing"},
	} {
		var parts []string
		ok, any := true, false
		for _, sys := range set.systems {
			for _, sc := range allScenarios {
				rs := get(sc, sys)
				if len(rs) == 0 {
					continue
				}
				any = true
				var lost, produced int64
				for _, r := range rs {
					lost += r.Lost
					produced += r.Produced
				}
				if lost != 0 {
					ok = false
				}
				parts = append(parts, fmt.Sprintf("%s %s: %s of %s", sys, sc, num(lost), num(produced)))
			}
		}
		if any {
			ts = append(ts, target{set.what, "lost " + strings.Join(parts, "; "), verdict(ok)})
		}
	}

	// A's loss against what the outage produced.
	for _, a := range []string{"A", "A-grpc"} {
		var parts []string
		for _, sc := range []string{"refused", "503", "blackhole"} {
			for _, r := range get(sc, a) {
				parts = append(parts, fmt.Sprintf("%s: lost %s, %s produced during the outage", sc, num(r.Lost), num(r.Outage)))
			}
		}
		if len(parts) > 0 {
			ts = append(ts, target{a + " loses what arrives during the outage (the baseline)", strings.Join(parts, "; "), "as expected"})
		}
	}

	// Drain rates.
	if rs := rep.resultsOf("backlog"); len(rs) > 0 {
		rows := map[string]backlogRow{}
		for _, row := range backlogRows(rs, rep.Settings) {
			rows[row.sys] = row
		}
		for _, sys := range []string{"B", "D"} {
			row, ok := rows[sys]
			if !ok {
				continue
			}
			if lim, ok := rows["limit"]; ok && lim.rate > 0 {
				// Over the whole drain the layer's wake-up counts (the
				// limit is told the instant the endpoint is back); once
				// sending, only its speed. Both are given their verdict.
				v := verdict(!row.undrained && row.vs >= 0.8)
				if row.vs < 0.8 && row.sendVs >= 0.8 && !row.undrained {
					v = "met once sending; **not met** over the whole drain"
				}
				ts = append(ts, target{
					fmt.Sprintf("Drain rate of %s at least 80 %% of the limit", sys),
					fmt.Sprintf("%.0f %% over the whole drain (%s vs %s exports/s); %.0f %% once sending (%s vs %s exports/s); medians of the per-round ratios",
						100*row.vs, num(int64(row.rate)), num(int64(lim.rate)), 100*row.sendVs, num(int64(row.send)), num(int64(lim.send))),
					v,
				})
			}
			if c, ok := rows["C"]; ok {
				switch {
				case c.undrained:
					ts = append(ts, target{fmt.Sprintf("Drain rate of %s at least 2x C's", sys), "C never drained", verdict(!row.undrained)})
				case c.rate > 0:
					ts = append(ts, target{
						fmt.Sprintf("Drain rate of %s at least 2x C's", sys),
						fmt.Sprintf("%.1fx over the whole drain (%s vs %s exports/s); %.1fx once sending (%s vs %s)",
							row.rate/c.rate, num(int64(row.rate)), num(int64(c.rate)), row.send/c.send, num(int64(row.send)), num(int64(c.send))),
						verdict(!row.undrained && row.rate >= 2*c.rate),
					})
				}
			}
		}
	}

	ts = append(ts, latencyTargets(rep)...)

	// Recovery, against C's over the same protocol.
	for _, sys := range []string{"B", "D", "B-grpc", "D-grpc"} {
		cSys := "C"
		if isGRPC(sys) {
			cSys = "C-grpc"
		}
		var parts []string
		okFast, okVsC, any := true, true, false
		for _, sc := range []string{"refused", "503", "blackhole"} {
			mine, cs := get(sc, sys), get(sc, cSys)
			if len(mine) == 0 {
				continue
			}
			any = true
			r := mine[0]
			part := fmt.Sprintf("%s %s", sc, recText(r.Recovery))
			if sc != "503" && (r.Recovery < 0 || r.Recovery >= 5) {
				okFast = false
			}
			if len(cs) > 0 {
				c := cs[0]
				part += " (" + cSys + " " + recText(c.Recovery) + ")"
				if r.Recovery < 0 || (c.Recovery >= 0 && r.Recovery > c.Recovery) {
					okVsC = false
				}
			}
			parts = append(parts, part)
		}
		if any {
			ts = append(ts, target{
				fmt.Sprintf("Recovery of %s under 5 s for refused and blackholed outages, never later than %s", sys, cSys),
				strings.Join(parts, "; "),
				verdict(okFast && okVsC),
			})
		}
	}

	// Steady CPU and memory, compared within each round.
	steady := map[int]map[string]*result{}
	for _, r := range rep.resultsOf("steady") {
		if steady[r.Round] == nil {
			steady[r.Round] = map[string]*result{}
		}
		steady[r.Round][r.System] = r
	}
	// The HTTP systems against each other, then the gRPC ones.
	for _, suffix := range []string{"", grpcSuffix} {
		ts = append(ts, steadyTargets(steady, suffix)...)
	}

	fmt.Fprintf(b, "| Target | Measured | Verdict |\n|---|---|---|\n")
	for _, t := range ts {
		fmt.Fprintf(b, "| %s | %s | %s |\n", t.what, t.measured, t.verdict)
	}
	fmt.Fprintln(b)
}

// steadyTargets compares, within each steady round, B's CPU with A's and
// D's CPU and memory with C's, for the systems named with suffix.
func steadyTargets(steady map[int]map[string]*result, suffix string) []target {
	var ts []target
	A, B, C, D := "A"+suffix, "B"+suffix, "C"+suffix, "D"+suffix
	var bOverA, dOverC, dRSSOverC []float64
	var aCPU, bCPU, cCPU, dCPU, cRSS, dRSS []float64
	for n := 1; n <= len(steady); n++ {
		round := steady[n]
		if a, b := round[A], round[B]; a != nil && b != nil && a.WorkerCPU > 0 {
			bOverA = append(bOverA, b.WorkerCPU/a.WorkerCPU)
			aCPU, bCPU = append(aCPU, a.WorkerCPU), append(bCPU, b.WorkerCPU)
		}
		if c, d := round[C], round[D]; c != nil && d != nil && c.WorkerCPU > 0 && c.WorkerRSS > 0 {
			dOverC = append(dOverC, d.WorkerCPU/c.WorkerCPU)
			dRSSOverC = append(dRSSOverC, float64(d.WorkerRSS)/float64(c.WorkerRSS))
			cCPU, dCPU = append(cCPU, c.WorkerCPU), append(dCPU, d.WorkerCPU)
			cRSS, dRSS = append(cRSS, float64(c.WorkerRSS)), append(dRSS, float64(d.WorkerRSS))
		}
	}
	if len(bOverA) > 0 {
		ratio := median(bOverA)
		var each []string
		for _, x := range bOverA {
			each = append(each, fmt.Sprintf("%+.0f %%", 100*(x-1)))
		}
		ts = append(ts, target{fmt.Sprintf("Steady run: %s's CPU within 5 %% of %s's", B, A),
			fmt.Sprintf("%+.0f %% (median of the rounds: %s); %s s vs %s s (medians)", 100*(ratio-1), strings.Join(each, ", "), f2(median(bCPU)), f2(median(aCPU))),
			verdict(ratio <= 1.05)})
	}
	if len(dOverC) > 0 {
		ts = append(ts, target{fmt.Sprintf("Steady run: %s's CPU and memory below %s's", D, C),
			fmt.Sprintf("relay %s s, %s MiB; Collector %s s, %s MiB (medians); relay/Collector per round: CPU %.2f, memory %.2f (medians)",
				f2(median(dCPU)), mib(int64(median(dRSS))), f2(median(cCPU)), mib(int64(median(cRSS))), median(dOverC), median(dRSSOverC)),
			verdict(median(dOverC) < 1 && median(dRSSOverC) < 1)})
	}
	return ts
}

func (rep *report) resultsOf(scenario string) []*result {
	var out []*result
	for _, r := range rep.Results {
		if r.Scenario == scenario {
			out = append(out, r)
		}
	}
	return out
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func recText(s float64) string {
	if s < 0 {
		return "never"
	}
	return f2(s) + " s"
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func f2(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) }

func mib(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) }

func secs(s float64) string { return strconv.FormatFloat(s, 'f', -1, 64) + " s" }

func bytesText(n int64) string {
	if n > 0 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	if n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d bytes", n)
}

// num writes n with thousands separators, as the docs do.
func num(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
