package proxy

import (
	"crypto/sha1" //nolint:gosec // RFC 6455 defines Sec-WebSocket-Accept with SHA-1.
	"encoding/base64"
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/wsgate/wsgate/routing"
)

// websocketGUID is the key suffix of RFC 6455, section 1.3.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptKey computes Sec-WebSocket-Accept for a Sec-WebSocket-Key.
func acceptKey(key string) string {
	h := sha1.New() //nolint:gosec // see import
	h.Write([]byte(key))
	h.Write([]byte(websocketGUID))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// checkHandshake refuses requests that are not a websocket opening
// handshake (RFC 6455, section 4.2.1). Other upgrades (h2c, ...) are
// refused.
func checkHandshake(r *http.Request) *answer {
	if r.Method != http.MethodGet {
		rf := refuse(http.StatusMethodNotAllowed, "a websocket handshake is a GET request")
		rf.header = http.Header{"Allow": {http.MethodGet}}
		return rf
	}
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 {
		return refuse(http.StatusBadRequest, "a websocket handshake needs HTTP/1.1")
	}
	if !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") || len(r.Header["Upgrade"]) == 0 {
		rf := refuse(http.StatusUpgradeRequired, "this gateway only carries websockets: send Connection: Upgrade and Upgrade: websocket")
		rf.header = http.Header{"Upgrade": {"websocket"}}
		return rf
	}
	if up := r.Header.Values("Upgrade"); len(up) != 1 || !strings.EqualFold(strings.TrimSpace(up[0]), "websocket") {
		return refuse(http.StatusBadRequest, "only the websocket upgrade is supported")
	}
	// Sec-WebSocket-* fields are looked up by their canonical names, as
	// Values would, without canonicalizing each time.
	if v := r.Header["Sec-Websocket-Version"]; len(v) != 1 || strings.TrimSpace(v[0]) != "13" {
		rf := refuse(http.StatusUpgradeRequired, "unsupported websocket version")
		rf.header = http.Header{"Sec-WebSocket-Version": {"13"}}
		return rf
	}
	keys := r.Header["Sec-Websocket-Key"]
	if len(keys) != 1 {
		return refuse(http.StatusBadRequest, "exactly one Sec-WebSocket-Key is required")
	}
	if !validKey(strings.TrimSpace(keys[0])) {
		return refuse(http.StatusBadRequest, "Sec-WebSocket-Key must be 16 bytes in base64")
	}
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		return refuse(http.StatusBadRequest, "a websocket handshake has no body")
	}
	return nil
}

// checkOrigin applies the Origin rule of tgt's route (see originMatches)
// to the Origin header, which protects browsers against cross-site
// websocket hijacking. A request without Origin is not from a browser
// (browsers always send it on websockets) and passes: a non-browser
// client could send any Origin it likes, so refusing it would protect
// nothing.
func checkOrigin(r *http.Request, tbl *routing.Table, tgt target) *answer {
	origins := r.Header.Values("Origin")
	if len(origins) > 1 {
		return refuse(http.StatusForbidden, "more than one Origin header")
	}
	if len(origins) == 0 {
		return nil
	}
	site := originSite{hostport: r.Host, path: tgt.path, overTLS: r.TLS != nil}
	if origin, _ := requestOrigin(r); originMatches(origin, tbl, tgt.route, site) {
		return nil
	}
	if len(tgt.route.AllowedOrigins) == 0 {
		return refuse(http.StatusForbidden, "cross-origin websocket refused: the route allows only its own hostnames as origins")
	}
	return refuse(http.StatusForbidden, "origin not allowed by the route")
}

// hopByHop are the headers that concern one connection only and are never
// forwarded (RFC 9110, section 7.6.1), besides those named in Connection.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopByHop deletes hop-by-hop headers, including every header named
// in Connection.
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

// validKey reports whether key is the base64 of 16 bytes, as
// Sec-WebSocket-Key must be: what base64.StdEncoding.DecodeString
// decodes to 16 bytes, without allocating them.
func validKey(key string) bool {
	var k [18]byte
	if base64.StdEncoding.DecodedLen(len(key)) > len(k) {
		// Longer, and valid only with line breaks in it, which the
		// decoder skips.
		d, err := base64.StdEncoding.DecodeString(key)
		return err == nil && len(d) == 16
	}
	n, err := base64.StdEncoding.Decode(k[:], []byte(key))
	return err == nil && n == 16
}
