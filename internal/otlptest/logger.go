package otlptest

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Logger returns a logger that writes to tb.Log, each line prefixed with
// name, until tb's cleanups run; a late line from a background goroutine is
// then dropped instead of panicking the test. Create it before whatever
// logs through it registers its own cleanup (a Shutdown, say), so that this
// one runs last.
func Logger(tb testing.TB, name string) *slog.Logger {
	w := &logWriter{tb: tb, prefix: name + ": "}
	tb.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, nil))
}

type logWriter struct {
	tb     testing.TB
	prefix string

	mu      sync.Mutex // guards stopped
	stopped bool
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.tb.Log(w.prefix + strings.TrimSuffix(string(b), "\n"))
	}
	return len(b), nil
}

func (w *logWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}
