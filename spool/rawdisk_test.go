//go:build linux

package spool_test

// Helpers shared by the spool benchmarks, and the raw-disk baselines they
// are compared with: the same bytes written sequentially into one file, by
// one writer, with and without fdatasync (BenchmarkRawWrite), and a file
// per record without the spool (BenchmarkRawFiles). See docs/BENCHMARKS.md.
//
// Linux only: fdatasync, /proc/self/status, /proc/meminfo and drop_caches
// are Linux's.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// benchSizes are the body sizes the write benchmarks run with.
var benchSizes = []struct {
	name string
	n    int
}{
	{"1KiB", 1 << 10},
	{"8KiB", 8 << 10},
	{"64KiB", 64 << 10},
	{"1MiB", 1 << 20},
}

// benchBody returns n incompressible bytes.
func benchBody(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

const (
	fsTypeTmpfs   = 0x01021994
	fsTypeOverlay = 0x794c7630
	fsTypeExt4    = 0xef53 // also ext2 and ext3
	fsTypeXFS     = 0x58465342
	fsTypeBtrfs   = 0x9123683e
)

func benchFSName(t int64) string {
	switch t {
	case fsTypeTmpfs:
		return "tmpfs"
	case fsTypeOverlay:
		return "overlay"
	case fsTypeExt4:
		return "ext2/3/4"
	case fsTypeXFS:
		return "xfs"
	case fsTypeBtrfs:
		return "btrfs"
	}
	return fmt.Sprintf("fs 0x%x", t)
}

var benchDirOnce sync.Once

// benchRoot returns a fresh folder for one top-level benchmark, removed
// after it and all its sub-benchmarks, on the disk the benchmarks are meant
// to measure: under $OTLPRETRY_BENCH_DIR when set; otherwise under $TMPDIR
// when that is on the same file system as the module and is not tmpfs or
// overlay; otherwise under the package's own folder (as "_spoolbench-*",
// which the go tool ignores).
//
// Files are removed only at the end of the top-level benchmark, never
// between the rounds of a sub-benchmark: deleting the files of one round
// would slow the creates of the next many times over on ext4 without a
// journal, and hand it recycled memory. See benchSettle, which undoes both
// after a removal.
func benchRoot(b *testing.B) string {
	b.Helper()
	var parent, why string
	switch root := os.Getenv("OTLPRETRY_BENCH_DIR"); {
	case root != "":
		parent, why = root, "$OTLPRETRY_BENCH_DIR"
	case benchSameRealDisk(os.TempDir(), "."):
		parent, why = os.TempDir(), "$TMPDIR, same file system as the module"
	default:
		parent, why = ".", "the package folder ($TMPDIR is another file system, tmpfs or overlay)"
	}
	dir, err := os.MkdirTemp(parent, "_spoolbench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { benchRemoveAll(dir) })
	benchDirOnce.Do(func() {
		var st syscall.Statfs_t
		_ = syscall.Statfs(dir, &st)
		abs, _ := filepath.Abs(parent)
		b.Logf("benchmark files under %s (%s; %s)", abs, benchFSName(int64(st.Type)), why)
	})
	return dir
}

// benchSubdir returns a new folder under root, left for root's removal.
func benchSubdir(b *testing.B, root string) string {
	b.Helper()
	dir, err := os.MkdirTemp(root, "run-")
	if err != nil {
		b.Fatal(err)
	}
	return dir
}

// benchFreed is set when this process has deleted many files or much
// data since the disk was last settled; it starts set (initial), for
// earlier processes may have.
var benchFreed = struct {
	sync.Mutex
	set, initial bool
}{set: true, initial: true}

// benchNoteDeletes records that files files of bytes bytes were deleted.
func benchNoteDeletes(files int, bytes int64) {
	if files >= 1000 || bytes >= 64<<20 {
		benchFreed.Lock()
		benchFreed.set, benchFreed.initial = true, false
		benchFreed.Unlock()
	}
}

func benchRemoveAll(dir string) {
	n, size := 0, int64(0)
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				size += fi.Size()
			}
		}
		n++
		return nil
	})
	_ = os.RemoveAll(dir)
	benchNoteDeletes(n, size)
}

// benchSync writes back every dirty page and buffer, so that what an
// earlier benchmark left in the page cache is not written during this one.
func benchSync() { syscall.Sync() }

// benchSettle prepares the machine for a timed run that creates files. It
// calls benchSync, and if many files or much data were deleted since the
// last settle (or this is the first), it also:
//
//   - drops the kernel's caches. ext4 without a journal (as on the machine
//     of docs/BENCHMARKS.md) will not reuse an inode freed in the last
//     minute, or the last six while its inode-table block is dirty, and
//     checks every free inode it passes over in the cached inode table;
//     after mass deletions each create then skips thousands of inodes.
//     Once the inode table is out of the cache it no longer checks.
//     Without root it waits a minute instead (not on the first settle),
//     which helps only partly.
//   - waits 5 s, for a VM with free page reporting (virtio-balloon) to
//     hand the freed memory back to the host, so that every run writes
//     into memory the guest must fault in again, as after any quiet spell,
//     rather than some runs into recycled pages, several times faster.
func benchSettle() {
	benchSync()
	benchFreed.Lock()
	defer benchFreed.Unlock()
	if !benchFreed.set {
		return
	}
	switch {
	case benchDropCaches() == nil:
		time.Sleep(5 * time.Second)
	case !benchFreed.initial:
		time.Sleep(time.Minute + 5*time.Second)
	}
	benchFreed.set, benchFreed.initial = false, false
}

