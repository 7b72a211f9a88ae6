package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/otlpretry/otlpretry/cmd/otlpretry/internal/demo"
)

func runDemo(ctx context.Context, args []string, e *env) int {
	fs := newFlagSet("demo", "[flags]", `
Shows the otlpretry transport keeping telemetry through an outage, with no
set-up and nothing leaving this machine. The real OpenTelemetry Go SDK
exports spans, metrics and logs through the transport to an OTLP/HTTP
receiver on 127.0.0.1, past a fault proxy that scripts the outage: steady,
then refused connections, then HTTP 503s, then recovery. With --protocol
grpc the SDK's OTLP/gRPC exporters send through the transport's gRPC dial
option to an OTLP/gRPC receiver, which answers the gRPC status Unavailable
in place of the 503s. A status line shows
the backlog in the spool (a temporary folder, removed at the end), what was
delivered and dropped, and the circuit; a table at the end counts what was
produced, delivered, lost and duplicated, the largest backlog and the time
the backlog took to drain after recovery.

Exits 0 when nothing was lost, 1 otherwise.`, e)
	protocol := fs.String("protocol", demo.ProtocolHTTP, "OTLP protocol of the exporters and the receiver: "+demo.ProtocolHTTP+" or "+demo.ProtocolGRPC)
	steady := fs.Duration("steady", 5*time.Second, "how long the workload runs before the outage")
	outage := fs.Duration("outage", 5*time.Second, "length of each outage phase (refused connections, then 503s or gRPC Unavailable)")
	rate := fs.Int("rate", 200, "spans per second (with a metric update each, and a log record every 4)")
	drainTimeout := fs.Duration("drain-timeout", 30*time.Second, "longest wait for the backlog after recovery")
	backoffMax := fs.Duration("backoff-max", 2*time.Second, "cap on the transport's backoff (its default is 128s; kept short so the drain shows)")
	if code, done := parseFlags(fs, args, e); done {
		return code
	}
	if *rate <= 0 || *steady < 0 || *outage < 0 || *drainTimeout <= 0 || *backoffMax <= 0 {
		fmt.Fprintln(e.stderr, "otlpretry demo: --rate, --drain-timeout and --backoff-max must be positive, durations not negative")
		return exitUsage
	}
	if *protocol != demo.ProtocolHTTP && *protocol != demo.ProtocolGRPC {
		fmt.Fprintf(e.stderr, "otlpretry demo: --protocol must be %s or %s, not %q\n", demo.ProtocolHTTP, demo.ProtocolGRPC, *protocol)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := demo.Run(ctx, demo.Config{
		Protocol:     *protocol,
		Steady:       *steady,
		Outage:       *outage,
		Rate:         *rate,
		DrainTimeout: *drainTimeout,
		BackoffMax:   *backoffMax,
		Out:          e.stdout,
		Terminal:     e.isTerminal(e.stdout),
		Width:        func() int { return e.termWidth(e.stdout) },
	})
	if err != nil {
		fmt.Fprintf(e.stderr, "otlpretry demo: %v\n", err)
		return exitFailure
	}
	if sum.Lost() > 0 {
		return exitFailure
	}
	return exitOK
}
