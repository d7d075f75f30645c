package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/wsgate/wsgate/test/bench/internal/benchdoc"
)

// browserRowInfo is what the browser-like part says of each row.
type browserRowInfo struct {
	key, client string
	tls         bool
}

var browserRows = []browserRowInfo{
	{"rate", "raw, plain", false},
	{"ratebrowser", "browser-like, plain", false},
	{"ratetls", "raw, X25519 only, listeners without tickets", true},
	{"ratetlsbrowser", "browser-like, Go's default groups (X25519MLKEM768 first), full handshake", true},
	{"ratetlsbrowserx25519", "browser-like, X25519 only, full handshake", true},
	{"ratetlsresume", "browser-like, Go's default groups, resumed (session cache per loop)", true},
}

// groupOf is the main group peer negotiated in row key.
func (r *report) groupOf(key, peer string) (tls.CurveID, bool) {
	t := r.handshakes[key][peer]
	if t == nil {
		return 0, false
	}
	return t.mainGroup()
}

// browserPart is the section of the browser-like rows, between
// benchdoc.BrowserBegin and BrowserEnd, or "" when none of them ran.
func (r *report) browserPart() string {
	if !r.ranAny(browserRowKeys...) {
		return ""
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	c := r.cfg
	var peers []*peer
	for _, p := range r.peers {
		if p.skip == "" {
			peers = append(peers, p)
		}
	}
	w("%s\n## New connections as browsers make them\n\n", benchdoc.BrowserBegin)
	w("Written by `go run ./test/bench %s` on %s, in %s, on %s cores shared with the clients and the pods. ",
		strings.Join(os.Args[1:], " "), r.started.UTC().Format("2006-01-02 15:04 MST"), r.elapsed.Round(time.Second), nproc())
	w("Each row ran in %d rounds of %s in all, %d connections at a time, the peers' order reversed every round, each on a fresh proxy; a figure is the median of its rounds. ",
		c.rounds, c.rateDuration, c.rateConcurrency)
	w("Not part of `make bench`'s default rows (they would take it past its -timeout): run them with the command above.\n\n")
	w("Each cell: the value, then its ratio to nginx and to direct in the same run; TLS rows add the key-exchange group the peer negotiated (`tls.ConnectionState.CurveID`, over every connection of the row).\n\n")
	w("| Row | Client | Unit |")
	for _, p := range peers {
		w(" %s |", p.name)
	}
	w("\n| --- | --- | --- |%s\n", strings.Repeat(" ---: |", len(peers)))
	for _, br := range browserRows {
		if _, ok := r.res[br.key]; !ok {
			continue
		}
		w("| New connections (`%s`) | %s | conn/s |", br.key, br.client)
		for _, p := range peers {
			cell := r.cellText(metricDef{key: br.key, higherBetter: true}, p.name)
			if t := r.handshakes[br.key][p.name]; t != nil && br.tls {
				cell += "<br>" + t.groupsText()
			}
			w(" %s |", cell)
		}
		w("\n| CPU per new connection (`%scpu`; direct: the pods) | | µs |", br.key)
		for _, p := range peers {
			w(" %s |", r.cellText(metricDef{key: br.key + "cpu"}, p.name))
		}
		w("\n")
	}
	if _, ok := r.res["ratetlsresume"]; ok {
		w("| Connections that resumed (`ratetlsresume`) | | %% |")
		for _, p := range peers {
			t := r.handshakes["ratetlsresume"][p.name]
			if t == nil {
				w(" ? |")
				continue
			}
			w(" %.1f%% of %s |", t.resumedShare(), benchdoc.Thousands(float64(t.conns)))
		}
		w("\n")
	}
	pairs := []struct{ what, a, b string }{
		{"Browser-like ÷ raw, plain, conn/s", "ratebrowser", "rate"},
		{"Browser-like ÷ raw, plain, CPU per connection", "ratebrowsercpu", "ratecpu"},
		{"Browser-like ÷ raw, TLS, conn/s", "ratetlsbrowser", "ratetls"},
		{"Browser-like ÷ raw, TLS, CPU per connection", "ratetlsbrowsercpu", "ratetlscpu"},
		{"Browser-like X25519 only ÷ raw, TLS, conn/s", "ratetlsbrowserx25519", "ratetls"},
		{"Browser-like X25519 only ÷ raw, TLS, CPU per connection", "ratetlsbrowserx25519cpu", "ratetlscpu"},
		{"Default groups ÷ X25519 only, browser-like, conn/s", "ratetlsbrowser", "ratetlsbrowserx25519"},
		{"Default groups ÷ X25519 only, browser-like, CPU per connection", "ratetlsbrowsercpu", "ratetlsbrowserx25519cpu"},
		{"Resumed ÷ full, browser-like, conn/s", "ratetlsresume", "ratetlsbrowser"},
		{"Resumed ÷ full, browser-like, CPU per connection", "ratetlsresumecpu", "ratetlsbrowsercpu"},
	}
	for _, pr := range pairs {
		_, aok := r.res[pr.a]
		_, bok := r.res[pr.b]
		if !aok || !bok {
			continue
		}
		w("| %s (`%s` ÷ `%s`) | | ratio |", pr.what, pr.a, pr.b)
		for _, p := range peers {
			w(" ×%s |", r.crossRatio(pr.a, p.name, pr.b, p.name))
		}
		w("\n")
	}
	w("\n")
	var failures []string
	for _, br := range browserRows {
		for _, p := range peers {
			if cl, ok := r.res.get(br.key, p.name); ok && cl.err != nil {
				failures = append(failures, fmt.Sprintf("%s, %s: %v", p.name, br.key, cl.err))
			}
		}
	}
	for _, f := range failures {
		w("- Failed: %s\n", mdEscape(f))
	}
	if len(failures) > 0 {
		w("\n")
	}
	r.groupNotes(&b, peers)
	r.browserNoise(&b, peers)

	w("- **Raw client** (`rate`, `ratetls`: the main table's rows, run again here): the benchmark's own websocket client, a fixed handshake written by hand, frames with a zero masking key, X25519 only, and the end of each connection a TCP close without a websocket Close frame (over TLS, after a close_notify alert). The peers' TLS listeners issue no session tickets.\n")
	w("- **Browser-like client** (`ratebrowser`, `ratetlsbrowser`, `ratetlsbrowserx25519`, `ratetlsresume`): `github.com/coder/websocket` over `net/http`, one `http.Transport` per loop that keeps no connection alive (each handshake a new TCP and TLS connection, from the next client address), Go's default TLS key-exchange preferences (`CurvePreferences` nil: %s offers X25519MLKEM768 first, with an X25519 key share beside it, as current Chrome and Firefox do), ALPN `http/1.1`, the headers a page's `new WebSocket(...)` sends (Origin `https://%s`, a browser User-Agent, Cache-Control, Pragma, Accept-Encoding, Accept-Language; permessage-deflate offered and accepted by the pods, the 32-byte echo too small to be compressed), random masking keys; then one 32-byte echo and a close handshake (`Close(StatusNormalClosure, \"\")`: a Close frame, the pod's Close back through the proxy, then the TCP close with a close_notify alert). wsgate's route allows that Origin (`allowedOrigins`); nginx and HAProxy do not look at it.\n", runtime.Version(), benchHost)
	w("- **Session tickets.** In the browser-like TLS rows every peer's TLS listener has session resumption on, as each has it by default (wsgate: TLS 1.3 tickets under keys crypto/tls makes; nginx: the configuration above without its two `ssl_session_*` lines, that is `ssl_session_tickets on` under a key OpenSSL makes when the master reads the configuration, which both workers inherit, and `ssl_session_cache none`; HAProxy: the configuration above without `tune.ssl.cachesize 0` and `no-tls-tickets`; direct: a second TLS listener of the pods' process with tickets on). So a full handshake there also writes the tickets a browser's first connection gets (one from Go, two from OpenSSL), and the resumed row compares with it on equal servers.\n")
	if slices.ContainsFunc(peers, func(p *peer) bool { return p.name == nginxPQ }) {
		w("- **nginx-pq**: the same nginx binary and configuration as nginx, run on newer OpenSSL libraries (`LD_LIBRARY_PATH`; OpenSSL keeps one ABI across 3.x) that `hack/openssl.sh` builds from the source of Debian 13's package: %s. Its default groups put X25519MLKEM768 first, as Go's do, so in `ratetlsbrowser` and `ratetlsresume` it does the key exchange wsgate does, where Debian 12's nginx cannot.\n", libsOf(peers, nginxPQ))
	}
	w("- **X25519 only** (`ratetlsbrowserx25519`): the browser-like client with `CurvePreferences: []tls.CurveID{tls.X25519}`, so that every peer negotiates the same group.\n")
	w("- **Resumed** (`ratetlsresume`): the browser-like TLS client with one `tls.NewLRUClientSessionCache` per loop, so each loop's first connection in a round is a full handshake and every later one resumes the session with the last ticket the peer sent (TLS 1.3 PSK with a new key exchange, `psk_dhe_ke`: the certificate and its signature are skipped, the key exchange is not). The resumed share is `ConnectionState.DidResume` over the row's connections.\n")
	w("- **CPU per connection**: user + system time of the peer's processes (nginx: master and workers; direct: the pods' process) over the row, divided by its connections.\n\n")
	w("%s", benchdoc.BrowserEnd)
	return b.String()
}

// groupNotes says plainly where wsgate and another peer negotiated
// different groups, with the ratio that difference is in, and the ratio
// of the same row with one group for all.
func (r *report) groupNotes(b *strings.Builder, peers []*peer) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	libs := map[string]string{}
	for _, p := range peers {
		libs[p.name] = p.tlsLib
	}
	for _, key := range []string{"ratetlsbrowser", "ratetlsresume"} {
		gw, ok := r.groupOf(key, "wsgate")
		if !ok {
			continue
		}
		for _, p := range peers {
			if p.name == "wsgate" {
				continue
			}
			g, ok := r.groupOf(key, p.name)
			if !ok {
				continue
			}
			if g == gw {
				if p.name == nginxPQ {
					w("- **Same key exchange in `%s`: wsgate and %s both negotiated %s** (%s on %s): wsgate ÷ %s ×%s conn/s, ×%s CPU per connection.\n",
						key, p.name, g, p.name, libs[p.name], p.name, r.ratio(key, "wsgate", p.name), r.ratio(key+"cpu", "wsgate", p.name))
				}
				continue
			}
			w("- **Unequal key exchange in `%s`: wsgate negotiated %s, %s negotiated %s.** %s runs on %s, ", key, gw, p.name, g, p.name, libs[p.name])
			if g == tls.X25519 && slices.Contains([]tls.CurveID{tls.X25519MLKEM768, tls.SecP256r1MLKEM768, tls.SecP384r1MLKEM1024}, gw) {
				w("which has no post-quantum hybrid group: it takes the client's X25519 key share, while wsgate (%s) takes the hybrid, an ML-KEM-768 encapsulation beside X25519 (1,088 more bytes in its key share). ", libs["wsgate"])
			} else {
				w("which prefers another group. ")
			}
			w("wsgate ÷ %s in this row: ×%s conn/s, ×%s CPU per connection; ", p.name, r.ratio(key, "wsgate", p.name), r.ratio(key+"cpu", "wsgate", p.name))
			_, x := r.res["ratetlsbrowserx25519"]
			switch {
			case x:
				w("with X25519 on both sides, full handshakes (`ratetlsbrowserx25519`): ×%s conn/s, ×%s CPU per connection.\n", r.ratio("ratetlsbrowserx25519", "wsgate", p.name), r.ratio("ratetlsbrowserx25519cpu", "wsgate", p.name))
			default:
				w("the X25519-only row (`ratetlsbrowserx25519`) did not run.\n")
			}
		}
	}
}

