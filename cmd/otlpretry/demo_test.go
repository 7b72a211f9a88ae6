package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// A short script: about 1 s steady, 1 s refused, 1 s of 503s, recovery.
var shortDemo = []string{"demo", "--steady", "1s", "--outage", "1s", "--rate", "100"}

// On a terminal the status line is redrawn in place and the table follows.
func TestDemoOnTerminal(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, shortDemo...)
	cmd.Env = cleanEnv(t, "TERM=xterm")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 160})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out bytes.Buffer
	_, err = io.Copy(&out, tty) // until the child closes the terminal
	if err != nil && !errors.Is(err, syscall.EIO) {
		t.Fatal(err)
	}
	werr := cmd.Wait()
	text := out.String()
	checkNoRace(t, text)
	if werr != nil {
		t.Fatalf("demo: %v\n%s", werr, text)
	}
	// "\r" then "erase line": the live line rewritten in place, several
	// times (the terminal turns "\n" into "\r\n", so a bare "\r" proves
	// nothing).
	if n := strings.Count(text, "\r\x1b[2K"); n < 10 {
		t.Errorf("the status line was redrawn %d times, want many:\n%q", n, text)
	}
	for _, s := range []string{"backlog", "circuit open", "refuses connections", "503", "recovery",
		"produced", "delivered", "lost", "duplicates", "largest backlog", "drained after recovery", "Nothing was lost."} {
		if !strings.Contains(text, s) {
			t.Errorf("the demo's output lacks %q:\n%s", s, text)
		}
	}
	// Every line of the table is whole: not mixed with a status line.
	table := text[strings.LastIndex(text, "produced"):]
	if strings.Contains(table, "\x1b[") {
		t.Errorf("escape sequences inside the table:\n%q", table)
	}
}

// Elsewhere it prints plain lines, and the same table.
func TestDemoPlainOutput(t *testing.T) {
	t.Parallel()
	res := runCmd(t, cleanEnv(t), shortDemo...)
	if res.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if strings.ContainsAny(res.stdout, "\r\x1b") {
		t.Errorf("terminal control characters in plain output:\n%q", res.stdout)
	}
	lines := strings.Split(res.stdout, "\n")
	status := 0
	for _, l := range lines {
		if strings.Contains(l, "backlog") && strings.Contains(l, "circuit") {
			status++
		}
	}
	if status < 3 {
		t.Errorf("%d status lines, want one a second:\n%s", status, res.stdout)
	}
	for _, s := range []string{"spans", "metric points", "log records", "Nothing was lost."} {
		if !strings.Contains(res.stdout, s) {
			t.Errorf("output lacks %q:\n%s", s, res.stdout)
		}
	}
	// Produced equals delivered for spans, as the table says.
	for _, l := range lines {
		if f := strings.Fields(l); len(f) == 5 && f[0] == "spans" {
			if f[1] != f[2] || f[3] != "0" || f[1] == "0" {
				t.Errorf("spans row %q: want produced = delivered > 0, none lost", l)
			}
		}
	}
}

// Over OTLP/gRPC the same script runs: refused connections at the proxy,
// then the receiver answering Unavailable; the outage goes through the
// spool and nothing is lost.
func TestDemoGRPC(t *testing.T) {
	t.Parallel()
	res := runCmd(t, cleanEnv(t), slices.Concat(shortDemo, []string{"--protocol", "grpc"})...)
	if res.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	for _, s := range []string{"OTLP/gRPC receiver", "refuses connections", "gRPC status Unavailable",
		"recovery", "Nothing was lost."} {
		if !strings.Contains(res.stdout, s) {
			t.Errorf("output lacks %q:\n%s", s, res.stdout)
		}
	}
	rows := 0
	for _, l := range strings.Split(res.stdout, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 5 && f[0] == "spans",
			len(f) == 6 && f[0]+" "+f[1] == "metric points",
			len(f) == 6 && f[0]+" "+f[1] == "log records":
			n := len(f)
			if f[n-4] != f[n-3] || f[n-2] != "0" || f[n-4] == "0" {
				t.Errorf("row %q: want produced = delivered > 0, none lost", l)
			}
			rows++
		case len(f) == 10 && f[0] == "exports" && f[1] == "delivered":
			// "exports delivered N direct, M from the spool, K dropped"
			if f[4] == "0" || f[8] != "0" {
				t.Errorf("%q: want exports delivered from the spool and none dropped", l)
			}
			rows++
		}
	}
	if rows != 4 {
		t.Errorf("found %d of the table's 4 rows checked:\n%s", rows, res.stdout)
	}
}

func TestHelpAndUsage(t *testing.T) {
	t.Parallel()
	env := cleanEnv(t)
	if r := runCmd(t, env, "--help"); r.code != 0 || !strings.Contains(r.stdout, "relay") || !strings.Contains(r.stdout, "drain") {
		t.Errorf("--help: %d %q", r.code, r.stdout)
	}
	if r := runCmd(t, env); r.code != exitUsage || !strings.Contains(r.stderr, "Usage:") {
		t.Errorf("no arguments: %d %q", r.code, r.stderr)
	}
	if r := runCmd(t, env, "frobnicate"); r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %d %q", r.code, r.stderr)
	}
	for cmd, flag := range map[string]string{"demo": "-protocol", "relay": "-auth-token-file", "status": "-json", "drain": "-endpoint"} {
		r := runCmd(t, env, cmd, "-h")
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: otlpretry "+cmd) || !strings.Contains(r.stdout, flag) {
			t.Errorf("%s -h: %d\n%s%s", cmd, r.code, r.stdout, r.stderr)
		}
	}
	if r := runCmd(t, env, "demo", "--rate", "0"); r.code != exitUsage {
		t.Errorf("demo --rate 0: exit %d", r.code)
	}
	if r := runCmd(t, env, "demo", "--protocol", "http/json"); r.code != exitUsage || !strings.Contains(r.stderr, "--protocol") {
		t.Errorf("demo --protocol http/json: exit %d %q", r.code, r.stderr)
	}
}
