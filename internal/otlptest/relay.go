package otlptest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// BuildOtlpretry builds the otlpretry command of the module in moduleDir
// (the working tree under test) into a new temporary folder, with the race
// detector when race is set so that its processes are checked too. It
// returns the binary and a function that removes it. It is for TestMain,
// where there is no testing.T.
func BuildOtlpretry(moduleDir string, race bool) (bin string, remove func(), err error) {
	dir, err := os.MkdirTemp("", "otlpretry-bin-")
	if err != nil {
		return "", nil, err
	}
	remove = func() { _ = os.RemoveAll(dir) }
	bin = filepath.Join(dir, "otlpretry")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "./cmd/otlpretry")...)
	build.Dir = moduleDir
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		remove()
		return "", nil, fmt.Errorf("building otlpretry: %w", err)
	}
	return bin, remove, nil
}

// Relay is a running `otlpretry relay` process.
type Relay struct {
	Cmd    *exec.Cmd
	Addr   string      // where it listens, as it reported
	Stderr *SyncBuffer // everything it has logged so far

	done chan struct{}
	code int
}

var listeningRE = regexp.MustCompile(`otlpretry relay: listening" addr=(\S+)`)

// StartRelay starts `bin relay args...` with env and waits, up to 30 s,
// until it logs the address it listens on. When the test ends the relay is
// killed if it still runs, the test fails if the relay reported a data
// race, and its log is shown if the test failed.
func StartRelay(t testing.TB, bin string, env []string, args ...string) *Relay {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"relay"}, args...)...)
	cmd.Env = env
	r := &Relay{Cmd: cmd, Stderr: &SyncBuffer{}, done: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(r.Stderr, pw)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		}
		pw.Close()
		close(r.done)
	}()
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = cmd.Process.Kill()
			<-r.done
		}
		CheckNoRace(t, "the relay", r.Stderr.String())
		if t.Failed() {
			t.Logf("relay stderr:\n%s", r.Stderr.String())
		}
	})
	select {
	case r.Addr = <-found:
	case <-r.done:
		t.Fatalf("relay exited with %d before listening:\n%s", r.code, r.Stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("relay did not listen within 30s:\n%s", r.Stderr.String())
	}
	return r
}

// URL is the relay's address with path.
func (r *Relay) URL(path string) string { return "http://" + r.Addr + path }

// Done is closed once the process has exited.
func (r *Relay) Done() <-chan struct{} { return r.done }

// ExitCode is the process's exit code once Done is closed (-1 for a death
// by signal).
func (r *Relay) ExitCode() int {
	<-r.done
	return r.code
}

// Signal sends sig and waits, up to limit, for the exit; it returns the
// exit code.
func (r *Relay) Signal(t testing.TB, sig os.Signal, limit time.Duration) int {
	t.Helper()
	if err := r.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.done:
		return r.code
	case <-time.After(limit):
		t.Fatalf("relay still running %v after %v:\n%s", limit, sig, r.Stderr.String())
		return 0
	}
}

// CheckNoRace fails the test if a subprocess's output reports a data race.
func CheckNoRace(t testing.TB, who, output string) {
	t.Helper()
	if strings.Contains(output, "WARNING: DATA RACE") {
		t.Errorf("%s reported a data race:\n%s", who, output)
	}
}

// SyncBuffer collects a subprocess's output while the test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// CleanEnv is this process's environment without anything that configures
// OTel or otlpretry, with the user's home and cache folders moved into the
// test's, plus extra: what a subprocess under test runs with.
func CleanEnv(t testing.TB, extra ...string) []string {
	t.Helper()
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OTEL_") || strings.HasPrefix(kv, "OTLPRETRY_") ||
			strings.HasPrefix(kv, "XDG_CACHE_HOME=") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		out = append(out, kv)
	}
	home := t.TempDir()
	out = append(out, "HOME="+home, "XDG_CACHE_HOME="+filepath.Join(home, "cache"))
	return append(out, extra...)
}
