package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process of the driver: an application (benchapp), the
// Collector or the relay. Its stderr, and its stdout unless it is an app,
// go to a log file in the run's folder, which error messages quote.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has been waited for
	waitErr error         // set before done is closed

	// For apps only: the command pipe and what the app reported.
	stdin  io.WriteCloser
	ready  chan struct{}
	loaded chan struct{}
	acks   chan appAck

	mu   sync.Mutex // guards stat and loadedN
	stat appStat
	// loadedN is the number of spans produced, once the load has ended.
	loadedN int64
}

// appStat is one "stat" line: spans produced, and spans whose export call
// returned success (ok) or an error (failed).
type appStat struct {
	produced, ok, failed int64
}

type appAck struct {
	cmd      string
	produced int64
}

// group holds every child started in one run so that all of them are
// killed, whatever path the run leaves by.
type group struct {
	mu    sync.Mutex
	procs []*proc
}

func (g *group) add(p *proc) {
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
}

// killAll kills every child still running and waits for it.
func (g *group) killAll() {
	g.mu.Lock()
	procs := append([]*proc(nil), g.procs...)
	g.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
}

// childEnv is the driver's environment without the variables that would
// change what a child does behind its flags (OTLPRETRY_*, OTEL_*), so a
// run measures the configurations it describes.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OTLPRETRY_") || strings.HasPrefix(kv, "OTEL_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// startServer starts a child whose output all goes to its log file; env
// is added to childEnv's.
func startServer(ctx context.Context, g *group, name, logDir string, env []string, argv ...string) (*proc, error) {
	return start(ctx, g, name, logDir, false, env, argv)
}

// startApp starts a benchapp and waits for its "ready"; env is added to
// childEnv's.
func startApp(ctx context.Context, g *group, name, logDir string, env []string, argv ...string) (*proc, error) {
	p, err := start(ctx, g, name, logDir, true, env, argv)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-p.ready:
		return p, nil
	case <-p.done:
		return nil, p.failure("exited before it was ready")
	case <-t.C:
		p.kill()
		return nil, p.failure("not ready after 30 s")
	case <-ctx.Done():
		p.kill()
		return nil, ctx.Err()
	}
}

func start(ctx context.Context, g *group, name, logDir string, app bool, env, argv []string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(childEnv(), env...)
	cmd.Stderr = logFile
	cmd.SysProcAttr = childSysProcAttr()
	// On cancellation (the driver interrupted) a child gets SIGKILL from
	// exec's default Cancel; WaitDelay bounds the wait for its pipes.
	cmd.WaitDelay = 5 * time.Second
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	var stdout io.ReadCloser
	if app {
		p.ready = make(chan struct{})
		p.loaded = make(chan struct{})
		p.acks = make(chan appAck, 16)
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			logFile.Close()
			return nil, err
		}
		if stdout, err = cmd.StdoutPipe(); err != nil {
			logFile.Close()
			return nil, err
		}
	} else {
		cmd.Stdout = logFile
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	g.add(p)
	readerDone := make(chan struct{})
	if app {
		go func() {
			defer close(readerDone)
			p.read(stdout, logFile)
		}()
	} else {
		close(readerDone)
	}
	go func() {
		// Wait closes the stdout pipe; the reader must finish with it first.
		<-readerDone
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// read parses an app's stdout; lines it does not know go to the log.
func (p *proc) read(r io.Reader, log io.Writer) {
	sc := bufio.NewScanner(r)
	readyClosed, loadedClosed := false, false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		nums := make([]int64, 0, 3)
		for _, s := range f[1:] {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				nums = append(nums, n)
			}
		}
		switch {
		case f[0] == "ready" && !readyClosed:
			readyClosed = true
			close(p.ready)
		case f[0] == "stat" && len(nums) == 3:
			p.mu.Lock()
			p.stat = appStat{produced: nums[0], ok: nums[1], failed: nums[2]}
			p.mu.Unlock()
		case f[0] == "ack" && len(f) == 3 && len(nums) == 1:
			select {
			case p.acks <- appAck{cmd: f[1], produced: nums[0]}:
			default: // nobody is waiting for this one
			}
		case f[0] == "loaded" && len(nums) == 1 && !loadedClosed:
			loadedClosed = true
			p.mu.Lock()
			p.loadedN = nums[0]
			p.mu.Unlock()
			close(p.loaded)
		default:
			fmt.Fprintf(log, "stdout: %s\n", sc.Text())
		}
	}
}

