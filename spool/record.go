package spool

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Signal is the kind of telemetry a record carries.
type Signal uint8

// The OTLP signals. SignalUnknown is kept for bodies posted to a path the
// spool does not recognise; it is stored and sent like the others.
const (
	SignalUnknown Signal = iota
	SignalTraces
	SignalMetrics
	SignalLogs
)

var signalNames = [...]string{"unknown", "traces", "metrics", "logs"}

func (s Signal) String() string {
	if int(s) < len(signalNames) {
		return signalNames[s]
	}
	return "signal(" + strconv.Itoa(int(s)) + ")"
}

// SignalFromPath guesses the signal from an OTLP/HTTP request path such as
// "/v1/traces".
func SignalFromPath(path string) Signal {
	switch {
	case hasSuffix(path, "/v1/traces"):
		return SignalTraces
	case hasSuffix(path, "/v1/metrics"):
		return SignalMetrics
	case hasSuffix(path, "/v1/logs"):
		return SignalLogs
	}
	return SignalUnknown
}

func hasSuffix(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}

// ID names a record for its whole life in the spool, across attempts and
// processes. It sorts in creation order.
type ID struct {
	created int64  // unix nanoseconds
	uniq    uint64 // process instance in the high half, a counter in the low half
}

// String returns the ID as it appears in file names.
func (id ID) String() string { return fmt.Sprintf("%016x-%016x", uint64(id.created), id.uniq) }

// Created is the time the record was first stored.
func (id ID) Created() time.Time { return time.Unix(0, id.created) }

func (id ID) less(o ID) bool {
	if id.created != o.created {
		return id.created < o.created
	}
	return id.uniq < o.uniq
}

// Record is one export request as it will be sent again: the body exactly as
// it was (still compressed if it was), and what is needed to address it.
// Credentials are never part of a record: see WithHeaderAllowList.
type Record struct {
	// ID is assigned by Put.
	ID ID
	// URL is the target without user information or query string, which
	// may hold credentials; the sender supplies those again from its live
	// configuration.
	URL             string
	ContentType     string
	ContentEncoding string
	Signal          Signal
	// Header holds only the allow-listed headers (none by default).
	Header http.Header
	// Created is set by Put from the spool's clock.
	Created time.Time
	// Attempts counts the failed delivery attempts made so far, as recorded
	// by Release.
	Attempts int
	Body     []byte

	buf *[]byte // the pooled buffer Body lies in, for Recycle
}

// Size is the number of bytes the record takes on disk.
func (r *Record) Size() int64 {
	return int64(encodedSize(r))
}
