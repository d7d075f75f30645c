package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/test/bench/internal/benchdoc"
)

// reading lists, per row, wsgate against nginx in words.
func (r *report) reading(b *strings.Builder) {
	fmt.Fprintf(b, "### wsgate against nginx, row by row\n\n")
	fmt.Fprintf(b, "A reading aid, not a pass mark: \"level\" means within 10%% of each other in this run, about the noise of this machine.\n\n")
	n := 0
	for _, m := range r.metricDefs() {
		g, gok := r.res.get(m.key, "wsgate")
		x, xok := r.res.get(m.key, "nginx")
		if !gok || !xok || g.err != nil || x.err != nil || x.v <= 0 || g.v <= 0 {
			continue
		}
		ratio := g.v / x.v
		verdict := "level"
		switch {
		case ratio > 1.1 && m.higherBetter, ratio < 1/1.1 && !m.higherBetter:
			verdict = "wsgate ahead"
		case ratio > 1.1, ratio < 1/1.1:
			verdict = "wsgate behind"
		}
		fmt.Fprintf(b, "- %s: wsgate %s, nginx %s %s (×%.2f): **%s**\n", m.label, formatValue(g.v, m.prec), formatValue(x.v, m.prec), m.unit, ratio, verdict)
		n++
	}
	if n == 0 {
		fmt.Fprintf(b, "nginx did not run: nothing to compare.\n")
	}
	fmt.Fprintf(b, "\n")
}

// val is a metric's value for a peer, formatted, or "?".
func (r *report) val(metric, peer string, prec int) string {
	c, ok := r.res.get(metric, peer)
	if !ok || c.err != nil {
		return "?"
	}
	return formatValue(c.v, prec)
}

// ratio is a metric's value for peer a over peer b, formatted, or "?".
func (r *report) ratio(metric, a, b string) string {
	x, xok := r.res.get(metric, a)
	y, yok := r.res.get(metric, b)
	if !xok || !yok || x.err != nil || y.err != nil || y.v <= 0 || x.v < 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f", x.v/y.v)
}

// profileOf is the wsgate profile of a row, if one was taken.
func (r *report) profileOf(row string) *profileSummary {
	for i := range r.profiles {
		if r.profiles[i].row == row {
			return &r.profiles[i]
		}
	}
	return nil
}

// kind is the flat share of a kind of work in the row's profile, or "?".
func (r *report) kind(row, kind string) string {
	if p := r.profileOf(row); p != nil {
		for _, s := range p.shares {
			if s.what == kind {
				return fmt.Sprintf("%.0f%%", s.pct)
			}
		}
	}
	return "?"
}

// stage is the cumulative share under a stage in the row's profile, or
// "?".
func (r *report) stage(row, what string) string {
	if p := r.profileOf(row); p != nil {
		for _, s := range p.stages {
			if strings.TrimSpace(s.what) == what {
				return fmt.Sprintf("%.0f%%", s.pct)
			}
		}
	}
	return "?"
}

