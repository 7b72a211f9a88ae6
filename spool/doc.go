// Package spool is a folder-backed store of OTLP export requests waiting to
// be delivered, safe against crashes and shared safely by processes.
//
// Each record is the request body byte for byte and what is needed to send
// it again (URL without credentials or query string, Content-Type,
// Content-Encoding, signal, creation time, allow-listed headers), framed by
// lengths and CRC-32C checksums. Records are appended to segment files
// (sealed at DefaultSegmentBytes, 8 MiB, or a sixteenth of the cap when
// that is smaller): storing a record is one append, and delivering it one
// read. What becomes of each record (delivered, released after a failed
// attempt, set aside) is appended to a small sidecar file beside its
// segment, so that no segment is ever rewritten; a segment is deleted once
// all its records are settled.
//
// Operations: Put stores a record; PutClaimed stores one already claimed
// by the caller, who is sending it now; Claim hands out the oldest waiting
// records to one sender, and ClaimWhere those of the URLs it accepts,
// leaving the others waiting (a sender with one lane per destination);
// Ack marks a record delivered; Release puts it back
// in line, one attempt more; Quarantine sets it aside with the reason, in a
// bounded dead-letter folder, for records the server refused; Stats
// reports what is held and what was lost, by reason (Drops); Flush writes
// pending settlements now; Close hands claimed records back and releases
// the folder. Walk reads a folder without opening it, for tools that
// report on a spool another process is using.
//
// # Folder layout
//
//	pending/          sealed segments waiting, with their sidecars, shared
//	                  by every process
//	owners/<o>.lock   held by the live process o for its lifetime
//	owners/<o>/       o's segments: the one it appends to and the ones it
//	                  sends from
//	quarantine/       records refused or unreadable, one file each, with a
//	                  .why file beside it saying why
//
// # What a stored record survives
//
// SyncProcess (the default): a record Put returned for survives the death
// of the process at any instant, kill -9 included. A write the process was
// killed in the middle of leaves a torn record at the end of its segment,
// which is cut off and never delivered. SyncDurable also survives power
// loss and kernel crashes: the segment's data is synced before Put returns,
// concurrent puts sharing one sync (group commit), and a folder is synced
// when a segment or quarantine file is created in it. Settlements are
// written within a second and never synced, so after a crash a delivered
// record may be sent again: delivery is at least once.
//
// # Limits and losses
//
// Defaults, each set by its option: WithMaxBytes 512 MiB, counting every
// byte of the spool's files, quarantine included, and delivered records in
// segments not yet deleted; WithFullPolicy DropNewest; WithMaxAge 0 (records
// never expire); WithQuarantineMaxBytes 64 MiB, within the overall cap;
// WithHeaderAllowList none (Authorization, Proxy-Authorization and Cookie
// are never stored); WithSync SyncProcess; WithRescanInterval 5 s; WithClock
// time.Now; WithFS OSFS; WithLogger slog.Default(). A record's body is at
// most MaxBodySize (256 MiB).
//
// At the cap the policy decides: DropNewest refuses the new record with
// ErrFull; DropOldest deletes the oldest segments nobody is sending from,
// whole. Every loss is counted in Stats().Dropped by reason: Full, Evicted,
// Disk (Put failed on a disk error), Expired (past the maximum age when
// claimed), Corrupt, TooLarge, Closed (Put after Close) and
// QuarantineEvicted (deleted, oldest first, from a quarantine at its
// bound).
//
// # Start-up and corruption
//
// Opening a folder reads its listing and the sidecars of segments left
// part delivered: sealed segment names carry their first record's ID,
// record count and length, so opening costs a directory read however much
// is stored, and memory holds an index entry per segment, not per record.
// A segment's records are indexed when a sender starts on it (from the
// index kept when this process wrote and shared it, up to 1 MiB of such
// entries, else by reading its record headers), and each record's
// checksums are verified when it is read to be sent. A damaged region,
// whether a flipped byte, a truncation or garbage, is copied to quarantine
// and counted as corrupt, described by a *CorruptionError naming the file
// and the offset; the reader finds the next good record after it, and
// nothing damaged is delivered or stops the spool from opening. Files in
// pending/ that are not segments are quarantined the same way. Quarantine
// files are written under a temporary name and renamed into place;
// temporary files a crash left are removed at Open.
//
// # Several processes
//
// Any number of processes may open the same folder. Each appends to a
// segment of its own, in its own folder, and shares a sealed segment
// through pending/ unless it is the next it will send from. Claiming a
// segment moves it into the claimant's folder by rename, which succeeds
// for one process only, so no record is handed to two senders. Each
// process holds a lock file for its lifetime; a process that finds a lock
// free, at Open or when it runs out of work (at most every rescan
// interval), adopts that dead owner's segments, cutting off a torn last
// write. The byte cap is enforced on what each process knows of the
// folder.
//
// # Permissions and errors
//
// Files are created 0600 and folders 0700. At Open, a spool folder or
// subfolder open to group or others is tightened to 0700, with a warning
// naming it; one owned by another user is refused with an *Error matching
// ErrNotOwner, and nothing is changed. Disk errors come back as *Error
// values that match ErrNoSpace, ErrPermission, ErrNotDirectory or
// ErrNotOwner with errors.Is, and what was stored before is never damaged by
// them: a failed write is cut off again.
package spool
