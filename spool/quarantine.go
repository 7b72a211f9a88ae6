package spool

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

type quarantined struct {
	name string
	size int64
}

func (s *Spool) loadQuarantine() error {
	fsys := s.cfg.fs
	names, err := fsys.ReadDirNames(s.quarantine)
	if err != nil {
		return diskError("open", s.quarantine, err)
	}
	slices.Sort(names)
	sizes := map[string]int64{}
	for _, name := range names {
		fi, err := fsys.Stat(filepath.Join(s.quarantine, name))
		if err == nil && fi.Mode().IsRegular() {
			sizes[name] = fi.Size()
		}
	}
	var q []quarantined
	var total int64
	for _, name := range names {
		size, ok := sizes[name]
		if !ok {
			continue
		}
		total += size
		if strings.HasSuffix(name, whyExt) {
			// Counted with its record, which takes it along when evicted;
			// a lone one is left for the operator.
			continue
		}
		why := sizes[name+whyExt]
		q = append(q, quarantined{name: name, size: size + why})
	}
	s.mu.Lock()
	s.quarantined = append(q, s.quarantined...)
	s.quarantineBytes += total
	s.mu.Unlock()
	return nil
}

// quarantineFile moves the file at path into the quarantine.
func (s *Spool) quarantineFile(path, name string, why error) error {
	fsys := s.cfg.fs
	qname := s.quarantineName(name)
	dst := filepath.Join(s.quarantine, qname)
	size := int64(0)
	if fi, err := fsys.Stat(path); err == nil && fi.Mode().IsRegular() {
		size = fi.Size()
	}
	if err := fsys.Rename(path, dst); err != nil {
		// It cannot be kept: better gone than delivered or re-read forever.
		_ = fsys.Remove(path)
		s.cfg.logger.Error("spool: cannot quarantine a file, deleted it", "path", path, "reason", why, "err", err)
		return diskError("quarantine", path, err)
	}
	s.quarantined1(dst, qname, size, why)
	return nil
}

// quarantineData writes data, a record or a damaged region, into the
// quarantine.
func (s *Spool) quarantineData(data []byte, name string, why error) error {
	qname := s.quarantineName(name)
	dst := filepath.Join(s.quarantine, qname)
	if err := writeSmallFile(s.cfg.fs, dst, data); err != nil {
		_ = s.cfg.fs.Remove(dst)
		s.cfg.logger.Error("spool: cannot quarantine a record, dropped it", "name", name, "reason", why, "err", err)
		return diskError("quarantine", dst, err)
	}
	s.quarantined1(dst, qname, int64(len(data)), why)
	return nil
}

// quarantineName sorts quarantined files by the time they arrived.
func (s *Spool) quarantineName(name string) string {
	return fmt.Sprintf("%016x-%s", uint64(s.cfg.now().UnixNano()), name)
}

// quarantined1 writes why beside a quarantined file, counts it, and trims
// the quarantine to its cap, oldest first.
func (s *Spool) quarantined1(dst, qname string, size int64, why error) {
	fsys := s.cfg.fs
	reason := []byte(why.Error() + "\n")
	if err := writeSmallFile(fsys, dst+whyExt, reason); err == nil {
		size += int64(len(reason))
	}
	s.cfg.logger.Warn("spool: record quarantined", "path", dst, "reason", why)

	s.mu.Lock()
	s.quarantined = append(s.quarantined, quarantined{name: qname, size: size})
	s.quarantineBytes += size
	var evict []quarantined
	for s.quarantineBytes > s.cfg.quarantineBytes && len(s.quarantined) > 0 {
		evict = append(evict, s.quarantined[0])
		s.quarantineBytes -= s.quarantined[0].size
		s.quarantined = s.quarantined[1:]
		s.counts.Dropped.QuarantineOverflow++
	}
	s.mu.Unlock()
	for _, q := range evict {
		_ = fsys.Remove(filepath.Join(s.quarantine, q.name))
		_ = fsys.Remove(filepath.Join(s.quarantine, q.name+whyExt))
	}
}

func writeSmallFile(fsys FS, path string, data []byte) error {
	f, err := fsys.Create(path, filePerm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// A record's file name carries what opening a spool needs to know without
// reading the file: its ID (creation order), its size on disk and how many
// attempts it has had. Opening a spool is therefore one directory listing,
// however many records it holds; contents are verified when a record is
// claimed, which reads it anyway.
//
//	<created:16 hex>-<uniq:16 hex>-<size>-<attempts>.rec
const recordExt = ".rec"

// entry is the in-memory index of one record: small and pointer-free, so
// that a spool of half a million records costs a few megabytes.
type entry struct {
	id       ID
	size     int64
	attempts int32
}

func (e entry) name() string {
	return fmt.Sprintf("%016x-%016x-%d-%d%s", uint64(e.id.created), e.id.uniq, e.size, e.attempts, recordExt)
}

// parseName is the inverse of entry.name; ok is false for any other name.
func parseName(name string) (e entry, ok bool) {
	base, found := strings.CutSuffix(name, recordExt)
	if !found {
		return e, false
	}
	// strings.Cut rather than Split: no allocation, for a spool of half a
	// million records is parsed at every Open.
	p0, rest, ok0 := strings.Cut(base, "-")
	p1, rest, ok1 := strings.Cut(rest, "-")
	p2, p3, ok2 := strings.Cut(rest, "-")
	if !ok0 || !ok1 || !ok2 || strings.Contains(p3, "-") || len(p0) != 16 || len(p1) != 16 {
		return e, false
	}
	created, err1 := strconv.ParseUint(p0, 16, 64)
	uniq, err2 := strconv.ParseUint(p1, 16, 64)
	size, err3 := strconv.ParseInt(p2, 10, 64)
	attempts, err4 := strconv.ParseInt(p3, 10, 32)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || size < 0 || attempts < 0 {
		return e, false
	}
	return entry{id: ID{created: int64(created), uniq: uniq}, size: size, attempts: int32(attempts)}, true
}
