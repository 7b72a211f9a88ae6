package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/spoolinfo"
)

func runStatus(_ context.Context, args []string, e *env) int {
	fs := newFlagSet("status", "[--dir D] [--json]", `
Shows what a spool folder holds: exports waiting, held by a running
process (with its PID), or left by a process that is gone, their bytes and
the age of the oldest, by endpoint and signal, and what is in quarantine.
It only reads the folder (file names, and each record's header, never a
body), so it is safe while a relay or an application uses it.`, e)
	dir := fs.String("dir", "", "spool folder (env OTLPRETRY_DIR; default "+defaultDir()+")")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, done := parseFlags(fs, args, e); done {
		return code
	}
	rep, err := spoolinfo.Inspect(resolveDir(*dir, e), time.Now())
	if err != nil {
		fmt.Fprintf(e.stderr, "otlpretry status: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return exitFailure
		}
		return exitOK
	}
	fmt.Fprint(e.stdout, formatStatus(rep))
	return exitOK
}

func formatStatus(r *spoolinfo.Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Spool %s\n\n", r.Dir)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	row := func(name string, g spoolinfo.Group) {
		fmt.Fprintf(tw, "  %s\t%d\texports\t%s\toldest %s\n", name, g.Records, humanBytes(g.Bytes), age(g))
	}
	row("waiting", r.Waiting)
	row("held by a running process", r.Held)
	row("left by a process that is gone", r.Orphaned)
	row("total", r.Total)
	fmt.Fprintf(tw, "  quarantined\t%d\texports\t%s\t\n", r.Quarantined.Records, humanBytes(r.Quarantined.Bytes))
	tw.Flush()
	if len(r.Processes) > 0 {
		b.WriteString("\nProcesses:\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, p := range r.Processes {
			state := "running"
			if !p.Alive {
				state = "gone"
			}
			fmt.Fprintf(tw, "  pid %s\t%s\t%d\texports\t%s\n", pid(p.PID), state, p.Records, humanBytes(p.Bytes))
		}
		tw.Flush()
		var said []string
		for _, p := range r.Processes {
			for _, d := range p.Destinations {
				state := d.State
				if d.Cause != "" {
					state += ": " + d.Cause
				}
				said = append(said, fmt.Sprintf("  pid %s\t%s\t%s\n", pid(p.PID), d.URL, state))
			}
		}
		if len(said) > 0 {
			b.WriteString("\nDestinations, as the running processes last said:\n")
			tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
			for _, line := range said {
				fmt.Fprint(tw, line)
			}
			tw.Flush()
		}
	}
	if r.Orphaned.Records > 0 {
		fmt.Fprintf(&b, "\n%d export(s) of a process that is gone are delivered by the next process that opens this folder.\n", r.Orphaned.Records)
	}
	if r.Attempted > 0 {
		fmt.Fprintf(&b, "\n%d export(s) have failed at least one delivery attempt.\n", r.Attempted)
	}
	if r.Unreadable > 0 {
		fmt.Fprintf(&b, "%d file(s) are not readable records; the spool will quarantine them.\n", r.Unreadable)
	}
	if len(r.Endpoints) > 0 {
		b.WriteString("\nBy endpoint and signal:\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  ENDPOINT\tSIGNAL\tEXPORTS\tBYTES\tOLDEST")
		for _, ep := range r.Endpoints {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\n", orNone(ep.URL), ep.Signal, ep.Records, humanBytes(ep.Bytes), age(ep.Group))
		}
		tw.Flush()
	}
	if r.Quarantined.Records > 0 {
		fmt.Fprintf(&b, "\nQuarantined exports and the reasons are in %s/quarantine (each reason in a .why file).\n", r.Dir)
	}
	return b.String()
}

func pid(n int) string {
	if n == 0 {
		return "?"
	}
	return strconv.Itoa(n)
}

func orNone(s string) string {
	if s == "" {
		return "(no URL)"
	}
	return s
}

func age(g spoolinfo.Group) string {
	if g.Records == 0 {
		return "-"
	}
	d := time.Duration(g.OldestAgeSeconds * float64(time.Second))
	switch {
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
