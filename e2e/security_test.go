package e2e

import (
	"bytes"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/otlpretry/otlpretry/internal/otlptest"
)

// TestSecuritySpool: the library under a refused outage, its exporter
// sending an Authorization header (otlptracehttp.WithHeaders). While the
// backlog is on disk and after delivery: every spool file is 0600, every
// folder 0700, and the header's value is in no byte under the spool
// folder. The counts are checked as in every scenario.
func TestSecuritySpool(t *testing.T) {
	t.Parallel()
	r := scenario(t, "security/spool")
	const secret = "e2e-auth-s3cret-7f3a9c"
	dir := filepath.Join(t.TempDir(), "spool")
	p := newLibraryPipe(t, "security", dir, "Authorization", "Bearer "+secret)
	checked := 0
	p.run(t, r, steady+fault+recover,
		[]step{{steady, otlptest.Refuse}, {steady + fault, otlptest.Pass}},
		func() { checked = checkSpool(t, dir, secret) })
	if checked == 0 {
		t.Errorf("no file under the spool folder during the outage: nothing to check")
	}
	checkSpool(t, dir, secret)
	// The header was in use: every export reached the Collector with it,
	// those delivered from the spool too.
	if auth := p.sink.authCounts(); len(auth) != 1 || auth["Bearer "+secret] == 0 {
		t.Errorf("exports by Authorization header at the Collector: %v, want all with the exporter's", auth)
	}
	if err := p.tp.Shutdown(t.Context()); err != nil {
		t.Errorf("TracerProvider.Shutdown: %v", err)
	}
	if err := p.rt.Shutdown(t.Context()); err != nil {
		t.Errorf("Transport.Shutdown: %v", err)
	}
	checkSpool(t, dir, secret)
}

// checkSpool walks dir: folders must be 0700, files 0600, and no file may
// contain any of secrets. It returns how many files it read.
func checkSpool(t *testing.T, dir string, secrets ...string) int {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // deleted while walking: delivered
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		perm := info.Mode().Perm()
		switch {
		case d.IsDir():
			if perm != 0o700 {
				t.Errorf("folder %s has mode %v, want 0700", path, perm)
			}
		case info.Mode().IsRegular():
			if perm != 0o600 {
				t.Errorf("file %s has mode %v, want 0600", path, perm)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			files++
			for _, s := range secrets {
				if bytes.Contains(b, []byte(s)) {
					t.Errorf("file %s contains the secret %q", path, s)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("walking %s: %v", dir, err)
	}
	return files
}

// TestSecurityRelayLoopback: the relay started with neither --listen nor
// OTLPRETRY_RELAY_LISTEN listens on 127.0.0.1 (port 4318), this machine
// only.
func TestSecurityRelayLoopback(t *testing.T) {
	t.Parallel()
	scenario(t, "security/relay-loopback")
	// Nothing answers upstream; nothing is sent either.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upstream := "http://" + ln.Addr().String()
	ln.Close()
	if probe, err := net.Listen("tcp4", "127.0.0.1:4318"); err != nil {
		t.Skipf("port 4318 is in use here, so the relay's default address cannot be tried: %v", err)
	} else {
		probe.Close()
	}
	relay := startRelay(t, relayEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT="+upstream),
		"--dir", filepath.Join(t.TempDir(), "spool"))
	host, port, err := net.SplitHostPort(relay.Addr)
	if err != nil {
		t.Fatalf("relay address %q: %v", relay.Addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() || port != "4318" {
		t.Errorf("relay listens on %s by default, want 127.0.0.1:4318", relay.Addr)
	}
	if st := relay.status(t); st.Backlog.Records != 0 {
		t.Errorf("status: %+v, want an empty backlog", st)
	}
	if code := relay.signal(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Errorf("relay exit code %d after SIGTERM, want 0", code)
	}
}
