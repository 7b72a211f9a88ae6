// Package spoolinfo reports what a spool folder holds without opening it as
// a spool: it takes no lock and creates, moves or deletes nothing, so it is
// safe while a relay or an application uses the folder. It lists pending/
// and owners/*/claimed/ and reads, of each record, only the fixed header
// and the meta block (URL, content type, encoding, signal), verifying the
// meta checksum; bodies are never read.
//
// The record format is the one documented in spool/codec.go and file names
// the one in spool/name.go; the spool package has no exported read-only
// API for this (see the report for the one proposed), so this package
// parses both itself, and its tests check it against records written by
// spool.Put.
package spoolinfo

import (
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

// Report is what a spool folder holds.
type Report struct {
	Dir string `json:"dir"`
	// Total is Waiting and Claimed together.
	Total Group `json:"total"`
	// Waiting records are in pending/, in line to be sent.
	Waiting Group `json:"waiting"`
	// Claimed records are being sent by a running process, or were left
	// by one that stopped and will be taken back by the next to open the
	// folder.
	Claimed Group `json:"claimed"`
	// Attempted counts the records that have had at least one failed
	// delivery attempt.
	Attempted   int        `json:"attempted"`
	Endpoints   []Endpoint `json:"endpoints"`
	Quarantined Quarantine `json:"quarantined"`
	// Unreadable counts files in pending/ or claimed/ that are not records
	// or whose header is damaged; the spool quarantines them when it claims
	// them.
	Unreadable int `json:"unreadable"`
	// Processes counts the owner folders: processes using the spool now,
	// or that stopped without closing it.
	Processes int `json:"processes"`
}

// Layout, as in spool/spool.go.
const (
	pendingDir    = "pending"
	ownersDir     = "owners"
	quarantineDir = "quarantine"
	claimedSub    = "claimed"
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
	r := &Report{Dir: dir, Endpoints: []Endpoint{}}
	byKey := map[[2]string]*Endpoint{}
	seen := map[string]bool{} // record IDs, in case one moves between listings

	visit := func(folder string, g *Group) error {
		names, err := readDirNames(folder)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // an owner that closed meanwhile
			}
			return err
		}
		sort.Strings(names)
		for _, name := range names {
			n, ok := ParseName(name)
			if !ok {
				if !strings.HasPrefix(name, ".") {
					r.Unreadable++
				}
				continue
			}
			if seen[n.ID] {
				continue
			}
			m, err := ReadMeta(filepath.Join(folder, name))
			if errors.Is(err, fs.ErrNotExist) {
				continue // delivered or moved since the listing
			}
			seen[n.ID] = true
			if err != nil {
				r.Unreadable++
				continue
			}
			g.add(n.Created, n.Size)
			r.Total.add(n.Created, n.Size)
			if n.Attempts > 0 {
				r.Attempted++
			}
			key := [2]string{m.URL, m.Signal.String()}
			e := byKey[key]
			if e == nil {
				e = &Endpoint{URL: m.URL, Signal: m.Signal.String()}
				byKey[key] = e
			}
			e.add(n.Created, n.Size)
		}
		return nil
	}
	if err := visit(filepath.Join(dir, pendingDir), &r.Waiting); err != nil {
		return nil, err
	}
	owners, err := readDirNames(filepath.Join(dir, ownersDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	sort.Strings(owners)
	for _, o := range owners {
		if strings.HasSuffix(o, ".lock") || strings.HasPrefix(o, ".") {
			continue
		}
		if fi, err := os.Stat(filepath.Join(dir, ownersDir, o)); err != nil || !fi.IsDir() {
			continue
		}
		r.Processes++
		if err := visit(filepath.Join(dir, ownersDir, o, claimedSub), &r.Claimed); err != nil {
			return nil, err
		}
	}
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
	r.Claimed.finish(now)
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

// Name is what a record's file name says:
// <created:16 hex>-<uniq:16 hex>-<size>-<attempts>.rec.
type Name struct {
	ID       string // created-uniq, as spool.ID.String()
	Created  time.Time
	Size     int64
	Attempts int
}

// ParseName reads a record file name; ok is false for any other name.
func ParseName(name string) (n Name, ok bool) {
	rn, ok := spool.ParseRecordName(name)
	if !ok {
		return n, false
	}
	return Name{ID: rn.ID.String(), Created: rn.ID.Created(), Size: rn.Size, Attempts: rn.Attempts}, true
}

// Meta is a record's addressing, without its body.
type Meta struct {
	URL             string
	ContentType     string
	ContentEncoding string
	Signal          spool.Signal
	Created         time.Time
	Headers         int // allow-listed headers stored with it
	BodySize        int
}

// ReadMeta reads and verifies the header and meta block of the record file
// at path, and nothing of its body.
func ReadMeta(path string) (*Meta, error) {
	rec, bodySize, err := spool.ReadRecordMeta(path)
	if err != nil {
		return nil, err
	}
	headers := 0
	for _, vs := range rec.Header {
		headers += len(vs)
	}
	return &Meta{
		URL:             rec.URL,
		ContentType:     rec.ContentType,
		ContentEncoding: rec.ContentEncoding,
		Signal:          rec.Signal,
		Created:         rec.Created,
		Headers:         headers,
		BodySize:        bodySize,
	}, nil
}
