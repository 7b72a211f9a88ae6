package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// scan brings the index in line with the folder: it adopts what dead
// processes left, then takes in every segment waiting in pending/ that is
// not known yet, and forgets those other processes have taken. Only names
// and sidecars are read here; records are checked when their segment is
// loaded to be sent from.
func (s *Spool) scan() error {
	s.adoptOrphans()
	fsys := s.cfg.fs

	segs := map[ID]segName{}
	sidecars := map[ID]bool{}
	var bad []string
	err := eachDirName(fsys, s.pending, func(name string) {
		n, ok := parseSegName(name)
		switch {
		case ok && n.sidecar:
			sidecars[n.key] = true
		case ok && n.sealed:
			segs[n.key] = n
		case strings.HasPrefix(name, "."):
		default:
			bad = append(bad, name)
		}
	})
	if err != nil {
		return diskError("open", s.pending, err)
	}
	for _, name := range bad {
		s.quarantineFile(filepath.Join(s.pending, name), name, errors.New("not a segment file name"))
		s.mu.Lock()
		s.counts.Dropped.Corrupt++
		s.mu.Unlock()
	}

	// What is new is read outside the lock: sidecars may take a moment.
	s.mu.Lock()
	var fresh []segName
	for key, n := range segs {
		if _, known := s.byKey[key]; !known {
			fresh = append(fresh, n)
		}
	}
	s.mu.Unlock()
	found := make([]*segment, 0, len(fresh))
	for _, n := range fresh {
		seg := &segment{key: n.key, dir: s.pending, name: segmentName(n.key, n.records, n.size), records: n.records, bytes: n.size}
		if sidecars[n.key] {
			path := filepath.Join(s.pending, sidecarName(n.key))
			if data, err := fsys.ReadFile(path); err == nil {
				st := readSidecar(data)
				seg.settled = min(len(st.settled), n.records)
				seg.ackBytes = int64(len(data))
			}
		}
		if seg.settled >= seg.records {
			// Fully delivered; its deletion was cut short.
			s.deleteFiles(seg)
			continue
		}
		seg.live = seg.bytes
		if seg.settled > 0 {
			seg.live, seg.oldest = s.measure(seg)
		}
		found = append(found, seg)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastScan = s.cfg.now()
	for _, seg := range found {
		if _, known := s.byKey[seg.key]; !known {
			s.insertLocked(seg)
			s.diskBytes += seg.bytes + seg.ackBytes
		}
	}
	for _, seg := range slices.Clone(s.segs) {
		if seg.slots == nil && !seg.busy && seg.dir == s.pending {
			if _, there := segs[seg.key]; !there {
				s.forgetLocked(seg) // another process has taken it
			}
		}
	}
	for key := range sidecars {
		if _, there := segs[key]; !there {
			s.removeOrphanSidecar(filepath.Join(s.pending, sidecarName(key)))
		}
	}
	return nil
}

// measure adds up the records of a segment in pending/ that its sidecar
// does not say are settled, and finds the oldest of them, reading their
// framing only. Only segments left part sent are read so; each process
// leaves at most a few. If it cannot be read, the bytes are estimated in
// proportion to the records.
func (s *Spool) measure(seg *segment) (live int64, oldest ID) {
	estimate := seg.bytes * int64(seg.records-seg.settled) / int64(max(seg.records, 1))
	data, err := s.cfg.fs.ReadFile(filepath.Join(s.pending, sidecarName(seg.key)))
	if err != nil {
		return estimate, ID{}
	}
	side := readSidecar(data)
	f, err := s.cfg.fs.OpenFile(filepath.Join(s.pending, seg.name), os.O_RDONLY, 0)
	if err != nil {
		return estimate, ID{}
	}
	defer f.Close()
	size, err := segmentFileSize(f)
	if err != nil {
		return estimate, ID{}
	}
	err = scanSegment(f, min(size, seg.bytes), false, func(sc scanned) {
		if side.settled[uint32(sc.off)] {
			return
		}
		live += sc.size
		if sc.meta != nil && (oldest == ID{} || sc.meta.ID.less(oldest)) {
			oldest = sc.meta.ID
		}
	})
	if err != nil {
		return estimate, ID{}
	}
	return live, oldest
}

// removeOrphanSidecar deletes a sidecar whose segment is gone, unless it is
// recent: a process moving a segment into pending/ moves its sidecar first.
func (s *Spool) removeOrphanSidecar(path string) {
	if fi, err := s.cfg.fs.Stat(path); err == nil && s.cfg.now().Sub(fi.ModTime()) > staleLockAge {
		_ = s.cfg.fs.Remove(path)
	}
}

// load claims seg from pending/ into this process's folder and reads its
// index: every record's place and ID, from headers verified against their
// checksums, and what the sidecar says was done. Damaged regions are quarantined and
// counted. It returns nil when another process took the segment first.
func (s *Spool) load(seg *segment) error {
	fsys := s.cfg.fs
	src, dst := filepath.Join(s.pending, seg.name), filepath.Join(s.mine, seg.name)
	if err := fsys.Rename(src, dst); err != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if errors.Is(err, fs.ErrNotExist) {
			seg.busy = false
			s.forgetLocked(seg) // its files are another process's now
			return nil
		}
		seg.busy = false
		return diskError("claim", src, err)
	}
	s.mu.Lock()
	written := s.takeWrittenLocked(seg)
	s.mu.Unlock()
	var side sidecarState
	ackBytes := int64(0)
	ackDst := filepath.Join(s.mine, sidecarName(seg.key))
	if err := fsys.Rename(filepath.Join(s.pending, sidecarName(seg.key)), ackDst); err == nil {
		if data, err := fsys.ReadFile(ackDst); err == nil {
			side, ackBytes = readSidecar(data), int64(len(data))
		}
	}
	f, err := fsys.OpenFile(dst, os.O_RDWR, 0)
	if errors.Is(err, syscall.EISDIR) {
		// Not a file at all: set aside. Any other failure to open is the
		// disk's, and the segment is handed back below.
		s.quarantineFile(dst, seg.name, &CorruptionError{Path: dst, Err: err})
		s.mu.Lock()
		seg.busy = false
		s.forgetLocked(seg)
		s.counts.Dropped.Corrupt++
		s.mu.Unlock()
		return nil
	}
	var length int64
	if err == nil {
		length, err = segmentFileSize(f)
		if err == nil && length > seg.bytes {
			// Past the length the name gives is nothing that was
			// acknowledged: a write cut short by a failing disk.
			err = f.Truncate(seg.bytes)
		}
		length = min(length, seg.bytes)
	}
	var slots []slot
	var corrupt []scanned
	if err == nil && writtenFits(written, seg.records, length) {
		// As this process wrote it: the offsets are known, and each
		// record is verified whole when it is read to be sent. Only what
		// the sidecar says was done since is new.
		slots = written
		for i := range slots {
			sl := &slots[i]
			sl.state, sl.attempts = slotWaiting, side.attempts[sl.off]
			if side.settled[sl.off] {
				sl.state = slotSettled
			}
		}
	} else if err == nil {
		// Framing only: each body's checksum is verified when the record
		// is read to be sent, which reads it anyway.
		err = scanSegment(f, length, false, func(sc scanned) {
			sl := slot{off: uint32(sc.off), size: uint32(sc.size)}
			switch {
			case sc.err != nil:
				sl.state = slotSettled
				if !side.settled[sl.off] {
					corrupt = append(corrupt, sc)
				}
			case side.settled[sl.off]:
				sl.id, sl.state = sc.meta.ID, slotSettled
			default:
				sl.id, sl.attempts = sc.meta.ID, side.attempts[sl.off]
			}
			slots = append(slots, sl)
		})
	}
	if err != nil {
		if f != nil {
			_ = f.Close()
		}
		// Handed back to pending/, sidecar first, for a later claim here
		// or elsewhere. If even that fails it stays in this process's
		// folder, which Close then keeps for the next process to adopt.
		_ = fsys.Rename(ackDst, filepath.Join(s.pending, sidecarName(seg.key)))
		back := fsys.Rename(dst, src)
		s.mu.Lock()
		seg.busy = false
		if back != nil {
			s.keepMine = true
			s.forgetLocked(seg) // its files stay; only the index lets go
		}
		s.mu.Unlock()
		return diskError("claim", dst, err)
	}

	s.mu.Lock()
	// Records the name promised and the scan could not make out, as when
	// the file was cut short, are lost: counted, like the damaged regions.
	if missing := seg.records - len(slots); missing > 0 {
		s.counts.Dropped.Corrupt += uint64(missing)
	}
	s.diskBytes += ackBytes - seg.ackBytes + length - seg.bytes
	seg.dir, seg.f, seg.slots, seg.ackBytes, seg.bytes = s.mine, f, slots, ackBytes, length
	seg.records, seg.settled, seg.live, seg.next, seg.firstLive = len(slots), 0, 0, 0, 0
	for _, sl := range slots {
		if sl.state == slotSettled {
			seg.settled++
		} else {
			seg.live += int64(sl.size)
		}
	}
	seg.refs++ // for the quarantining below
	seg.busy = false
	s.mu.Unlock()

	for _, sc := range corrupt {
		data := make([]byte, min(sc.size, MaxBodySize))
		n, _ := f.ReadAt(data, sc.off)
		s.quarantineData(data[:n], fmt.Sprintf("%s-%d.corrupt", seg.key, sc.off),
			&CorruptionError{Path: fmt.Sprintf("%s@%d", dst, sc.off), Err: sc.err})
		s.mu.Lock()
		s.counts.Dropped.Corrupt++
		s.mu.Unlock()
		s.appendSidecar(seg, uint32(sc.off), opSettled)
	}
	s.unref(seg)
	return nil
}

