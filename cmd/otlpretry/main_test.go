package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// binPath is the otlpretry binary under test, built once by TestMain (with
// the race detector when the tests have it, so the subprocesses are
// checked too).
var binPath string

func TestMain(m *testing.M) {
	bin, remove, err := otlptest.BuildOtlpretry("../..", raceEnabled)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = bin
	code := m.Run()
	remove()
	os.Exit(code)
}

// cleanEnv is the environment of a subprocess under test (otlptest.CleanEnv).
func cleanEnv(t testing.TB, extra ...string) []string {
	t.Helper()
	return otlptest.CleanEnv(t, extra...)
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
	otlptest.CheckNoRace(t, "the subprocess", stderr)
}

// relayProc is a running relay.
type relayProc struct {
	*otlptest.Relay
	t testing.TB
	// grpcAddr is where its OTLP/gRPC receiver listens, or "off".
	grpcAddr string
}

var grpcAddrRE = regexp.MustCompile(`otlpretry relay: listening" addr=\S+ grpc_addr=(\S+)`)

// startRelay starts `otlpretry relay --listen 127.0.0.1:0 --grpc-listen
// 127.0.0.1:0 args...` and waits until it listens.
func startRelay(t testing.TB, env []string, args ...string) *relayProc {
	t.Helper()
	r := otlptest.StartRelay(t, binPath, env, append([]string{"--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"}, args...)...)
	m := grpcAddrRE.FindStringSubmatch(r.Stderr.String())
	if m == nil {
		t.Fatalf("no gRPC address in the listening line:\n%s", r.Stderr.String())
	}
	return &relayProc{Relay: r, t: t, grpcAddr: m[1]}
}

func (p *relayProc) url(path string) string { return p.URL(path) }

// signal sends sig and waits for the exit, within limit; it returns the
// exit code (-1 for a death by signal).
func (p *relayProc) signal(sig syscall.Signal, limit time.Duration) int {
	p.t.Helper()
	return p.Signal(p.t, sig, limit)
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
