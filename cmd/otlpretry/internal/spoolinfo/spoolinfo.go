// Package spoolinfo reports what a spool folder holds without opening it as
// a spool: it creates, moves or deletes nothing, so it is safe while a relay
// or an application uses the folder. It walks the segments with spool.Walk,
// which reads of each record only the header and the meta block (URL,
// content type, encoding, signal), verifying the meta checksum; bodies are
// never read. It tells a running process from one that is gone by trying
// the process's lock without waiting (spool.Owners), which never disturbs
// a running one.
package spoolinfo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/otlpretry/otlpretry/spool"
)

// Group sums a set of records.
type Group struct {
	Records int   `json:"records"`
	Bytes   int64 `json:"bytes"`
	// Oldest is the creation time of the oldest record; zero when empty.
	Oldest           time.Time `json:"oldest,omitzero"`
	OldestAgeSeconds float64   `json:"oldest_age_seconds"`
}

func (g *Group) add(created time.Time, size int64) {
	g.Records++
	g.Bytes += size
	if g.Oldest.IsZero() || created.Before(g.Oldest) {
		g.Oldest = created
	}
}

func (g *Group) finish(now time.Time) {
	if !g.Oldest.IsZero() {
		g.OldestAgeSeconds = now.Sub(g.Oldest).Seconds()
	}
}

// Endpoint sums the records of one URL and signal.
type Endpoint struct {
	URL    string `json:"url"`
	Signal string `json:"signal"`
	Group
}

// Quarantine sums the quarantine folder.
type Quarantine struct {
	Records int   `json:"records"`
	Bytes   int64 `json:"bytes"` // .why files included
}

// Process is a process that has or had the spool open, with what its own
// folder holds.
type Process struct {
	// Owner is the name of its folder under owners/.
	Owner string `json:"owner"`
	// PID is its process ID (in its PID namespace); 0 if unknown.
	PID int `json:"pid"`
	// Alive is true while it runs with the spool open. A process that is
	// gone (killed, or stopped without handing its exports back) left
	// them to the next process that opens the folder, which delivers
	// them.
	Alive bool `json:"alive"`
	// Destinations are what a running process last said of the
	// destinations it sends to (its note in the folder): the state
	// ("healthy", "waiting", "waiting for credentials") and the cause of
	// the last failure. Empty for a process that is gone or wrote none.
	Destinations []Destination `json:"destinations,omitempty"`
	Group
}

// Destination is a process's word on one destination, from its note.
type Destination struct {
	URL   string `json:"url"`
	State string `json:"state"`
	Cause string `json:"cause,omitempty"`
}

// Report is what a spool folder holds.
type Report struct {
	Dir string `json:"dir"`
	// Total is Waiting, Held and Orphaned together.
	Total Group `json:"total"`
	// Waiting records are in pending/, in line to be sent by any process.
	Waiting Group `json:"waiting"`
	// Held records are in the own folder of a running process, which
	// writes or sends them.
	Held Group `json:"held"`
	// Orphaned records are in the folder of a process that is gone: the
	// next process that opens the folder delivers them.
	Orphaned Group `json:"orphaned"`
	// Attempted counts the records that have had at least one failed
	// delivery attempt.
	Attempted   int        `json:"attempted"`
	Endpoints   []Endpoint `json:"endpoints"`
	Quarantined Quarantine `json:"quarantined"`
	// Unreadable counts damaged regions of segments, and files in pending/
	// that are not segments; the spool quarantines them when it gets to
	// them.
	Unreadable int `json:"unreadable"`
	// Processes are the owner folders, by process: running ones and ones
	// that are gone, ordered by owner name.
	Processes []Process `json:"processes"`
}

// Layout, as in spool/spool.go.
const (
	pendingDir    = "pending"
	quarantineDir = "quarantine"
	whyExt        = ".why"
)

// ErrNotSpool is returned for a folder that is not a spool.
var ErrNotSpool = errors.New("not a spool folder")

