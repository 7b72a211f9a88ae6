package spool

import (
	"bytes"
	"testing"
)

func TestPutClaimedIsNotClaimableAndSettles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	held := &Record{URL: "http://127.0.0.1:1/v1/traces", Signal: SignalTraces, Body: []byte("held")}
	if err := s.PutClaimed(held); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Claim(10); err != nil || len(got) != 0 {
		t.Fatalf("Claim handed out a record the caller holds: %d records, %v", len(got), err)
	}
	if st := s.Stats(); st.Records != 1 || st.Claimed != 1 {
		t.Fatalf("stats %+v", st)
	}
	if err := s.Release(held.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.Claim(10)
	if err != nil || len(got) != 1 || !bytes.Equal(got[0].Body, []byte("held")) || got[0].Attempts != 1 {
		t.Fatalf("after release: %v %+v", err, got)
	}
	if err := s.Ack(got[0].ID); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Records != 0 || st.Bytes != 0 {
		t.Fatalf("stats after ack %+v", st)
	}
}

// A process that dies while holding a PutClaimed record leaves it to the
// next one.
func TestPutClaimedAdoptedAfterOwnerDies(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutClaimed(&Record{URL: "http://127.0.0.1:1/v1/logs", Signal: SignalLogs, Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	// Simulate death: drop the lock without Close, which would have put the
	// record back itself.
	if err := s.unlock(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.Claim(10)
	if err != nil || len(got) != 1 || string(got[0].Body) != "x" {
		t.Fatalf("adopted: %v %+v", err, got)
	}
}
