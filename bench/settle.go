package main

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"
)

// settleDisk puts the machine in the same state before each measured
// part, when -drop-caches is given. On ext4 without a journal (the
// benchmark machine, docs/BENCHMARKS.md, Machine), file creation slows down
// for a minute after many files were deleted nearby, which every spool
// drain does; dropping the caches ends that, and the wait lets a VM hand
// the freed memory back to its host, so that each part starts from cold
// memory rather than from whatever the previous part left. Without it the
// order of the systems would favour whichever runs first. It needs root.
func settleDisk(ctx context.Context, c config) error {
	if !c.dropCaches {
		return nil
	}
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("-drop-caches: %w (it needs root)", err)
	}
	return sleepUntil(ctx, time.Now().Add(5*time.Second))
}