// Inspect reads dir at now.
func Inspect(dir string, now time.Time) (*Report, error) {
	fi, err := os.Stat(filepath.Join(dir, pendingDir))
	if err != nil || !fi.IsDir() {
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w (no %s/ folder)", dir, ErrNotSpool, pendingDir)
		}
		return nil, err
	}
	r := &Report{Dir: dir, Endpoints: []Endpoint{}, Processes: []Process{}}
	byKey := map[[2]string]*Endpoint{}
	byOwner := map[string]*Process{}
	seen := map[spool.ID]bool{} // in case a segment moves during the walk
	err = spool.Walk(dir, func(sr spool.StoredRecord, err error) error {
		if err != nil {
			r.Unreadable++
			return nil
		}
		if seen[sr.Record.ID] {
			return nil
		}
		seen[sr.Record.ID] = true
		created := sr.Record.Created
		g := &r.Waiting
		if sr.Owner != "" {
			g = &r.Orphaned
			if sr.OwnerAlive {
				g = &r.Held
			}
			p := byOwner[sr.Owner]
			if p == nil {
				p = &Process{Owner: sr.Owner, Alive: sr.OwnerAlive}
				byOwner[sr.Owner] = p
			}
			p.add(created, sr.Size)
		}
		g.add(created, sr.Size)
		r.Total.add(created, sr.Size)
		if sr.Attempts > 0 {
			r.Attempted++
		}
		key := [2]string{sr.Record.URL, sr.Record.Signal.String()}
		e := byKey[key]
		if e == nil {
			e = &Endpoint{URL: sr.Record.URL, Signal: sr.Record.Signal.String()}
			byKey[key] = e
		}
		e.add(created, sr.Size)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if names, err := readDirNames(filepath.Join(dir, pendingDir)); err == nil {
		for _, name := range names {
			if !strings.HasSuffix(name, ".seg") && !strings.HasSuffix(name, ".ack") && !strings.HasPrefix(name, ".") {
				r.Unreadable++
			}
		}
	}
	// Every owner folder is listed, holding records or not; the walk's
	// view of each owner's state is kept where it found records, so that
	// a record's group and its process agree.
	owners, err := spool.Owners(dir)
	if err != nil {
		return nil, err
	}
	for _, o := range owners {
		if byOwner[o.Name] == nil {
			byOwner[o.Name] = &Process{Owner: o.Name, Alive: o.Alive}
		}
		byOwner[o.Name].PID = o.PID
		if o.Alive && o.Note != nil {
			// The note's format is the library's (ownerNote in note.go).
			var note struct {
				Destinations []Destination `json:"destinations"`
			}
			if json.Unmarshal(o.Note, &note) == nil {
				byOwner[o.Name].Destinations = note.Destinations
			}
		}
	}
	for _, p := range byOwner {
		p.finish(now)
		r.Processes = append(r.Processes, *p)
	}
	sort.Slice(r.Processes, func(i, j int) bool { return r.Processes[i].Owner < r.Processes[j].Owner })
	if q, err := readDirNames(filepath.Join(dir, quarantineDir)); err == nil {
		for _, name := range q {
			fi, err := os.Lstat(filepath.Join(dir, quarantineDir, name))
			if err != nil || !fi.Mode().IsRegular() {
				continue
			}
			r.Quarantined.Bytes += fi.Size()
			if !strings.HasSuffix(name, whyExt) {
				r.Quarantined.Records++
			}
		}
	}

	for _, e := range byKey {
		e.finish(now)
		r.Endpoints = append(r.Endpoints, *e)
	}
	sort.Slice(r.Endpoints, func(i, j int) bool {
		a, b := r.Endpoints[i], r.Endpoints[j]
		if a.URL != b.URL {
			return a.URL < b.URL
		}
		return a.Signal < b.Signal
	})
	r.Total.finish(now)
	r.Waiting.finish(now)
	r.Held.finish(now)
	r.Orphaned.finish(now)
	return r, nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}
