package spool

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// The quarantine is the dead-letter folder: records the server refused, and
// damaged regions of segments and files that are not segments, each a file
// of its own with a .why file beside it saying why. It is bounded
// (WithQuarantineMaxBytes): past the bound the oldest entries are deleted,
// counted as Drops.QuarantineEvicted. Entries sort by the time they
// arrived, which their names start with.
//
// Each file is written atomically: under a temporary name starting with
// tempPrefix, then renamed into place, so that a crash never leaves a torn
// entry; in SyncDurable mode the file is synced before the rename and the
// folder after it. Temporary files older than staleLockAge are removed at
// Open (a younger one may be another live process's write under way).

// tempPrefix starts the name of a file being written.
const tempPrefix = ".tmp-"

// quarantined is one entry of the quarantine: its file's name and the bytes
// it and its .why file take.
type quarantined struct {
	name string
	size int64
}

// loadQuarantine indexes the quarantine folder, oldest entry first, and
// removes stale temporary files.
func (s *Spool) loadQuarantine() error {
	fsys := s.cfg.fs
	names, err := fsys.ReadDirNames(s.quarantine)
	if err != nil {
		return diskError("open", s.quarantine, err)
	}
	slices.Sort(names)
	sizes := map[string]int64{}
	for _, name := range names {
		path := filepath.Join(s.quarantine, name)
		fi, err := fsys.Stat(path)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if strings.HasPrefix(name, tempPrefix) {
			if s.cfg.now().Sub(fi.ModTime()) > staleLockAge {
				_ = fsys.Remove(path)
			}
			continue
		}
		sizes[name] = fi.Size()
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
	err := fsys.Rename(path, dst)
	if err == nil && s.cfg.sync == SyncDurable {
		err = fsys.SyncDir(s.quarantine)
	}
	if err != nil {
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
	if err := s.writeQuarantineFile(qname, data); err != nil {
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
	reason := []byte(why.Error() + "\n")
	if err := s.writeQuarantineFile(qname+whyExt, reason); err == nil {
		size += int64(len(reason))
	}
	s.cfg.logger.Warn("spool: record quarantined", "path", dst, "reason", why)

	s.mu.Lock()
	s.quarantined = append(s.quarantined, quarantined{name: qname, size: size})
	s.quarantineBytes += size
	evict := s.trimQuarantineLocked()
	s.mu.Unlock()
	for _, q := range evict {
		_ = s.cfg.fs.Remove(filepath.Join(s.quarantine, q.name))
		_ = s.cfg.fs.Remove(filepath.Join(s.quarantine, q.name+whyExt))
	}
}

// trimQuarantineLocked forgets the oldest entries until the quarantine is
// within its cap, counting each, and returns them for their files to be
// deleted after mu is let go.
func (s *Spool) trimQuarantineLocked() []quarantined {
	var evict []quarantined
	for s.quarantineBytes > s.cfg.quarantineBytes && len(s.quarantined) > 0 {
		evict = append(evict, s.quarantined[0])
		s.quarantineBytes -= s.quarantined[0].size
		s.quarantined = s.quarantined[1:]
		s.counts.Dropped.QuarantineEvicted++
	}
	return evict
}

// writeQuarantineFile writes data as the quarantine's file name,
// atomically (see writeFileAtomic).
func (s *Spool) writeQuarantineFile(name string, data []byte) error {
	return s.writeFileAtomic(s.quarantine, name, data)
}

// writeFileAtomic writes data as the file name in dir, atomically: a
// temporary file, synced in SyncDurable mode, renamed into place, and the
// folder synced. Nothing is left behind when it fails.
func (s *Spool) writeFileAtomic(dir, name string, data []byte) error {
	fsys := s.cfg.fs
	durable := s.cfg.sync == SyncDurable
	tmp := filepath.Join(dir, tempPrefix+name)
	f, err := fsys.Create(tmp, filePerm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		_ = fsys.Remove(tmp)
		return err
	}
	if durable {
		return fsys.SyncDir(dir)
	}
	return nil
}

// A quarantined record's file name says, after the time prefix, which
// record it is and what became of it, so that a person or a tool can tell
// without reading the file: its ID (creation order), its size on disk and
// how many failed attempts it had. The file holds the record as framed in
// its segment (see codec.go).
//
//	<arrived:16 hex>-<created:16 hex>-<uniq:16 hex>-<size>-<attempts>.rec
const recordExt = ".rec"

// entry is what a quarantined record's name says.
type entry struct {
	id       ID
	size     int64
	attempts int32
}

func (e entry) name() string {
	return fmt.Sprintf("%016x-%016x-%d-%d%s", uint64(e.id.created), e.id.uniq, e.size, e.attempts, recordExt)
}