// writtenFits tells whether the slots kept from writing a segment cover
// exactly the records and bytes it has now.
func writtenFits(written []slot, records int, length int64) bool {
	if len(written) == 0 || len(written) != records {
		return false
	}
	last := written[len(written)-1]
	return int64(last.off)+int64(last.size) == length
}

func segmentFileSize(f File) (int64, error) {
	if st, ok := f.(interface{ Stat() (fs.FileInfo, error) }); ok {
		fi, err := st.Stat()
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	return f.Seek(0, 2)
}

// adoptOrphans moves the segments of every dead owner to pending/. An owner
// is dead when its lock can be taken.
func (s *Spool) adoptOrphans() {
	fsys := s.cfg.fs
	owners := filepath.Join(s.dir, ownersDir)
	names, err := fsys.ReadDirNames(owners)
	if err != nil {
		s.cfg.logger.Warn("spool: cannot list owners", "dir", owners, "err", err)
		return
	}
	seen := map[string]bool{}
	for _, name := range names {
		owner := strings.TrimSuffix(name, lockExt)
		if owner == s.owner || seen[owner] || strings.HasPrefix(owner, ".") {
			continue
		}
		seen[owner] = true
		s.adoptOwner(owner)
	}
}

func (s *Spool) adoptOwner(owner string) {
	fsys := s.cfg.fs
	dir := filepath.Join(s.dir, ownersDir, owner)
	lock := dir + lockExt
	unlock, err := tryLock(lock, false)
	switch {
	case errors.Is(err, errLocked):
		return // alive
	case errors.Is(err, fs.ErrNotExist):
		// No lock: the owner finished its Close, or died between creating
		// its lock and its folder; both leave nothing claimed to race for.
	case err != nil:
		s.cfg.logger.Warn("spool: cannot check owner", "lock", lock, "err", err)
		return
	}
	if unlock != nil {
		defer unlock()
	}
	if _, err := fsys.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		// A lock with no folder: stale, unless it is brand new and its
		// owner is about to lock it.
		if fi, err := fsys.Stat(lock); err == nil && s.cfg.now().Sub(fi.ModTime()) > staleLockAge {
			_ = fsys.Remove(lock)
		}
		return
	}
	names, _ := fsys.ReadDirNames(dir)
	segs := map[ID]segName{}
	for _, name := range names {
		if n, ok := parseSegName(name); ok && !n.sidecar {
			segs[n.key] = n
		}
	}
	// Sidecars first, so that no segment waits in pending/ without its own.
	for _, name := range names {
		n, ok := parseSegName(name)
		if !ok || !n.sidecar {
			continue
		}
		path := filepath.Join(dir, name)
		if _, has := segs[n.key]; !has {
			_ = fsys.Remove(path) // its segment was delivered and deleted
			continue
		}
		if err := fsys.Rename(path, filepath.Join(s.pending, name)); err != nil {
			s.cfg.logger.Warn("spool: cannot adopt a sidecar", "path", path, "err", err)
		}
	}
	moved, torn, left := 0, 0, 0
	for key, n := range segs {
		name := activeName(key)
		if n.sealed {
			name = segmentName(key, n.records, n.size)
		}
		records, cut, err := s.adoptSegment(filepath.Join(dir, name), n)
		switch {
		case err != nil:
			left++
			s.cfg.logger.Warn("spool: cannot adopt a segment of a dead process", "path", filepath.Join(dir, name), "err", err)
		default:
			moved += records
			if cut {
				torn++
			}
		}
	}
	if left > 0 {
		return
	}
	if err := fsys.RemoveAll(dir); err != nil {
		s.cfg.logger.Warn("spool: cannot remove a dead process's folder", "dir", dir, "err", err)
		return
	}
	_ = fsys.Remove(lock)
	if moved > 0 || torn > 0 {
		s.cfg.logger.Info("spool: adopted the records of a process that is gone",
			"owner", owner, "records", moved, "partial_writes_removed", torn)
	}
}

