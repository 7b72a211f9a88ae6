package otlpretry

import (
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// logLimiter lets one kind of message through at most once per interval,
// and counts what it held back so the next message can say so. Each kind
// has its own, so that one message never hides another.
type logLimiter struct {
	clock    clockwork.Clock
	interval time.Duration

	mu         sync.Mutex // guards below
	last       time.Time
	suppressed int
}

// allow reports whether to log now, and how many were held back since.
func (l *logLimiter) allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	if !l.last.IsZero() && now.Sub(l.last) < l.interval {
		l.suppressed++
		return false, 0
	}
	l.last = now
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}
