// Package spool is a folder-backed store of OTLP export requests waiting to
// be delivered, safe against crashes and shared safely by processes.
//
// Each record is one file holding the request body byte for byte and what
// is needed to send it again (URL without credentials, Content-Type,
// Content-Encoding, signal, creation time, allow-listed headers), framed by
// a length and CRC-32C checksums. The attempt count lives in the file name,
// so that releasing a record after a failed attempt is one rename.
//
// Operations: Put stores a record; PutClaimed stores one already claimed
// by the caller, who is sending it now; Claim hands out the oldest waiting
// records to one sender; Ack deletes a delivered record; Release puts it
// back in line; Quarantine sets it aside with the reason, in a bounded
// dead-letter folder, for records the server refused or that cannot be
// read; Stats reports what is held and what was dropped, by reason.
// ParseRecordName and ReadRecordMeta read a folder without opening it, for
// tools that report on a spool another process is using.
//
// # What a stored record survives
//
// SyncProcess (the default) writes each record to a temporary file and
// renames it into place: a record Put returned for survives the death of
// the process at any instant, kill -9 included, and a record is whole or
// absent, never partial. SyncDurable also survives power loss and kernel
// crashes: the file and its directory entry are synced before Put returns,
// concurrent puts sharing one directory sync. Deleting a delivered record is
// never synced, so after a power loss a delivered record may be sent again:
// delivery is at least once.
//
// # Limits
//
// The spool holds at most 512 MiB by default (WithMaxBytes), counting every
// byte it writes, quarantine included. At the cap the policy decides:
// DropNewest (default) refuses the new record with ErrFull; DropOldest
// deletes the oldest waiting records. An optional maximum age (WithMaxAge)
// drops older records when they are claimed. The quarantine keeps at most
// 64 MiB, the oldest deleted first. Every drop is counted by reason.
//
// # Start-up and corruption
//
// Opening a folder reads its listing only: the ID, size and attempt count
// of each record are in its name, so opening costs one directory read
// however much is stored, and the index costs a few dozen bytes a record.
// A record's contents are checked when it is claimed; a torn, truncated or
// altered file is moved to quarantine and counted as corrupt, never
// delivered, and never stops the spool from opening. Files that are not
// records are quarantined the same way. Temporary files of dead processes
// are removed.
//
// # Several processes
//
// Any number of processes may open the same folder. Claiming moves a record
// into the claimant's own folder by rename, which succeeds for one process
// only, so no record is handed to two senders. Each process holds a lock
// file for its lifetime; a process that finds a lock free, at Open or when
// it runs out of work, adopts that dead owner's claimed records. The byte
// cap is enforced on what each process knows of the folder.
//
// Files are created 0600 and folders 0700. Disk errors come back as *Error
// values that match ErrNoSpace, ErrPermission or ErrNotDirectory with
// errors.Is, and what was stored before is never damaged by them.
package spool
