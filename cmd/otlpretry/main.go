// Command otlpretry keeps OpenTelemetry OTLP/HTTP exports through outages.
//
//	otlpretry demo     the transport through a scripted outage, on this machine only
//	otlpretry relay    a local OTLP/HTTP and OTLP/gRPC receiver forwarding through
//	                   the transport, for applications in any language
//	otlpretry status   what a spool folder holds
//	otlpretry drain    send a spool folder's exports now
//
// Run "otlpretry <command> -h" for a command's flags. Flags take precedence
// over environment variables, which take precedence over the defaults.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// env is what a command reads from its surroundings, so tests can run
// commands in-process with their own.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// isTerminal reports whether w is a terminal, and its width.
	isTerminal func(w io.Writer) bool
	termWidth  func(w io.Writer) int
}

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, e *env) int
}

var commands = []command{
	{"demo", "the transport through a scripted outage, on this machine only", runDemo},
	{"relay", "a local OTLP/HTTP and OTLP/gRPC receiver forwarding through the transport", runRelay},
	{"status", "what a spool folder holds", runStatus},
	{"drain", "send a spool folder's exports now", runDrain},
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and something failed (data lost, exports not sent)
	exitUsage   = 2
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], &env{
		stdout:     os.Stdout,
		stderr:     os.Stderr,
		getenv:     os.Getenv,
		isTerminal: isTerminal,
		termWidth:  termWidth,
	}))
}

func run(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(e.stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], e)
		}
	}
	fmt.Fprintf(e.stderr, "otlpretry: unknown command %q\n\n", args[0])
	usage(e.stderr)
	return exitUsage
}

func usage(w io.Writer) {
	var b strings.Builder
	b.WriteString("otlpretry keeps OpenTelemetry OTLP/HTTP exports through outages.\n\n")
	b.WriteString("Usage:\n  otlpretry <command> [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun \"otlpretry <command> -h\" for a command's flags. Flags take precedence\n" +
		"over environment variables, which take precedence over the defaults.\n")
	fmt.Fprint(w, b.String())
}

// defaultDir is the relay's spool folder, which status and drain look at
// unless told otherwise.
func defaultDir() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "otlpretry", "relay")
}

// resolveDir applies flag > OTLPRETRY_DIR > default.
func resolveDir(flagValue string, e *env) string {
	if flagValue != "" {
		return flagValue
	}
	if v := e.getenv("OTLPRETRY_DIR"); v != "" {
		return v
	}
	return defaultDir()
}
