package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry"
	"github.com/otlpretry/otlpretry/internal/otlptest"
	"github.com/otlpretry/otlpretry/spool"
)

// mountTmpfs mounts a tmpfs of size on a new temporary folder for the
// test, or skips it: only root may mount, and not in every container.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("skipped: mounting a tmpfs needs root on Linux")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Skipf("skipped: cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// postTraces posts an OTLP/HTTP protobuf trace export; ok is a 2xx answer.
func postTraces(c *http.Client, url string, body []byte) (ok bool, err error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := c.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return false, fmt.Errorf("status %s", resp.Status)
	}
	return true, nil
}

// TestDiskFullDuringOutage: the library's spool on a 4 MiB tmpfs, the
// endpoint refusing connections until the disk is full. Every export the
// exporter saw fail is one counted drop (Stats().Dropped.Disk, or Full),
// every export that got success is received once the endpoint is back,
// and after delivery the freed space takes new exports again.
func TestDiskFullDuringOutage(t *testing.T) {
	t.Parallel()
	r := scenario(t, "library/disk-full-outage")
	dir := filepath.Join(mountTmpfs(t, "4m"), "spool")
	s := startSink(t)
	proxy := otlptest.StartProxy(t, s.url)
	rt := newTransport(t, "disk-full", dir)
	client := rt.Client()
	url := proxy.URL() + "/v1/traces"
	if err := proxy.SetMode(otlptest.Refuse); err != nil {
		t.Fatal(err)
	}
	stopSampling := sampleBacklog(func() int { return rt.Stats().Records }, r)

	const spansPer = 500 // about 40 KB an export: ~100 fill 4 MiB
	var (
		mu       sync.Mutex
		produced int
		acked    []otlptest.SpanKey
		failed   int // exports whose POST failed
	)
	post := func() bool {
		body, keys := otlptest.TraceBody(spansPer)
		ok, _ := postTraces(client, url, body)
		mu.Lock()
		defer mu.Unlock()
		produced += len(keys)
		if ok {
			acked = append(acked, keys...)
		} else {
			failed++
		}
		return ok
	}
	// Fill: two producers until ten exports have failed in a row.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			inRow := 0
			for i := 0; i < 2000 && inRow < 10; i++ {
				if post() {
					inRow = 0
				} else {
					inRow++
				}
			}
		})
	}
	wg.Wait()
	st := rt.Stats()
	mu.Lock()
	fillFailed := failed
	mu.Unlock()
	t.Logf("disk full: %d exports failed, stats %+v", fillFailed, st)
	if fillFailed == 0 {
		t.Fatalf("no export failed: the 4 MiB disk never filled (%+v)", st)
	}
	if got := st.Dropped.Disk + st.Dropped.Full; got != uint64(fillFailed) {
		t.Errorf("drops counted %d (disk %d, full %d), exporter saw %d exports fail", got, st.Dropped.Disk, st.Dropped.Full, fillFailed)
	}
	if st.Dropped.Disk == 0 {
		t.Errorf("no drop counted as Disk: the tmpfs was not what filled (%+v)", st.Dropped)
	}
	if other := st.Dropped.Total() - st.Dropped.Disk - st.Dropped.Full; other != 0 {
		t.Errorf("%d exports dropped for other reasons: %+v", other, st.Dropped)
	}

	// The endpoint is back: everything stored is delivered, and the space
	// freed takes new exports.
	if err := proxy.SetMode(otlptest.Pass); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), flushLimit)
	defer cancel()
	if err := rt.ForceFlush(ctx); err != nil {
		t.Errorf("Transport.ForceFlush: %v", err)
	}
	for range 5 {
		if !post() {
			t.Errorf("an export failed after recovery")
		}
	}
	if err := rt.ForceFlush(ctx); err != nil {
		t.Errorf("Transport.ForceFlush: %v", err)
	}

	stopSampling()
	mu.Lock()
	defer mu.Unlock()
	st = rt.Stats()
	received, dups := s.spanCounts()
	r.set(func(r *row) {
		r.counted = true
		r.produced, r.acked, r.received, r.dups = produced, len(acked), received, dups
		r.lost = s.missing(acked)
	})
	t.Logf("produced=%d acked=%d received=%d lost=%d dups=%d; failed exports %d; stats %+v",
		r.produced, r.acked, r.received, r.lost, r.dups, failed, st)
	if r.lost != 0 {
		t.Errorf("lost %d of %d acknowledged spans", r.lost, r.acked)
	}
	if want := produced - failed*spansPer; len(acked) != want {
		t.Errorf("%d spans acknowledged, want %d produced - %d in failed exports", len(acked), want, failed*spansPer)
	}
	if received != len(acked) {
		t.Errorf("received %d distinct spans, %d acknowledged: failed exports arrived, or spans nobody sent", received, len(acked))
	}
	if st.Dropped.Disk+st.Dropped.Full != uint64(failed) {
		t.Errorf("drops %+v after recovery, %d exports failed in all", st.Dropped, failed)
	}
	if st.Records != 0 {
		t.Errorf("%d exports still in the spool after ForceFlush", st.Records)
	}
}

