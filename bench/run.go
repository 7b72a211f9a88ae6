package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// report is everything a run measured, as written to results.json.
type report struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Command  string    `json:"command"`
	Machine  machine   `json:"machine"`
	Settings settings  `json:"settings"`
	Results  []*result `json:"results"`
	Error    string    `json:"error,omitempty"`
}

type settings struct {
	Rate        int     `json:"rate"`
	Steady      float64 `json:"steady_s"`
	Outage      float64 `json:"outage_s"`
	Settle      float64 `json:"settle_s"`
	Backlog     int     `json:"backlog_exports"`
	ExportBytes int     `json:"export_bytes"`
	Batch       int     `json:"batch"`
	BacklogRate int     `json:"backlog_rate"`
	Rounds      int     `json:"rounds"`
	// The latency scenario's.
	RTTs         []float64 `json:"rtts_s,omitempty"`
	RequestBytes int       `json:"request_bytes,omitempty"`     // the limit's merge bound
	SetBytes     bool      `json:"request_bytes_set,omitempty"` // B and D were given it too
	FullSpool    int       `json:"full_spool_exports,omitempty"`
}

// run builds the programs, runs the scenarios and writes the results. The
// temporary folder and every child process are gone when it returns,
// whether it succeeded, failed or was cancelled. The results of the
// scenarios that finished are written even when a later one failed.
func run(ctx context.Context, c config, log io.Writer) (*report, error) {
	logf := func(format string, a ...any) {
		fmt.Fprintf(log, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
	}
	dir, err := os.MkdirTemp(c.work, "otlpretry-bench-")
	if err != nil {
		return nil, err
	}
	procs := &group{}
	defer func() {
		procs.killAll()
		if c.keep {
			logf("kept %s", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			logf("removing %s: %v", dir, err)
		}
	}()
	bins, err := build(ctx, filepath.Join(dir, "bin"), log)
	if err != nil {
		return nil, err
	}
	e := &env{cfg: c, bins: bins, dir: dir, procs: procs, log: logf}
	rep := &report{
		Started: time.Now().UTC(),
		Command: c.command,
		Machine: describeMachine(bins.rootDir),
		Settings: settings{
			Rate: c.rate, Steady: c.steady.Seconds(), Outage: c.outage.Seconds(), Settle: c.settle.Seconds(),
			Backlog: c.backlog, ExportBytes: c.exportBytes, Batch: c.batch, BacklogRate: c.backlogRate, Rounds: c.rounds,
		},
	}
	if contains(c.scenarios, "latency") {
		for _, d := range c.rtts {
			rep.Settings.RTTs = append(rep.Settings.RTTs, d.Seconds())
		}
		rep.Settings.RequestBytes = c.limitBytes()
		rep.Settings.SetBytes = c.reqBytes != 0
		rep.Settings.FullSpool = c.fullSpool
	}
	var runErr error
	for _, s := range c.scenarios {
		var rs []*result
		switch s {
		case "backlog":
			rs, runErr = e.runBacklog(ctx)
		case "latency":
			rs, runErr = e.runLatency(ctx)
		case "steady":
			// Repeated: its CPU figures are compared within a few
			// percent, and a shared machine's noise can be larger
			// than that.
			for round := 1; round <= c.rounds && runErr == nil; round++ {
				var more []*result
				more, runErr = e.runTimed(ctx, s, round)
				rs = append(rs, more...)
			}
		default:
			rs, runErr = e.runTimed(ctx, s, 1)
		}
		if runErr != nil {
			runErr = fmt.Errorf("scenario %s: %w", s, runErr)
			break
		}
		rep.Results = append(rep.Results, rs...)
	}
	rep.Finished = time.Now().UTC()
	rep.Machine.LoadAtEnd = loadAvg()
	if runErr != nil {
		rep.Error = runErr.Error()
	}
	if len(rep.Results) == 0 {
		return rep, runErr
	}
	if err := write(c, rep); err != nil {
		return rep, errors.Join(runErr, err)
	}
	return rep, runErr
}

// rerender writes the table and plots of an earlier run again, from its
// results.json: for the report's wording or the plots' style, without
// running anything.
func rerender(path, out string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(rep.Results) == 0 {
		return fmt.Errorf("%s holds no results", path)
	}
	s := rep.Settings
	c := config{
		out:         out,
		rate:        s.Rate,
		steady:      time.Duration(s.Steady * float64(time.Second)),
		outage:      time.Duration(s.Outage * float64(time.Second)),
		backlog:     s.Backlog,
		exportBytes: s.ExportBytes,
		batch:       s.Batch,
		rounds:      s.Rounds,
	}
	return write(c, &rep)
}

// write puts results.md, results.json and the plots in c.out.
func write(c config, rep *report) error {
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	// Compact: the time series make it large.
	js, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.out, "results.json"), js, 0o644); err != nil {
		return err
	}
	plots, err := writePlots(c, rep)
	if err != nil {
		return fmt.Errorf("plots: %w", err)
	}
	return os.WriteFile(filepath.Join(c.out, "results.md"), []byte(markdown(rep, plots)), 0o644)
}
