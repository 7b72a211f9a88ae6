package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const (
	benchModule = "github.com/otlpretry/otlpretry/bench"
	rootModule  = "github.com/otlpretry/otlpretry"
)

// binaries are the programs a run starts.
type binaries struct {
	app, collector, relay string
	rootDir               string // the otlpretry checkout, for the report
}

// goCmd runs the go command in dir with the workspace work ("off" for none):
// the bench module is not in ../go.work on purpose (its Collector
// dependencies would move the root module's). The relay is built in the
// checkout's workspace, where the command's module resolves the library to
// the working tree under test.
func goCmd(ctx context.Context, dir, work string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK="+work)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return out, nil
}

// build compiles the app, the Collector and the relay into dir. It must run
// inside the bench module (go -C bench run ., or go test in bench/).
func build(ctx context.Context, dir string, log io.Writer) (binaries, error) {
	var b binaries
	out, err := goCmd(ctx, ".", "off", "list", "-m", "-json")
	if err != nil {
		return b, fmt.Errorf("run the benchmark from the bench module (GOWORK=off go -C bench run .): %w", err)
	}
	var mod struct{ Path, Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Path != benchModule {
		return b, fmt.Errorf("run the benchmark from the bench module (GOWORK=off go -C bench run .); here the main module is %q", mod.Path)
	}
	out, err = goCmd(ctx, mod.Dir, "off", "list", "-m", "-f", "{{.Dir}}", rootModule)
	if err != nil {
		return b, err
	}
	b.rootDir = strings.TrimSpace(string(out))
	b.app = filepath.Join(dir, "benchapp")
	b.collector = filepath.Join(dir, "benchcol")
	b.relay = filepath.Join(dir, "otlpretry")
	steps := []struct {
		what, dir, work string
		args            []string
	}{
		{"the application", mod.Dir, "off", []string{"build", "-o", b.app, benchModule + "/cmd/benchapp"}},
		{"the relay", b.rootDir, filepath.Join(b.rootDir, "go.work"), []string{"build", "-o", b.relay, "./cmd/otlpretry"}},
		{"the Collector (slow the first time)", mod.Dir, "off", []string{"build", "-o", b.collector, benchModule + "/cmd/benchcol"}},
	}
	for _, s := range steps {
		t := time.Now()
		fmt.Fprintf(log, "building %s ...", s.what)
		if _, err := goCmd(ctx, s.dir, s.work, s.args...); err != nil {
			fmt.Fprintln(log)
			return b, err
		}
		fmt.Fprintf(log, " %.1f s\n", time.Since(t).Seconds())
	}
	return b, nil
}