// adoptSegment finds where the records of a dead owner's segment end, cuts
// off a torn last write, and moves the segment to pending/ under its sealed
// name. It returns how many records it holds and whether a tail was cut.
func (s *Spool) adoptSegment(path string, n segName) (records int, cut bool, err error) {
	fsys := s.cfg.fs
	f, err := fsys.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	size, err := segmentFileSize(f)
	if err != nil {
		return 0, false, err
	}
	if n.sealed {
		size = min(size, n.size)
	}
	end := int64(0)
	var tail *scanned
	err = scanSegment(f, size, false, func(sc scanned) {
		records++
		end = sc.off + sc.size
		if sc.err != nil {
			tail = &sc
		} else {
			tail = nil
		}
	})
	if err != nil {
		return 0, false, err
	}
	if tail != nil && tail.off+tail.size == size && !n.sealed {
		// What ends the segment unreadably is the write that was under way
		// when its process died; the put never returned.
		records--
		end, cut = tail.off, true
	}
	key := n.key
	if records == 0 {
		_ = fsys.Remove(filepath.Join(filepath.Dir(path), sidecarName(key)))
		_ = fsys.Remove(filepath.Join(s.pending, sidecarName(key)))
		return 0, cut, fsys.Remove(path)
	}
	if cut || end < size {
		if err := f.Truncate(end); err != nil {
			return 0, false, err
		}
	}
	return records, cut, fsys.Rename(path, filepath.Join(s.pending, segmentName(key, records, end)))
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

// String names the spool in logs.
func (s *Spool) String() string { return fmt.Sprintf("spool %s (owner %s)", s.dir, s.owner) }
