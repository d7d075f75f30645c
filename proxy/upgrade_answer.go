package proxy

import (
	"bytes"
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// The pod's 101, read without net/http. Nearly every pod answers a
// websocket handshake with the same few plain fields; reading such an
// answer into an http.Response (a bufio reader, a textproto reader, a
// header map and a string for every name and value) cost more per new
// connection than the rest of the pod's side of the handshake. An answer
// that is not plain in the sense below goes the general way, which
// decides it as before.

// maxPlainFields bounds the fields of an answer read the plain way.
const maxPlainFields = 24

// plainField is a field of a plain answer: its name as net/http's
// canonical key, its value trimmed as net/http trims it.
type plainField struct {
	name  string
	value []byte
}

// plainUpgrade returns the 101 head for the client when head (the pod's
// answer head, its blank line included) is a plain, valid websocket
// upgrade for r: exactly what upgradeHeader writes for the answer that
// http.ReadResponse reads from head, after checkUpgradeResponse accepts
// it. ok is false, and the answer goes the general way, for anything
// else: other status lines, lines not ended by CRLF, a line starting with
// a space or tab (obsolete folding), a name with other characters than
// letters, digits and "-", a value with other bytes than visible ASCII,
// space and tab, the fields http.ReadResponse changes or acts on
// (Pragma, Content-Length, Transfer-Encoding, Trailer, Connection: close),
// more than maxPlainFields fields, or an upgrade that is not valid.
func plainUpgrade(head []byte, r *http.Request) (client []byte, ok bool) {
	const status = "HTTP/1.1 101"
	line, rest, ok := cutLine(head)
	if !ok || !bytes.HasPrefix(line, []byte(status)) {
		return nil, false
	}
	if reason := line[len(status):]; len(reason) > 0 && (reason[0] != ' ' || !plainValue(reason)) {
		return nil, false
	}
	var fieldsBuf [maxPlainFields]plainField
	fields := fieldsBuf[:0]
	size := 0
	for {
		if line, rest, ok = cutLine(rest); !ok {
			return nil, false
		}
		if len(line) == 0 {
			break
		}
		if len(fields) == maxPlainFields {
			return nil, false
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !plainName(line[:colon]) || !plainValue(line[colon+1:]) {
			return nil, false
		}
		name := canonicalName(line[:colon])
		switch name {
		case "Pragma", "Content-Length", "Transfer-Encoding", "Trailer":
			return nil, false
		}
		f := plainField{name: name, value: trimSpaceTab(line[colon+1:])}
		fields = append(fields, f)
		size += len(f.name) + len(f.value) + 4
	}
	if len(rest) != 0 || !plainAccepts(fields, r) {
		return nil, false
	}
	// Connection names more fields that stay with the hop.
	var namedBuf [8]string
	named := namedBuf[:0]
	for _, f := range fields {
		if f.name == "Connection" {
			named = connectionNames(named, []string{string(f.value)})
		}
	}
	// http.Header.Write's order: by name, the values of a name as they
	// came.
	slices.SortStableFunc(fields, func(a, b plainField) int { return strings.Compare(a.name, b.name) })
	const upgraded = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	client = make([]byte, 0, len(upgraded)+size+2)
	client = append(client, upgraded...)
	for _, f := range fields {
		if slices.Contains(hopByHop, f.name) || slices.Contains(named, f.name) {
			continue
		}
		client = append(client, f.name...)
		client = append(client, ": "...)
		client = append(client, f.value...)
		client = append(client, "\r\n"...)
	}
	return append(client, "\r\n"...), true
}

// plainAccepts is checkUpgradeResponse for a plain answer's fields; it
// also refuses Connection: close, which http.ReadResponse would take out
// of the answer.
func plainAccepts(fields []plainField, r *http.Request) bool {
	var upgrades, protocols int
	var accept, protocol []byte
	connUpgrade := false
	for _, f := range fields {
		switch f.name {
		case "Connection":
			if valueHasToken(f.value, "close") {
				return false
			}
			connUpgrade = connUpgrade || valueHasToken(f.value, "upgrade")
		case "Upgrade":
			upgrades++
			if !bytes.EqualFold(f.value, []byte("websocket")) {
				return false
			}
		case "Sec-Websocket-Accept":
			if accept == nil {
				accept = f.value
			}
		case "Sec-Websocket-Protocol":
			protocols++
			protocol = f.value
		}
	}
	if !connUpgrade || upgrades != 1 || protocols > 1 {
		return false
	}
	if string(accept) != acceptKey(strings.TrimSpace(firstValue(r.Header["Sec-Websocket-Key"]))) {
		return false
	}
	return protocols == 0 || httpguts.HeaderValuesContainsToken(r.Header["Sec-Websocket-Protocol"], string(protocol))
}

// cutLine cuts b at its first CRLF; ok is false without one, or with a
// bare CR or LF before it.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' || bytes.IndexByte(b[:i-1], '\r') >= 0 {
		return nil, nil, false
	}
	return b[:i-1], b[i+1:], true
}

// plainValue reports whether v is visible ASCII, spaces and tabs only.
func plainValue(v []byte) bool {
	for _, c := range v {
		if (c < ' ' || c > '~') && c != '\t' {
			return false
		}
	}
	return true
}

// canonicalName is textproto.CanonicalMIMEHeaderKey for a plain name,
// without allocating for the names pods send as they are.
func canonicalName(name []byte) string {
	upper := true
	canonical := true
	for _, c := range name {
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			canonical = false
			break
		}
		upper = c == '-'
	}
	if canonical {
		if s, ok := commonNames[string(name)]; ok {
			return s
		}
		return string(name)
	}
	return textproto.CanonicalMIMEHeaderKey(string(name))
}

// commonNames are the names of a usual 101, as strings made once.
var commonNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{"Upgrade", "Connection", "Sec-Websocket-Accept", "Sec-Websocket-Protocol", "Sec-Websocket-Extensions", "Date", "Server"} {
		m[n] = n
	}
	return m
}()

// trimSpaceTab trims spaces and tabs at both ends, as textproto does.
func trimSpaceTab(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// valueHasToken is httpguts.HeaderValuesContainsToken for one value.
func valueHasToken(v []byte, token string) bool {
	for len(v) > 0 {
		var item []byte
		item, v, _ = bytes.Cut(v, []byte(","))
		if bytes.EqualFold(trimSpaceTab(item), []byte(token)) {
			return true
		}
	}
	return false
}
