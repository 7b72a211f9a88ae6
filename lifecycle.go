package otlpretry

import (
	"context"
	"errors"
	"fmt"
)

// ForceFlush delivers the spool before ctx ends, cutting any backoff wait
// short. It returns nil once nothing is waiting, otherwise an error saying
// how much is left.
func (t *Transport) ForceFlush(ctx context.Context) error {
	if t.closed.Load() {
		return errShutdown
	}
	if t.spool.Stats().Records == 0 {
		return nil
	}
	empty, err := t.sender.flushed(ctx)
	if err == nil {
		select {
		case <-empty:
			return nil
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	st := t.spool.Stats()
	return fmt.Errorf("otlpretry: %d export(s) (%d bytes) not delivered yet: %w", st.Records, st.Bytes, err)
}

// Shutdown stops the background sender within ctx and closes the spool.
// Whatever was not delivered stays on disk for the next process using the
// same folder: it is never deleted. After Shutdown, requests pass straight
// through to the underlying transport. Calling it again does nothing.
func (t *Transport) Shutdown(ctx context.Context) error {
	var err error
	t.shutdownOnce.Do(func() {
		t.closed.Store(true)
		stopErr := t.sender.stop(ctx)
		// Detached attempts were cancelled with the sender; wait for them
		// to settle their records before the spool closes.
		waited := make(chan struct{})
		go func() { t.detachedWG.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-ctx.Done():
			stopErr = errors.Join(stopErr, ctx.Err())
		}
		closeErr := t.spool.Close()
		if t.metricsReg != nil {
			_ = t.metricsReg.Unregister()
		}
		err = errors.Join(stopErr, closeErr)
		if st := t.spool.Stats(); st.Records > 0 {
			t.cfg.logger.Info("otlpretry: exports left in the spool for the next run",
				"exports", st.Records, "bytes", st.Bytes, "dir", t.cfg.dir)
		}
	})
	return err
}
