//go:build unix

package otlpretry_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// The child process of TestRestartDeliversWhatAKilledProcessSpooled is
// this test binary run with these variables set.
const (
	childEnvDir      = "OTLPRETRY_TEST_RESTART_DIR"
	childEnvEndpoint = "OTLPRETRY_TEST_RESTART_ENDPOINT"
	// childPrefix starts each line in which the child reports a batch its
	// exporter got success for: the span keys, space-separated.
	childPrefix = "exported "
	// restartBatches is how many batches the parent waits for before the
	// kill; the child keeps exporting, so the kill lands mid-export.
	restartBatches = 20
	restartSpans   = 10 // spans a batch
)

// TestRestartDeliversWhatAKilledProcessSpooled (unix only): a child process exports
// spans through the transport with the real SDK while the collector is
// down, reporting each batch its exporter got success for, and is killed
// with SIGKILL in the middle of exporting. A new transport on the same
// folder (the next run of the program) then delivers every reported span.
func TestRestartDeliversWhatAKilledProcessSpooled(t *testing.T) {
	coll := otlptest.StartCollector(t)
	coll.Stop() // the endpoint refuses connections while the child runs
	dir := t.TempDir()

	cmd := exec.Command(os.Args[0], "-test.run=^TestRestartChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnvDir+"="+dir, childEnvEndpoint+"="+coll.Endpoint(otlptest.Traces))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill the child if it never reports enough, so the scan below ends.
	watchdog := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
	defer watchdog.Stop()

	// Every line read in full was written after the exporter's success, so
	// every key in it must be delivered, whenever the kill came.
	var keys []string
	batches := 0
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), childPrefix)
		if !ok {
			continue
		}
		keys = append(keys, strings.Fields(line)...)
		batches++
		if batches == restartBatches {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v\nstderr:\n%s", err, stderr.String())
	}
	if batches < restartBatches {
		t.Fatalf("child reported %d batches before it died, want %d\nstderr:\n%s", batches, restartBatches, stderr.String())
	}
	t.Logf("child reported %d batches (%d spans) before SIGKILL", batches, len(keys))

	// The next run finds everything the killed process reported; once the
	// collector is back, the spooled exports go out with the configured
	// headers, the killed process's being gone. The collector starts only
	// after the count, or the sender could deliver some before it.
	rt, err := otlpretry.New(
		otlpretry.WithDir(dir),
		otlpretry.WithEndpointHeaders(coll.URL(), http.Header{"X-Restart-Test": {"next run"}}),
		otlpretry.WithLogger(otlptest.Logger(t, "next run")),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
	if st := rt.Stats(); st.Records < batches {
		t.Errorf("the next run finds %d exports in the spool, want at least the %d reported", st.Records, batches)
	}
	if err := coll.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}

	received := coll.SpanIDs()
	have := map[string]bool{}
	for k := range received {
		have[k.String()] = true
	}
	var missing []string
	for _, k := range keys {
		if !have[k] {
			missing = append(missing, k)
		}
	}
	st := rt.Stats()
	t.Logf("next run: delivered %d exports, %d distinct spans received (%d beyond the reported ones: exports in flight at the kill), %d duplicates, %d quarantined",
		st.Delivered, len(received), len(received)-len(keys)+len(missing), coll.SpanDuplicates(), st.Quarantined)
	if len(missing) > 0 {
		t.Fatalf("%d of %d spans the killed process's exporter got success for were never delivered, e.g. %v", len(missing), len(keys), missing[0])
	}
	if got := coll.LastHeader("/v1/traces").Get("X-Restart-Test"); got != "next run" {
		t.Errorf("adopted exports sent with X-Restart-Test %q, want the next run's WithEndpointHeaders", got)
	}
}

// TestRestartChild is the child process of
// TestRestartDeliversWhatAKilledProcessSpooled; on its own it is skipped.
// It exports batches of spans for ever, printing each batch its exporter
// got success for, until it is killed.
func TestRestartChild(t *testing.T) {
	dir, endpoint := os.Getenv(childEnvDir), os.Getenv(childEnvEndpoint)
	if dir == "" || endpoint == "" {
		t.Skip("child process of TestRestartDeliversWhatAKilledProcessSpooled")
	}
	ctx := context.Background()
	rt, err := otlpretry.New(otlpretry.WithDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	exp, err := otlptracehttp.New(ctx,
		otlptracehttp.WithEndpointURL(endpoint),
		otlptracehttp.WithHTTPClient(rt.Client()))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(&reportingExporter{SpanExporter: exp}))
	tracer := tp.Tracer("restart")
	for {
		for range restartSpans {
			_, span := tracer.Start(ctx, "restart")
			span.End()
		}
		if err := tp.ForceFlush(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// reportingExporter prints the spans of every export that succeeded, in
// one write, once the exporter has returned.
type reportingExporter struct{ sdktrace.SpanExporter }

func (r *reportingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if err := r.SpanExporter.ExportSpans(ctx, spans); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString(childPrefix)
	for _, s := range spans {
		sc := s.SpanContext()
		fmt.Fprintf(&b, "%s ", otlptest.SpanKey{TraceID: sc.TraceID(), SpanID: sc.SpanID()})
	}
	b.WriteString("\n")
	_, err := os.Stdout.WriteString(b.String())
	return err
}
