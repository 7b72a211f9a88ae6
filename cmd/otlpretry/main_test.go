package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binPath is the otlpretry binary under test, built once by TestMain (with
// the race detector when the tests have it, so the subprocesses are
// checked too).
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "otlpretry-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "otlpretry")
	args := []string{"build", "-o", binPath}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building otlpretry:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cleanEnv is the test process's environment without anything that
// configures OTel or otlpretry, with the user cache folder moved into the
// test's, plus extra.
func cleanEnv(t *testing.T, extra ...string) []string {
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

type result struct {
	code           int
	stdout, stderr string
}

// runCmd runs the binary to completion, within a minute.
func runCmd(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("otlpretry %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	checkNoRace(t, r.stderr)
	return r
}

func checkNoRace(t *testing.T, stderr string) {
	t.Helper()
	if strings.Contains(stderr, "WARNING: DATA RACE") {
		t.Errorf("the subprocess reported a data race:\n%s", stderr)
	}
}

// syncBuffer collects a subprocess's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// relayProc is a running relay.
type relayProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *syncBuffer
	addr   string
	done   chan struct{}
	code   int
}

var listeningRE = regexp.MustCompile(`otlpretry relay: listening" addr=(\S+)`)

// startRelay starts `otlpretry relay --listen 127.0.0.1:0 args...` and
// waits until it listens.
func startRelay(t *testing.T, env []string, args ...string) *relayProc {
	t.Helper()
	cmd := exec.Command(binPath, append([]string{"relay", "--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = env
	p := &relayProc{t: t, cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(p.stderr, pw)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		p.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		}
		pw.Close()
		close(p.done)
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
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		checkNoRace(t, p.stderr.String())
		if t.Failed() {
			t.Logf("relay stderr:\n%s", p.stderr.String())
		}
	})
	select {
	case p.addr = <-found:
	case <-p.done:
		t.Fatalf("relay exited with %d before listening:\n%s", p.code, p.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("relay did not listen within 30s:\n%s", p.stderr.String())
	}
	return p
}

func (p *relayProc) url(path string) string { return "http://" + p.addr + path }

// signal sends sig and waits for the exit, within limit; it returns the
// exit code (-1 for a death by signal).
func (p *relayProc) signal(sig syscall.Signal, limit time.Duration) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.code
	case <-time.After(limit):
		p.t.Fatalf("relay still running %v after %v:\n%s", limit, sig, p.stderr.String())
		return 0
	}
}

// post sends an OTLP body to the relay.
func post(t *testing.T, url string, body []byte, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}
