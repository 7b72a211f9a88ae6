package spool

import "sync"

// groupSync shares one expensive sync among concurrent callers (group
// commit): a caller that arrives while a sync runs joins the next one, and
// whoever finds no sync running leads it, for every caller that joined.
type groupSync struct {
	sync func() error

	mu      sync.Mutex
	running bool
	next    *syncBatch // callers waiting for a sync that has not started
}

type syncBatch struct {
	done chan struct{}
	err  error
}

func (g *groupSync) Sync() error {
	g.mu.Lock()
	if g.next == nil {
		g.next = &syncBatch{done: make(chan struct{})}
	}
	mine := g.next
	if g.running {
		g.mu.Unlock()
		<-mine.done
		return mine.err
	}
	g.running = true
	// Lead until no one is waiting, so that no batch is left without a
	// leader once this sync ends.
	for g.next != nil {
		b := g.next
		g.next = nil
		g.mu.Unlock()
		b.err = g.sync()
		close(b.done)
		g.mu.Lock()
	}
	g.running = false
	g.mu.Unlock()
	return mine.err
}