// benchPrewarm writes, then deletes, a scratch file as large as the page
// cache that records writes of size bytes will take (a page or more per
// record, since the spool writes a file each), so that the timed run that
// follows at once writes into memory the guest has just used rather than
// memory it must fault in from the host. On this kind of VM that changes
// the page-cache write rate several times over (about 0.45 against 3-6
// GB/s on the machine of docs/BENCHMARKS.md); on bare metal it changes
// little. The pages stay warm for about 2 s (free page reporting), so
// timed runs should be about a second long (-benchtime 1s).
//
// OTLPRETRY_BENCH_PREWARM=0 turns it off, to measure what a writer after a
// quiet spell gets.
func benchPrewarm(b *testing.B, dir string, records, size int) {
	b.Helper()
	if os.Getenv("OTLPRETRY_BENCH_PREWARM") == "0" {
		return
	}
	const page = 4096
	total := int64(records) * int64((size+256+page-1)/page*page)
	if avail, ok := benchMemAvailable(); ok && total > avail/2 {
		total = avail / 2
	}
	if total <= 0 {
		return
	}
	name := filepath.Join(dir, "prewarm")
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for left := total; left > 0; left -= int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(int64(len(chunk)), left)]); err != nil {
			f.Close()
			b.Fatal(err)
		}
	}
	f.Close()
	if err := os.Remove(name); err != nil {
		b.Fatal(err)
	}
}

// benchMemAvailable reads MemAvailable from /proc/meminfo.
func benchMemAvailable() (int64, bool) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

func benchSameRealDisk(a, b string) bool {
	var sa, sb syscall.Stat_t
	var fa syscall.Statfs_t
	if syscall.Stat(a, &sa) != nil || syscall.Stat(b, &sb) != nil || syscall.Statfs(a, &fa) != nil {
		return false
	}
	t := int64(fa.Type)
	return sa.Dev == sb.Dev && t != fsTypeTmpfs && t != fsTypeOverlay
}

// benchDropCaches empties the page, dentry and inode caches (root only).
func benchDropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

// benchProcStatusMiB reads a "VmRSS:"-style field of /proc/self/status.
func benchProcStatusMiB(field string) (float64, bool) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
		if err != nil {
			return 0, false
		}
		return kb / 1024, true
	}
	return 0, false
}

// benchResetPeakRSS resets VmHWM to the current RSS (Linux 4.0 and later).
func benchResetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// benchReportRate adds records/s beside the MB/s that SetBytes gives.
func benchReportRate(b *testing.B, n int) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(n)/s, "records/s")
	}
}

// BenchmarkRawWrite is the limit of the disk the spool writes to: b.N
// record-sized writes appended to one file by one writer.
//
//	fdatasync=false  no sync at all; the file is synced after the timer
//	                 stops (the page-cache write rate)
//	fdatasync=final  one fdatasync at the end, inside the timer (the rate
//	                 at which the disk takes sequential data)
//	fdatasync=each   fdatasync after every write (the durable-write rate)
func BenchmarkRawWrite(b *testing.B) {
	root := benchRoot(b)
	for _, mode := range []string{"false", "final", "each"} {
		for _, sz := range benchSizes {
			b.Run(fmt.Sprintf("fdatasync=%s/size=%s", mode, sz.name), func(b *testing.B) {
				benchRawWrite(b, benchSubdir(b, root), mode, sz.n)
			})
		}
	}
}

func benchRawWrite(b *testing.B, dir string, mode string, size int) {
	body := benchBody(size)
	f, err := os.OpenFile(filepath.Join(dir, "raw"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	benchSettle()
	benchPrewarm(b, dir, b.N, size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.Write(body); err != nil {
			b.Fatal(err)
		}
		if mode == "each" {
			if err := syscall.Fdatasync(fd); err != nil {
				b.Fatal(err)
			}
		}
	}
	if mode == "final" {
		if err := syscall.Fdatasync(fd); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	benchReportRate(b, b.N)
	_ = syscall.Fdatasync(fd)
}

// BenchmarkRawFiles is the floor of the spool's one-file-per-record design
// without the spool: per record, create a file in one folder, write the
// body, close it and rename it into another folder, as SyncProcess does.
func BenchmarkRawFiles(b *testing.B) {
	root := benchRoot(b)
	for _, sz := range benchSizes {
		b.Run(fmt.Sprintf("fdatasync=false/size=%s", sz.name), func(b *testing.B) {
			dir := benchSubdir(b, root)
			tmp, dst := filepath.Join(dir, "tmp"), filepath.Join(dir, "pending")
			for _, d := range []string{tmp, dst} {
				if err := os.Mkdir(d, 0o700); err != nil {
					b.Fatal(err)
				}
			}
			body := benchBody(sz.n)
			benchSettle()
			benchPrewarm(b, dir, b.N, sz.n)
			b.SetBytes(int64(sz.n))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				name := fmt.Sprintf("%016x.rec", i)
				f, err := os.OpenFile(filepath.Join(tmp, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := f.Write(body); err != nil {
					b.Fatal(err)
				}
				if err := f.Close(); err != nil {
					b.Fatal(err)
				}
				if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dst, name)); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			benchReportRate(b, b.N)
		})
	}
}