// TestCorruptSpoolAtStart: a spool folder holding valid records, one of
// them truncated, one with a flipped byte, and garbage files in pending/.
// The transport opened on it quarantines the damaged files (each with its
// .why) and delivers every intact record.
func TestCorruptSpoolAtStart(t *testing.T) {
	t.Parallel()
	r := scenario(t, "library/corrupt-spool")
	s := startSink(t)
	dir := filepath.Join(t.TempDir(), "spool")
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	const records, spansPer = 8, 100
	var all [][]otlptest.SpanKey
	for range records {
		body, keys := otlptest.TraceBody(spansPer)
		if err := sp.Put(&spool.Record{
			URL:         s.url + "/v1/traces",
			ContentType: "application/x-protobuf",
			Signal:      spool.SignalTraces,
			Body:        body,
		}); err != nil {
			t.Fatal(err)
		}
		all = append(all, keys)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	// Close left the records in one segment in pending/.
	var stored []spool.StoredRecord
	if err := spool.Walk(dir, func(r spool.StoredRecord, err error) error {
		if err != nil {
			t.Errorf("Walk: %v", err)
		}
		stored = append(stored, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(stored) != records {
		t.Fatalf("%d records in the spool, want %d", len(stored), records)
	}
	// Damage the 3rd (a byte flipped in its meta: the reader loses the
	// framing and must find the 4th again) and the 6th (a byte flipped in
	// the middle of the body).
	truncated, flipped := 2, 5
	segPath := stored[0].Segment
	b, err := os.ReadFile(segPath)
	if err != nil {
		t.Fatal(err)
	}
	b[stored[truncated].Offset+40] ^= 0xff
	b[stored[flipped].Offset+stored[flipped].Size/2] ^= 0xff
	if err := os.WriteFile(segPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	pending := filepath.Dir(segPath)
	segKey := filepath.Base(segPath)[:33] // the ID of its first record
	damaged := []string{
		fmt.Sprintf("%s-%d.corrupt", segKey, stored[truncated].Offset),
		fmt.Sprintf("%s-%d.corrupt", segKey, stored[flipped].Offset),
	}
	garbage := map[string][]byte{
		"garbage.bin":  []byte("not a record at all"),
		"empty":        nil,
		"random-bytes": bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 1000),
	}
	for name, data := range garbage {
		if err := os.WriteFile(filepath.Join(pending, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// The records were left by another process and no live request comes:
	// the receiver needs no credentials, and this says so.
	rt := newTransport(t, "corrupt", dir, otlpretry.WithEndpointHeaders(s.url, nil))
	ctx, cancel := context.WithTimeout(context.Background(), flushLimit)
	defer cancel()
	var intact []otlptest.SpanKey
	for i, keys := range all {
		if i != truncated && i != flipped {
			intact = append(intact, keys...)
		}
	}
	// Delivery from the spool is in the background: ForceFlush, then wait.
	for ctx.Err() == nil {
		if err := rt.ForceFlush(ctx); err != nil {
			t.Errorf("Transport.ForceFlush: %v", err)
			break
		}
		if s.missing(intact) == 0 && rt.Stats().Records == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := rt.Stats()
	received, dups := s.spanCounts()
	r.set(func(r *row) {
		r.counted = true
		r.produced, r.acked, r.received, r.dups = records*spansPer, len(intact), received, dups
		r.lost = s.missing(intact)
		r.backlog = records
	})
	t.Logf("produced=%d intact=%d received=%d lost=%d dups=%d; stats %+v", r.produced, r.acked, r.received, r.lost, r.dups, st)
	if r.lost != 0 {
		t.Errorf("lost %d of %d spans in intact records", r.lost, len(intact))
	}
	if received != len(intact) {
		t.Errorf("received %d distinct spans, want the %d of the intact records only", received, len(intact))
	}
	if dups != 0 {
		t.Errorf("%d duplicates from a spool delivered once", dups)
	}
	if want := uint64(2 + len(garbage)); st.Dropped.Corrupt != want {
		t.Errorf("Dropped.Corrupt %d, want %d: the 2 damaged records and the %d garbage files", st.Dropped.Corrupt, want, len(garbage))
	}
	if st.Records != 0 {
		t.Errorf("%d records left in the spool", st.Records)
	}

	// The quarantine holds the damaged records and the garbage, each with
	// a .why saying why; nothing is left in pending/.
	qdir := filepath.Join(dir, "quarantine")
	qs, err := os.ReadDir(qdir)
	if err != nil {
		t.Fatal(err)
	}
	quarantined := map[string]bool{}
	whys := map[string]bool{}
	for _, e := range qs {
		if base, ok := strings.CutSuffix(e.Name(), ".why"); ok {
			whys[base] = true
		} else {
			quarantined[e.Name()] = true
		}
	}
	want := slices.Clone(damaged)
	for name := range garbage {
		want = append(want, name)
	}
	for _, name := range want {
		found := "" // quarantine/<stamp>-<name>
		for q := range quarantined {
			if strings.HasSuffix(q, "-"+name) {
				found = q
			}
		}
		if found == "" {
			t.Errorf("%s is not in quarantine/ (holds %v)", name, qs)
			continue
		}
		if !whys[found] {
			t.Errorf("quarantine/%s has no .why", found)
		} else if why, err := os.ReadFile(filepath.Join(qdir, found+".why")); err != nil || len(bytes.TrimSpace(why)) == 0 {
			t.Errorf("quarantine/%s.why: %q, %v: no reason given", found, why, err)
		}
	}
	left, _ := os.ReadDir(pending)
	for _, e := range left {
		t.Errorf("pending/%s left after delivery", e.Name())
	}
}

// TestReadOnlySpool: the library and the relay on a read-only spool
// folder fail at start with a clear error, without a panic.
func TestReadOnlySpool(t *testing.T) {
	t.Parallel()
	scenario(t, "security/read-only-spool")
	var dir string
	if os.Geteuid() == 0 {
		// Root writes through mode bits: a tmpfs remounted read-only.
		base := mountTmpfs(t, "1m")
		if err := syscall.Mount("", base, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			t.Skipf("skipped: cannot remount the tmpfs read-only: %v", err)
		}
		dir = filepath.Join(base, "spool")
	} else {
		base := t.TempDir()
		if err := os.Chmod(base, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod(base, 0o700) })
		dir = filepath.Join(base, "spool")
	}

	rt, err := otlpretry.New(otlpretry.WithDir(dir),
		otlpretry.WithLogger(otlptest.Logger(t, "read-only")))
	if err == nil {
		_ = rt.Shutdown(context.Background())
		t.Fatalf("otlpretry.New on a read-only folder: no error")
	}
	if !errors.Is(err, spool.ErrPermission) {
		t.Errorf("otlpretry.New: %v, want an error matching spool.ErrPermission", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("otlpretry.New: %q does not name the folder %s", err, dir)
	}
	t.Logf("otlpretry.New: %v", err)

	cmd := exec.Command(relayBin, "relay", "--listen", "127.0.0.1:0", "--grpc-listen", "off", "--dir", dir, "--endpoint", "http://127.0.0.1:1")
	cmd.Env = relayEnv(t)
	cmd.WaitDelay = 30 * time.Second
	out, err := cmd.CombinedOutput()
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("relay on a read-only --dir: %v, want a non-zero exit; output:\n%s", err, out)
	}
	msg := string(out)
	if strings.Contains(msg, "panic") || strings.Contains(msg, "goroutine ") {
		t.Errorf("the relay panicked:\n%s", msg)
	}
	if !strings.Contains(msg, dir) || !(strings.Contains(msg, "read-only") || strings.Contains(msg, "permission")) {
		t.Errorf("the relay's message does not say the folder is read-only or not writable:\n%s", msg)
	}
	t.Logf("relay exit %d: %s", ee.ExitCode(), strings.TrimSpace(msg))
}
