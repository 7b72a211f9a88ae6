package spool

import (
	"encoding/binary"
	"testing"
)

// FuzzReadSidecar: whatever a sidecar file holds, decoding never panics and
// reports exactly the whole entries that pass their check: a settled
// offset for each opSettled entry, one attempt for each opReleased entry,
// no more entries than the file has room for, and a torn last entry
// ignored.
func FuzzReadSidecar(f *testing.F) {
	entries := func(es ...[sidecarEntrySize]byte) []byte {
		var out []byte
		for _, e := range es {
			out = append(out, e[:]...)
		}
		return out
	}
	settled, released := sidecarEntry(0, opSettled), sidecarEntry(4096, opReleased)
	f.Add([]byte{})
	f.Add(entries(settled))
	f.Add(entries(released, released, sidecarEntry(1<<32-1, opSettled)))
	f.Add(entries(settled, released)[:12]) // torn
	bad := settled
	bad[7] ^= 1
	f.Add(entries(bad, released))
	f.Add(entries(sidecarEntry(8, 9))) // an op no version writes
	f.Fuzz(func(t *testing.T, data []byte) {
		st := readSidecar(data)
		// What the encoder would have written, entry by entry.
		wantSettled := map[uint32]bool{}
		wantAttempts := map[uint32]int32{}
		for i := 0; i+sidecarEntrySize <= len(data); i += sidecarEntrySize {
			e := data[i : i+sidecarEntrySize]
			off := binary.LittleEndian.Uint32(e)
			if sidecarEntry(off, e[4]) != [sidecarEntrySize]byte(e) {
				continue
			}
			switch e[4] {
			case opSettled:
				wantSettled[off] = true
			case opReleased:
				wantAttempts[off]++
			}
		}
		if len(st.settled) != len(wantSettled) || len(st.attempts) != len(wantAttempts) {
			t.Fatalf("decoded %d settled, %d with attempts; want %d, %d", len(st.settled), len(st.attempts), len(wantSettled), len(wantAttempts))
		}
		total := len(st.settled)
		for off, ok := range st.settled {
			if !ok || !wantSettled[off] {
				t.Fatalf("offset %d settled, no valid entry says so", off)
			}
		}
		for off, n := range st.attempts {
			if n <= 0 || n != wantAttempts[off] {
				t.Fatalf("offset %d: %d attempts, %d valid entries", off, n, wantAttempts[off])
			}
			total += int(n)
		}
		if total > len(data)/sidecarEntrySize {
			t.Fatalf("%d entries decoded from %d bytes", total, len(data))
		}
		// A torn last entry changes nothing.
		whole := readSidecar(data[:len(data)/sidecarEntrySize*sidecarEntrySize])
		if len(whole.settled) != len(st.settled) || len(whole.attempts) != len(st.attempts) {
			t.Fatalf("a torn tail of %d bytes changed the result", len(data)%sidecarEntrySize)
		}
	})
}