func (p *proc) lastStat() appStat {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stat
}

func (p *proc) loadedCount() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.loadedN
}

// send writes one command to an app.
func (p *proc) send(cmd string) error {
	if _, err := io.WriteString(p.stdin, cmd+"\n"); err != nil {
		return fmt.Errorf("%s: send %q: %w", p.name, cmd, err)
	}
	return nil
}

// command sends cmd and waits for its acknowledgement, which carries the
// number of spans produced when the app read it.
func (p *proc) command(ctx context.Context, cmd string) (int64, error) {
	// Acks of earlier commands nobody waited for must not answer this one.
	for drained := false; !drained; {
		select {
		case <-p.acks:
		default:
			drained = true
		}
	}
	if err := p.send(cmd); err != nil {
		return 0, err
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case a := <-p.acks:
			if a.cmd == cmd {
				return a.produced, nil
			}
		case <-p.done:
			return 0, p.failure("exited while waiting for the ack of " + cmd)
		case <-t.C:
			return 0, p.failure("no ack of " + cmd + " within 10 s")
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// stopApp asks an app to stop (it flushes and shuts its exporter down) and
// waits; it is killed if it has not exited within timeout.
func (p *proc) stopApp(timeout time.Duration) error {
	_ = p.send("stop")
	_ = p.stdin.Close()
	return p.waitOrKill(timeout)
}

// stopServer sends SIGTERM, as a service manager would, and waits; the
// child is killed if it has not exited within timeout.
func (p *proc) stopServer(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.waitOrKill(timeout)
}

func (p *proc) waitOrKill(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		if p.waitErr != nil {
			return p.failure(fmt.Sprintf("exited with %v", p.waitErr))
		}
		return nil
	case <-t.C:
		p.kill()
		return p.failure(fmt.Sprintf("did not exit within %v; killed", timeout))
	}
}

// kill ends the child at once and waits for it; it does nothing if the
// child has exited.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// failure is an error naming the child and quoting the end of its log.
func (p *proc) failure(what string) error {
	return fmt.Errorf("%s %s; end of %s:\n%s", p.name, what, p.logPath, tail(p.logPath, 15))
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	ls := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return "  " + string(bytes.Join(ls, []byte("\n  ")))
}

// usage is what /proc says about a process: CPU time (user + system) and
// peak resident memory (VmHWM).
type usage struct {
	cpu     time.Duration
	peakRSS int64 // bytes
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

func readUsage(pid int) (usage, error) {
	var u usage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name, field 2, is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15, the 12th and 13th after it.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return u, errors.New("malformed /proc stat times")
	}
	u.cpu = time.Duration(ut+st) * time.Second / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return u, fmt.Errorf("malformed VmHWM %q", rest)
			}
			u.peakRSS = kb << 10
		}
	}
	return u, nil
}

// usageOf reads p's usage; a process that has exited has none to give.
func (p *proc) usage() (usage, error) {
	if !p.running() {
		return usage{}, fmt.Errorf("%s has exited", p.name)
	}
	return readUsage(p.cmd.Process.Pid)
}

// diskBytes is the space the files under dir take on disk (allocated
// blocks, as du counts them), so a sparse bbolt file and a folder of small
// files are counted alike. Files that vanish during the walk are skipped.
func diskBytes(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		total += allocated(info)
		return nil
	})
	return total
}
