package otlpretry

import (
	"context"
	"errors"
	"fmt"
)

// ErrNotDelivered is returned by ForceFlush when exports are left that
// cannot be sent now: their destination waits for credentials.
var ErrNotDelivered = errors.New("otlpretry: exports wait for credentials")

// ForceFlush delivers the spool before ctx ends, cutting every backoff
// wait short. It returns nil once nothing is waiting, otherwise an error
// saying how much is left and, by destination, why: backing off (and the
// cause of the last failure), or waiting for credentials. It returns as
// soon as nothing more can be sent: exports waiting for credentials, which
// only a live request to their destination brings, do not hold it
// (ErrNotDelivered), nor do failures once their wait has been cut (the
// context's error).
func (t *Transport) ForceFlush(ctx context.Context) error {
	if t.closed.Load() {
		return errShutdown
	}
	// Exports answered at the end of their hold may still be released to
	// the spool: wait for their attempts first, retrying at once those
	// waiting out the immediate-retry delay, which would otherwise hold a
	// flush (and a shutdown) for up to a second.
	t.hurryRetries()
	err := t.waitDetached(ctx)
	if err == nil && t.spool.Stats().Records == 0 {
		return nil
	}
	var flushed <-chan flushDone
	if err == nil {
		flushed, err = t.delivery.flushed(ctx)
	}
	var why string
	if err == nil {
		select {
		case f := <-flushed:
			if t.spool.Stats().Records == 0 {
				return nil
			}
			why = leftError(f.left)
			err = ErrNotDelivered
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if why == "" {
		why = leftError(t.Stats().waiting())
	}
	st := t.spool.Stats()
	if why != "" {
		return fmt.Errorf("otlpretry: %d export(s) (%d bytes) not delivered yet (%s): %w", st.Records, st.Bytes, why, err)
	}
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
		stopErr := t.delivery.stop(ctx)
		t.workers.close()
		// Detached attempts were cancelled with the sender; wait for them
		// to settle their records before the spool closes.
		if err := t.waitDetached(ctx); err != nil {
			stopErr = errors.Join(stopErr, err)
		}
		t.cancellers.close()
		t.endpoints.close()
		closeErr := t.spool.Close()
		if ci, ok := t.next.(interface{ CloseIdleConnections() }); ok && t.cfg.ownNext {
			ci.CloseIdleConnections()
		}
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

// waitDetached waits, at most until ctx ends, for the attempts of exports
// that were answered at the end of their hold.
func (t *Transport) waitDetached(ctx context.Context) error {
	for t.detached.Load() > 0 {
		select {
		case <-t.detachedDone:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
