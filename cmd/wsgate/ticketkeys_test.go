package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/wsgate/wsgate/internal/testcerts"
)

func newTicketKey(t *testing.T) string {
	t.Helper()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b[:])
}

// replica serves TLS 1.3 with cfg on a loopback listener, for handshakes
// only.
func replica(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if tc := c.(*tls.Conn); tc.Handshake() == nil {
					// The client reads its session ticket after the
					// handshake: give it a byte to read.
					_, _ = tc.Write([]byte{1})
				}
			}()
		}
	}()
	return l.Addr().String()
}

// resumes connects to addr with the client's session cache and reports
// whether the handshake resumed a session.
func resumes(t *testing.T, addr string, client *tls.Config) bool {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return c.ConnectionState().DidResume
}

// Replicas that read one ticket key file resume each other's sessions;
// rotating the file keeps the previous key's tickets for as long as it is
// listed.
func TestSessionTicketKeysAreSharedAndRotate(t *testing.T) {
	ca := testcerts.NewCA(t, "ticket-test")
	cert := ca.Issue(t, time.Hour, "ws.test").TLS(t)
	server := func() *tls.Config {
		return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	}
	file := filepath.Join(t.TempDir(), "keys")
	write := func(keys ...string) {
		t.Helper()
		if err := os.WriteFile(file, []byte("# rotated\n"+strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	k1, k2 := newTicketKey(t), newTicketKey(t)
	write(k1)
	a, b := server(), server()
	ka := &ticketKeys{path: file, cfg: a, log: logr.Discard()}
	kb := &ticketKeys{path: file, cfg: b, log: logr.Discard()}
	for _, k := range []*ticketKeys{ka, kb} {
		if err := k.load(); err != nil {
			t.Fatal(err)
		}
	}
	addrA, addrB := replica(t, a), replica(t, b)
	client := func() *tls.Config {
		return &tls.Config{ServerName: "ws.test", RootCAs: ca.Pool(), ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	}

	c := client()
	if resumes(t, addrA, c) {
		t.Fatal("the first handshake resumed")
	}
	if !resumes(t, addrB, c) {
		t.Error("a ticket of replica A did not resume with replica B")
	}

	// Without the file, each replica has keys of its own.
	alone := replica(t, server())
	c = client()
	resumes(t, addrA, c)
	if resumes(t, alone, c) {
		t.Error("a replica without the shared keys resumed another's ticket")
	}

	// Rotation: k2 seals new tickets, k1's are still accepted...
	c = client()
	resumes(t, addrA, c) // a ticket under k1
	write(k2, k1)
	for _, k := range []*ticketKeys{ka, kb} {
		if err := k.load(); err != nil {
			t.Fatal(err)
		}
	}
	if !resumes(t, addrB, c) {
		t.Error("a ticket of the previous key did not resume while that key is listed")
	}
	// ...until k1 leaves the file.
	c2 := client()
	resumes(t, addrA, c2) // now under k2
	old := client()
	write(k1)
	_ = ka.load()
	resumes(t, addrA, old) // a ticket under k1
	write(k2)
	if err := ka.load(); err != nil {
		t.Fatal(err)
	}
	if resumes(t, addrA, old) {
		t.Error("a ticket of a key no longer listed resumed")
	}
	if !resumes(t, addrA, c2) {
		t.Error("a ticket of the current key did not resume")
	}
}

func TestTicketKeyFilesThatCannotBeUsed(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty":      "# nothing\n\n",
		"short key":  base64.StdEncoding.EncodeToString([]byte("sixteen bytes!!!")) + "\n",
		"not base64": "not base64 at all\n",
		"too many":   strings.Repeat(newTicketKey(t)+"\n", maxTicketKeys+1),
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readTicketKeys(p); err == nil {
			t.Errorf("%s: read without error", name)
		}
	}
	// A file that breaks keeps the keys it held last.
	p := filepath.Join(dir, "keys")
	if err := os.WriteFile(p, []byte(newTicketKey(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k := &ticketKeys{path: p, cfg: &tls.Config{}, log: logr.Discard()}
	if err := k.load(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("broken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k.load(); err == nil || len(k.last) != 1 {
		t.Errorf("a broken file: err %v, %d keys kept; want an error and the last key", err, len(k.last))
	}
}
