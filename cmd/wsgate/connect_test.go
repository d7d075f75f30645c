package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/internal/echopod"
)

func TestConnectSendsLinesAndPrintsReplies(t *testing.T) {
	pod, err := echopod.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	var out, errOut bytes.Buffer
	err = connect([]string{"--linger", "200ms", "--subprotocol", "chat", "ws://" + pod.Addr + "/x"}, strings.NewReader("hello\nworld\n"), &out, &errOut)
	if err != nil {
		t.Fatalf("connect: %v (stderr %q)", err, errOut.String())
	}
	if got, want := out.String(), "< hello\n< world\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if !strings.Contains(errOut.String(), "subprotocol chat") {
		t.Errorf("stderr %q does not report the subprotocol", errOut.String())
	}
}

func TestConnectReportsTheGatewaysRefusal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no allowlisted pod at this address", http.StatusNotFound)
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	err := connect([]string{"ws" + strings.TrimPrefix(srv.URL, "http") + "/10.0.0.1/"}, strings.NewReader(""), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "no allowlisted pod") {
		t.Errorf("err = %v, want the 404 and its message", err)
	}
	for _, bad := range [][]string{{}, {"http://x/"}, {"--ca", "/nonexistent", "wss://x/"}} {
		if err := connect(bad, strings.NewReader(""), &out, &errOut); err == nil {
			t.Errorf("connect %v succeeded", bad)
		}
	}
}
