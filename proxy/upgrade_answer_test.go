package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// generalUpgrade decides a pod's answer head the general way: what the
// client gets, or ok false when the answer is not a valid upgrade for r.
func generalUpgrade(head []byte, r *http.Request) (client []byte, ok bool) {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), r)
	if err != nil {
		return nil, false
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols || checkUpgradeResponse(resp, r) != nil {
		return nil, false
	}
	return upgradeHeader(resp), true
}

// upgradeRequest is a client's handshake request with key and, when not
// empty, the subprotocols it offers.
func upgradeRequest(key, protocols string) *http.Request {
	h := http.Header{"Sec-Websocket-Key": {key}}
	if protocols != "" {
		h["Sec-Websocket-Protocol"] = []string{protocols}
	}
	return &http.Request{Method: http.MethodGet, Header: h}
}

const sampleKey = "dGhlIHNhbXBsZSBub25jZQ=="

// answer101 is a 101 head with the given field lines.
func answer101(lines ...string) []byte {
	return []byte("HTTP/1.1 101 Switching Protocols\r\n" + strings.Join(lines, "") + "\r\n")
}

var upgradeAnswerSeeds = [][]byte{
	// coder/websocket and gorilla/websocket, through net/http.
	answer101("Connection: Upgrade\r\n", "Sec-Websocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", "Upgrade: websocket\r\n"),
	answer101("Upgrade: websocket\r\n", "Connection: Upgrade\r\n", "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"),
	answer101("upgrade: WebSocket\r\n", "connection: keep-alive, Upgrade, X-Hop\r\n", "x-hop: gone\r\n", "sec-websocket-accept:   s3pPLMBiTxaQ9kYGzzhZRbK+xOo= \t\r\n", "Sec-WebSocket-Protocol: chat\r\n", "X-Pod: a\r\n", "x-pod: b\r\n", "Date: Sun, 06 Dec 2026 20:00:00 GMT\r\n"),
	[]byte("HTTP/1.1 101\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
	// Not plain, or not valid.
	answer101("Upgrade: websocket\r\n", "Connection: close, upgrade\r\n", "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
	answer101("Upgrade: websocket\r\n", "Connection: upgrade\r\n", "Pragma: no-cache\r\n", "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
	answer101("Upgrade: websocket\r\n", "Connection: upgrade\r\n", "Sec-WebSocket-Accept: wrong\r\n"),
	answer101("Upgrade: websocket\r\n", "Upgrade: h2c\r\n", "Connection: upgrade\r\n", "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
	answer101("Upgrade: websocket\r\n", "Connection: upgrade\r\n", "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", "Sec-WebSocket-Protocol: superchat\r\n"),
	answer101("Upgrade: websocket\r\n", "Connection: upgrade\r\n", " folded\r\n", "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
	[]byte("HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: upgrade\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n\n"),
	[]byte("HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
	[]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
}

// TestPlainUpgradeWritesWhatTheGeneralWayWrites: the answers pods send
// are read the plain way, and the client gets the same bytes as from the
// general way; an answer the general way refuses is never plain.
func TestPlainUpgradeWritesWhatTheGeneralWayWrites(t *testing.T) {
	r := upgradeRequest(sampleKey, "chat, other")
	for i, head := range upgradeAnswerSeeds {
		plain, ok := plainUpgrade(head, r)
		general, generalOK := generalUpgrade(head, r)
		if ok && (!generalOK || !bytes.Equal(plain, general)) {
			t.Errorf("answer %d %q: plain way wrote %q, general way %q (valid: %v)", i, head, plain, general, generalOK)
		}
		// The first four are what pods send: they must take the plain way.
		if i < 4 && !ok {
			t.Errorf("answer %d %q did not take the plain way", i, head)
		}
		if i >= 4 && ok {
			t.Errorf("answer %d %q took the plain way", i, head)
		}
	}
	got, _ := plainUpgrade(upgradeAnswerSeeds[2], r)
	want := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Date: Sun, 06 Dec 2026 20:00:00 GMT\r\nSec-Websocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" +
		"Sec-Websocket-Protocol: chat\r\nX-Pod: a\r\nX-Pod: b\r\n\r\n"
	if string(got) != want {
		t.Errorf("the client's 101:\n got %q\nwant %q", got, want)
	}
}

// FuzzPlainUpgrade: whatever a pod answers, the plain way accepts only
// what the general way accepts, and writes the client the same bytes.
func FuzzPlainUpgrade(f *testing.F) {
	for _, head := range upgradeAnswerSeeds {
		f.Add(head, sampleKey, "chat, other")
	}
	f.Fuzz(func(t *testing.T, head []byte, key, protocols string) {
		r := upgradeRequest(key, protocols)
		plain, ok := plainUpgrade(head, r)
		if !ok {
			return
		}
		general, generalOK := generalUpgrade(head, r)
		if !generalOK {
			t.Fatalf("%q: the plain way accepted what the general way refuses", head)
		}
		if !bytes.Equal(plain, general) {
			t.Fatalf("%q: plain way wrote %q, general way %q", head, plain, general)
		}
	})
}