// libsOf is the TLS library of the peer named name among peers.
func libsOf(peers []*peer, name string) string {
	for _, p := range peers {
		if p.name == name {
			return p.tlsLib
		}
	}
	return "unknown"
}

// browserNoise lists the CPU that other processes used during each of
// the part's rows, per peer.
func (r *report) browserNoise(b *strings.Builder, peers []*peer) {
	names := map[string]string{}
	for _, rw := range rows(r.cfg) {
		names[rw.name] = rw.key
	}
	cells := map[string]map[string]string{}
	for _, n := range r.noise {
		k, ok := names[n.row]
		if !ok || !slices.ContainsFunc(browserRows, func(br browserRowInfo) bool { return br.key == k }) || n.other < 0 {
			continue
		}
		if cells[k] == nil {
			cells[k] = map[string]string{}
		}
		cells[k][n.peer] = fmt.Sprintf("%.0f%%", 100*n.other)
	}
	if len(cells) == 0 {
		return
	}
	var lines []string
	for _, br := range browserRows {
		if cells[br.key] == nil {
			continue
		}
		var ps []string
		for _, p := range peers {
			if t, ok := cells[br.key][p.name]; ok {
				ps = append(ps, p.name+" "+t)
			}
		}
		lines = append(lines, fmt.Sprintf("`%s` %s", br.key, strings.Join(ps, ", ")))
	}
	fmt.Fprintf(b, "- **Other work on the machine** (CPU of processes other than the benchmark's while each row ran, in %% of one core, from `/proc/stat`): %s. Where these differ much between peers, the row compares unequal conditions.\n", strings.Join(lines, "; "))
}