// limits explains what bounds each figure, with this run's numbers.
func (r *report) limits(b *strings.Builder) {
	c := r.cfg
	w := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	rate := benchdoc.Thousands(float64(time.Second/c.latencyInterval) * float64(c.latencyConns))
	w("## What limits each figure\n\n")
	w("Question marks stand for figures this run did not produce.\n\n")

	w("**Round trips.** At %s messages a second the proxies need little CPU (wsgate used %s%% of a core, nginx %s%%, HAProxy %s%%). ",
		rate, r.val("latcpu", "wsgate", 0), r.val("latcpu", "nginx", 0), r.val("latcpu", "haproxy", 0))
	w("The added round trip is two more loopback hops and one wake-up of the proxy in each direction; the p99 is set by scheduling, with the clients, the pods, the proxy and the rest of the machine on %s cores, and is the noisiest figure of the table. ", nproc())
	w("Per message, wsgate spends ×%s nginx's CPU. Like nginx, it carries plain TCP tunnels on event loops (one per core, each an epoll instance): one `read` and one `write` per message, %s of its time under the loops, %s of it collecting events; the Go scheduler (waking a loop's goroutine from Go's poller) takes %s. ",
		r.ratio("latcpu", "wsgate", "nginx"), r.stage("round trips", "carrying tunnels (event loops)"), r.stage("round trips", "of which collecting events (epoll_wait)"), r.stage("round trips", "goroutine scheduling"))
	w("A loop's system calls are raw: none of them can block, and made through the runtime's system-call path they let its monitor hand the loop's processor to another thread whenever one outlasted its 20 µs tick, at the cost of thread switches.\n\n")

	w("**Bulk throughput.** The load generator and the pods, on the same cores, bound the throughput more than the proxies do (direct, with one hop less, moves ×%s wsgate's bytes); CPU per GB is the figure that tells the proxies apart. ",
		r.ratio("bulk", "direct", "wsgate"))
	w("wsgate reads up to 64 KiB at a time into its loop's buffer and spends %s of its time in system calls (the kernel copying the bytes); ",
		r.kind("bulk throughput", kindSyscall))
	w("nginx relays an upgraded connection through `proxy_buffer_size` buffers (one 4 KiB page by default), so it makes more system calls per byte (×%s wsgate's CPU per GB); HAProxy's buffers are 16 KiB (`tune.bufsize`; ×%s wsgate's CPU per GB). ",
		r.ratio("bulkcpu", "nginx", "wsgate"), r.ratio("bulkcpu", "haproxy", "wsgate"))
	w("Direct's CPU per GB is the echo pods' own (coder/websocket reads, unmasks and copies whole messages), which is why it is above the proxies', which only pass bytes on (wsgate tracks frame boundaries on the way).\n\n")

	w("**New connections, plain.** Every process is busy: each connection costs the client, the pod and the proxy a TCP handshake, an HTTP upgrade and a teardown. ")
	w("wsgate spends ×%s nginx's CPU per connection (%s µs against %s µs) and so opens ×%s nginx's connections a second. ",
		r.ratio("ratecpu", "wsgate", "nginx"), r.val("ratecpu", "wsgate", 0), r.val("ratecpu", "nginx", 0), r.ratio("rate", "wsgate", "nginx"))
	w("Its profile: %s of its time in system calls (`accept`, `socket`, `connect`, `read`, `write`, `shutdown`, `close`, `epoll`), %s under the Go scheduler, %s in allocation and %s in garbage collection. ",
		r.kind("new connections, plain", kindSyscall), r.stage("new connections, plain", "goroutine scheduling"),
		r.stage("new connections, plain", "allocation"), r.stage("new connections, plain", "garbage collection"))
	w("Per connection, the loop that accepts it (%s; the listening socket hands a connection over with its first bytes, `TCP_DEFER_ACCEPT`) reads the request head at once and parses it with net/http's parser and server rules (%s), connects to the pod without blocking and sends the request right away (%s: `socket`, `connect`, `sendto`, `epoll_ctl`), and reads the 101 (%s), then answers the client and carries the echo and the teardown on the same loop, with no goroutine and no descriptor in Go's poller at any point; %s of its time is under the loops' handshake code in all. ",
		r.stage("new connections, plain", "accepting connections"), r.stage("new connections, plain", "parsing the client's request head"),
		r.stage("new connections, plain", "dialling the pod"),
		r.stage("new connections, plain", "reading the pod's 101"), r.stage("new connections, plain", "of which handshakes"))
	w("Its system calls are nginx's (accept, socket, connect, one read and one write per message and head, two closes) but for the TCP half-close, which wsgate relays and nginx does not: this row's client ends its connection without a websocket close handshake, so its FIN goes on to the pod with `shutdown` and the tunnel ends at the pod's FIN (one more `read` and one more wake-up), where nginx closes both sides at the first end of stream. (After a closing handshake, as the browser-like rows end, wsgate too ends the tunnel at the first end of stream.) What is left is Go's own work per connection: net/http's parser and the `http.Request` and header map it builds for the client's request (a pod's plain 101 is read without them), the handshake's deadline, the allocations and the garbage collection they cost.\n\n")

	w("**New connections, TLS.** The handshake's cryptography dominates: an X25519 key exchange and an ECDSA P-256 signature on the proxy per connection, and the same exchange and a signature check on the client, on the same cores. ")
	w("wsgate's profile: %s of its time in cryptography (Go's crypto/tls), %s in system calls. It spends ×%s nginx's CPU per connection here (×%s in the plain row); nginx and HAProxy use Debian's OpenSSL. wsgate's loops accept the connection; crypto/tls makes the handshake on a goroutine that the loop wakes when the client's bytes come, and the loop then reads the head through the TLS connection, connects to the pod and carries the tunnel, as for a plain connection.\n\n",
		r.kind("new connections, TLS", kindCrypto), r.kind("new connections, TLS", kindSyscall),
		r.ratio("ratetlscpu", "wsgate", "nginx"), r.ratio("ratecpu", "wsgate", "nginx"))

	w("**Idle tunnels.** wsgate holds, per plain TCP tunnel, its state (frame trackers, counters, the registry's entry) and two sockets in an event loop's epoll set: no goroutine, no stack and no buffer (%s KiB per tunnel; ×%s nginx's). A loop reads into its own buffer and copies aside only what a peer cannot take yet. ",
		r.val("idle", "wsgate", 1), r.ratio("idle", "wsgate", "nginx"))
	if h := r.heapOf("idle tunnels"); h != nil {
		n := float64(c.idleTunnels)
		w("Of the Go runtime's memory, goroutine stacks are %.1f KiB per tunnel and heap objects %.1f KiB (below). ",
			kib(h.figures["/memory/classes/heap/stacks:bytes"])/n, kib(h.figures["/memory/classes/heap/objects:bytes"])/n)
		for _, line := range h.top {
			// A tenth of the heap or more (one sample is 512 KiB: less
			// can be a single handshake in progress).
			f := strings.Fields(line)
			if len(f) < 6 {
				continue
			}
			cum, err := strconv.ParseFloat(strings.TrimSuffix(f[4], "%"), 64)
			if err != nil || cum < 10 {
				continue
			}
			if strings.Contains(line, "net/http.readRequest") || strings.Contains(line, "readMIMEHeader") {
				w("The heap profile shows the client's parsed handshake request (`net/http.readRequest`, `net/textproto.readMIMEHeader`) still held by open tunnels, past the handshake. ")
				break
			}
		}
	}
	w("nginx keeps each request's memory pool and the buffer that read the pod's answer (`proxy_buffer_size`); its connection tables, allocated for `worker_connections` in each worker, are in its RSS before the first tunnel, which the RSS row shows. ")
	w("HAProxy keeps its stream and connection structures and returns empty buffers to its pool. Socket buffers are kernel memory, in no process's RSS.\n\n")

	w("**Idle tunnels, TLS.** A TLS tunnel costs wsgate %s KiB (×%s nginx's, ×%s HAProxy's; ×%s its plain tunnel). ",
		r.val("idletls", "wsgate", 1), r.ratio("idletls", "wsgate", "nginx"), r.ratio("idletls", "wsgate", "haproxy"), r.within("idletls", "idle", "wsgate"))
	if h := r.heapOf("idle tunnels, TLS"); h != nil {
		n := float64(c.idleTunnels)
		g := float64(h.figures["/sched/goroutines:goroutines"]) / n
		switch {
		case g >= 1.5:
			w("It runs each one on two goroutines, one per direction, each blocked in a read (%.1f goroutines per tunnel in all), whose stacks take %.1f KiB per tunnel. ",
				g, kib(h.figures["/memory/classes/heap/stacks:bytes"])/n)
		default:
			w("It runs no goroutine per tunnel while idle (%.1f goroutines per tunnel in all; stacks %.1f KiB per tunnel). ",
				g, kib(h.figures["/memory/classes/heap/stacks:bytes"])/n)
		}
		w("Heap objects take %.1f KiB per tunnel, of which about %.1f KiB allocated by crypto/tls (each connection's state, its keys and its input buffer; the heap profile below); all the Go runtime's memory is %.1f KiB per tunnel. ",
			kib(h.figures["/memory/classes/heap/objects:bytes"])/n, kib(h.tls)/n, kib(h.figures["/memory/classes/total:bytes"])/n)
	}
	w("nginx terminates TLS with OpenSSL and sets `SSL_MODE_RELEASE_BUFFERS`, which frees a connection's record buffers while it waits: its TLS tunnel costs %s KiB more than its plain one. ",
		r.diff("idletls", "idle", "nginx"))
	w("HAProxy, on OpenSSL too and with its own SSL buffers: %s KiB more than its plain tunnel.\n\n",
		r.diff("idletls", "idle", "haproxy"))
}

// heapOf is the wsgate heap summary of a row, if one was taken.
func (r *report) heapOf(row string) *heapSummary {
	for i := range r.heaps {
		if r.heaps[i].row == row {
			return &r.heaps[i]
		}
	}
	return nil
}

// within is metric a over metric b for one peer, formatted, or "?".
func (r *report) within(a, b, peer string) string {
	x, xok := r.res.get(a, peer)
	y, yok := r.res.get(b, peer)
	if !xok || !yok || x.err != nil || y.err != nil || y.v <= 0 || x.v < 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f", x.v/y.v)
}

// diff is metric a minus metric b for peer, with one decimal, or "?".
func (r *report) diff(a, b, peer string) string {
	x, xok := r.res.get(a, peer)
	y, yok := r.res.get(b, peer)
	if !xok || !yok || x.err != nil || y.err != nil {
		return "?"
	}
	return strconv.FormatFloat(x.v-y.v, 'f', 1, 64)
}
