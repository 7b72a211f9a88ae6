package spool

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestInspectionReadsNameAndMetaOnly(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, WithHeaderAllowList("X-Tenant"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := &Record{URL: "https://127.0.0.1:4318/v1/logs", ContentType: "application/x-protobuf", ContentEncoding: "gzip",
		Signal: SignalLogs, Header: map[string][]string{"X-Tenant": {"a"}}, Body: make([]byte, 1000)}
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, pendingDir, "*"+recordExt))
	if len(names) != 1 {
		t.Fatalf("records %v", names)
	}
	n, ok := ParseRecordName(filepath.Base(names[0]))
	fi, _ := os.Stat(names[0])
	if !ok || n.ID != r.ID || n.Size != fi.Size() || n.Attempts != 0 {
		t.Fatalf("name %+v ok %v, want ID %s size %d", n, ok, r.ID, fi.Size())
	}
	got, bodySize, err := ReadRecordMeta(names[0])
	if err != nil {
		t.Fatal(err)
	}
	if got.URL != r.URL || got.ContentEncoding != "gzip" || got.Signal != SignalLogs || got.Header.Get("X-Tenant") != "a" ||
		bodySize != 1000 || got.Body != nil || !got.Created.Equal(r.Created) {
		t.Fatalf("meta %+v body %d", got, bodySize)
	}
	// A torn meta is refused as corruption; a torn body is not read at all.
	data, _ := os.ReadFile(names[0])
	torn := filepath.Join(t.TempDir(), "torn.rec")
	os.WriteFile(torn, data[:headerSize+5], 0o600)
	var ce *CorruptionError
	if _, _, err := ReadRecordMeta(torn); !errors.As(err, &ce) {
		t.Fatalf("torn meta: %v", err)
	}
	os.WriteFile(torn, data[:len(data)-100], 0o600)
	if _, bs, err := ReadRecordMeta(torn); err != nil || bs != 1000 {
		t.Fatalf("torn body: %v %d", err, bs)
	}
	if _, ok := ParseRecordName("notes.txt"); ok {
		t.Fatal("parsed a foreign name")
	}
}
