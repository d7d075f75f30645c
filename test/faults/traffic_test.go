package faults

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// ---------------------------------------------------------------------------
// Paced tunnels: numbered messages at a steady pace, every echo checked

// pacedTunnel sends numbered messages on a websocket at a steady pace
// and checks that every echo comes back, in order: a gap in the numbers
// is a lost message, a number older than expected a reordered (or
// duplicated) one. The writer and the reader run apart, so several
// messages are in flight at once.
type pacedTunnel struct {
	id   int
	path string
	conn *websocket.Conn

	sent      atomic.Int64 // messages written
	received  atomic.Int64 // echoes in order
	lost      atomic.Int64 // numbers skipped by an echo
	reordered atomic.Int64 // echoes older than expected
	corrupt   atomic.Int64 // echoes that are not ours

	finishing   atomic.Bool // the test ends the tunnel: not a drop
	stopWriting chan struct{}
	writerDone  chan struct{}
	readerDone  chan struct{}

	mu       sync.Mutex
	writeErr error
	end      *harness.Closed // how the tunnel ended, unless the test ended it
	next     int64           // next expected number
}

// message is the text of message seq of tunnel id, padded to 64 bytes.
func message(id int, seq int64) string {
	s := strconv.Itoa(id) + "/" + strconv.FormatInt(seq, 10) + "/"
	return s + strings.Repeat(".", max(0, 64-len(s)))
}

func parseMessage(m string) (id int, seq int64, ok bool) {
	parts := strings.SplitN(m, "/", 3)
	if len(parts) != 3 {
		return 0, 0, false
	}
	id, err1 := strconv.Atoi(parts[0])
	seq, err2 := strconv.ParseInt(parts[1], 10, 64)
	return id, seq, err1 == nil && err2 == nil
}

// startPaced starts sending on conn every `every` (the first message
// after a random part of it, to spread the load) until finish or the
// tunnel ends; bound is the longest the tunnel may run.
func startPaced(id int, path string, conn *websocket.Conn, every, bound time.Duration) *pacedTunnel {
	p := &pacedTunnel{id: id, path: path, conn: conn, stopWriting: make(chan struct{}), writerDone: make(chan struct{}), readerDone: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	go func() {
		<-p.readerDone
		cancel()
	}()
	go p.read(ctx)
	go p.write(ctx, every)
	return p
}

func (p *pacedTunnel) write(ctx context.Context, every time.Duration) {
	defer close(p.writerDone)
	select {
	case <-time.After(time.Duration(rand.Int64N(int64(every)))):
	case <-p.stopWriting:
		return
	case <-p.readerDone:
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for seq := int64(0); ; seq++ {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := p.conn.Write(wctx, websocket.MessageText, []byte(message(p.id, seq)))
		cancel()
		if err != nil {
			p.mu.Lock()
			p.writeErr = err
			p.mu.Unlock()
			return
		}
		p.sent.Add(1)
		select {
		case <-tick.C:
		case <-p.stopWriting:
			return
		case <-p.readerDone:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (p *pacedTunnel) read(ctx context.Context) {
	defer close(p.readerDone)
	for {
		_, msg, err := p.conn.Read(ctx)
		if err != nil {
			if !p.finishing.Load() {
				c := harness.ClosedBy(err)
				p.mu.Lock()
				p.end = &c
				p.mu.Unlock()
			}
			return
		}
		id, seq, ok := parseMessage(string(msg))
		if !ok || id != p.id {
			p.corrupt.Add(1)
			continue
		}
		p.mu.Lock()
		switch {
		case seq == p.next:
			p.next++
			p.received.Add(1)
		case seq > p.next:
			p.lost.Add(seq - p.next)
			p.next = seq + 1
			p.received.Add(1)
		default:
			p.reordered.Add(1)
		}
		p.mu.Unlock()
	}
}

// ended returns how the tunnel ended if it ended on its own (not by
// finish), or nil.
func (p *pacedTunnel) ended() *harness.Closed {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.end
}

// waitEnded waits up to timeout for the tunnel to end on its own.
func (p *pacedTunnel) waitEnded(timeout time.Duration) *harness.Closed {
	select {
	case <-p.readerDone:
	case <-time.After(timeout):
	}
	return p.ended()
}

// finish stops the writer, waits (up to timeout) for the echoes of
// everything sent, and closes the tunnel. It returns the tunnel's verdict.
func (p *pacedTunnel) finish(timeout time.Duration) pacedResult {
	close(p.stopWriting)
	<-p.writerDone
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		caughtUp := p.next >= p.sent.Load()
		p.mu.Unlock()
		select {
		case <-p.readerDone:
			caughtUp = true
		default:
		}
		if caughtUp || time.Now().After(deadline) {
			break
		}
		time.Sleep(pollEvery)
	}
	p.finishing.Store(true)
	_ = p.conn.CloseNow()
	<-p.readerDone
	return p.result()
}

// pacedResult is what one paced tunnel saw.
type pacedResult struct {
	tunnels, dropped                         int
	sent, received, lost, reordered, corrupt int64
	unanswered                               int64 // sent, never echoed (tunnel ended first)
	firstProblem                             string
}

func (p *pacedTunnel) result() pacedResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := pacedResult{
		tunnels: 1, sent: p.sent.Load(), received: p.received.Load(),
		lost: p.lost.Load(), reordered: p.reordered.Load(), corrupt: p.corrupt.Load(),
	}
	r.unanswered = r.sent - p.next
	if r.unanswered < 0 {
		r.unanswered = 0
	}
	switch {
	case p.end != nil:
		r.dropped = 1
		r.firstProblem = fmt.Sprintf("tunnel %d (%s) ended with close %d %q after %d messages", p.id, p.path, p.end.Code, p.end.Reason, r.received)
	case p.writeErr != nil:
		r.dropped = 1
		r.firstProblem = fmt.Sprintf("tunnel %d (%s): write failed after %d messages: %v", p.id, p.path, r.sent, p.writeErr)
	case r.lost+r.reordered+r.corrupt+r.unanswered > 0:
		r.firstProblem = fmt.Sprintf("tunnel %d (%s): %d lost, %d reordered, %d corrupt, %d unanswered", p.id, p.path, r.lost, r.reordered, r.corrupt, r.unanswered)
	}
	return r
}

func (a pacedResult) add(b pacedResult) pacedResult {
	if a.firstProblem == "" {
		a.firstProblem = b.firstProblem
	}
	a.tunnels += b.tunnels
	a.dropped += b.dropped
	a.sent += b.sent
	a.received += b.received
	a.lost += b.lost
	a.reordered += b.reordered
	a.corrupt += b.corrupt
	a.unanswered += b.unanswered
	return a
}

func (a pacedResult) String() string {
	return fmt.Sprintf("%d tunnels, %d dropped; %d messages sent, %d echoed in order, %d lost, %d reordered, %d corrupt, %d unanswered",
		a.tunnels, a.dropped, a.sent, a.received, a.lost, a.reordered, a.corrupt, a.unanswered)
}

// check fails the test unless no tunnel dropped and no message was lost,
// reordered, corrupted or left unanswered.
func (a pacedResult) check(t *testing.T, what string) {
	t.Helper()
	if a.dropped+int(a.lost+a.reordered+a.corrupt+a.unanswered) > 0 {
		t.Errorf("%s: %s; first: %s", what, a, a.firstProblem)
	}
	if a.received == 0 {
		t.Errorf("%s: no message went through", what)
	}
}

// finishAll finishes tunnels in parallel and sums their results.
func finishAll(ps []*pacedTunnel, timeout time.Duration) pacedResult {
	results := make([]pacedResult, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = p.finish(timeout)
		}()
	}
	wg.Wait()
	var sum pacedResult
	for _, r := range results {
		sum = sum.add(r)
	}
	return sum
}

// openPaced opens n tunnels, spread over paths in turn, with at most 32
// handshakes at once, and starts them.
func openPaced(t *testing.T, c wsClient, firstID int, paths []string, n int, header http.Header, every, bound time.Duration) []*pacedTunnel {
	t.Helper()
	out := make([]*pacedTunnel, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			path := paths[i%len(paths)]
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			conn, status, _, err := c.handshake(ctx, path, header)
			if err != nil {
				errs <- fmt.Errorf("handshake %d for %s: %w (status %d)", i, path, err, status)
				return
			}
			out[i] = startPaced(firstID+i, path, conn, every, bound)
		}()
	}
	wg.Wait()
	close(errs)
	var opened []*pacedTunnel
	for _, p := range out {
		if p != nil {
			opened = append(opened, p)
		}
	}
	t.Cleanup(func() {
		for _, p := range opened {
			p.finishing.Store(true)
			_ = p.conn.CloseNow()
		}
	})
	if err := <-errs; err != nil {
		t.Fatalf("%v (and %d more)", err, len(errs))
	}
	return out
}

// ---------------------------------------------------------------------------
// Latency figures

// durations is a sample of latencies.
type durations []time.Duration

// pct returns the p-th percentile (nearest rank), 0 for no sample.
func (d durations) pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func (d durations) String() string {
	return fmt.Sprintf("n=%d p50=%s p99=%s max=%s", len(d),
		d.pct(50).Round(10*time.Microsecond), d.pct(99).Round(10*time.Microsecond), d.pct(100).Round(10*time.Microsecond))
}

// ---------------------------------------------------------------------------
// Leaks: goroutines and file descriptors of this process

// usage is this process's goroutines and open file descriptors.
type usage struct{ goroutines, fds int }

func currentUsage() usage {
	u := usage{goroutines: runtime.NumGoroutine(), fds: -1}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		u.fds = len(ents)
	}
	return u
}

// steadyUsage is the baseline of a leak check: this process's usage once
// its goroutine and fd counts have held still for steadyFor (the
// control plane's informers, watches and event broadcasters start and
// reconnect on their own), or the last measure after timeout.
func steadyUsage(timeout time.Duration) usage {
	const steadyFor = 500 * time.Millisecond
	deadline := time.Now().Add(timeout)
	last, since := currentUsage(), time.Now()
	for time.Now().Before(deadline) && time.Since(since) < steadyFor {
		time.Sleep(pollEvery)
		if u := currentUsage(); u != last {
			last, since = u, time.Now()
		}
	}
	return last
}

func (u usage) String() string { return fmt.Sprintf("%d goroutines, %d fds", u.goroutines, u.fds) }

// Slack of the leak checks: the API client's connections and the
// informers' goroutines come and go on their own.
const (
	goroutineSlack = 8
	fdSlack        = 4
)

// settle waits up to timeout for this process's goroutines and fds to
// come back to base (within the slack above), and returns the last
// measure and whether they did.
func settle(base usage, timeout time.Duration) (usage, bool) {
	deadline := time.Now().Add(timeout)
	for {
		u := currentUsage()
		if u.goroutines <= base.goroutines+goroutineSlack && u.fds <= base.fds+fdSlack {
			return u, true
		}
		if time.Now().After(deadline) {
			return u, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkNoLeak fails the test unless usage settles back to base, and
// prints the goroutines left over if it does not.
func checkNoLeak(t *testing.T, what string, base usage, timeout time.Duration) usage {
	t.Helper()
	u, ok := settle(base, timeout)
	if !ok {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Errorf("%s: %s after %s, baseline %s\n%s", what, u, timeout, base, goroutineSummary(string(buf[:n])))
	}
	return u
}

// goroutineSummary counts goroutines by their top wsgate/test frame.
func goroutineSummary(dump string) string {
	counts := map[string]int{}
	for _, g := range strings.Split(dump, "\n\n") {
		lines := strings.Split(g, "\n")
		key := ""
		for _, l := range lines[1:] {
			if strings.Contains(l, "github.com/wsgate/wsgate/") && !strings.HasPrefix(l, "\t") {
				key = strings.TrimSpace(l)
				break
			}
		}
		if key == "" && len(lines) > 1 {
			key = strings.TrimSpace(lines[1])
		}
		counts[key]++
	}
	type kv struct {
		k string
		n int
	}
	var all []kv
	for k, n := range counts {
		all = append(all, kv{k, n})
	}
	slices.SortFunc(all, func(a, b kv) int { return b.n - a.n })
	var b strings.Builder
	for i, e := range all {
		if i == 25 {
			break
		}
		fmt.Fprintf(&b, "%5d %s\n", e.n, e.k)
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// Probers: well-behaved clients that keep connecting

// prober is a well-behaved client that, every `every`, opens a tunnel
// (to the paths in turn), exchanges one message, closes it, and records
// the handshake latency; and, with a probe address, checks /readyz.
type prober struct {
	stopc chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	ok       int
	failed   int
	statuses map[int]int // answers of failed handshakes (0: none)
	firstErr string
	lat      durations
	probes   int
	notReady int
}

// proberCounts is what a prober saw between two snapshots.
type proberCounts struct {
	ok, failed, probes, notReady int
	statuses                     map[int]int
	firstErr                     string
	lat                          durations
}

func (c proberCounts) String() string {
	s := fmt.Sprintf("%d handshakes ok, %d failed", c.ok, c.failed)
	if c.failed > 0 {
		s += fmt.Sprintf(" (answers %v; first: %s)", c.statuses, c.firstErr)
	}
	if c.probes > 0 {
		s += fmt.Sprintf("; /readyz not 200 %d of %d times", c.notReady, c.probes)
	}
	return s + "; latency of the answers " + c.lat.String()
}

// startProber starts a prober that runs until stop (or 10 minutes).
func startProber(c wsClient, probeAddr string, paths []string, every time.Duration) *prober {
	p := &prober{stopc: make(chan struct{}), done: make(chan struct{}), statuses: map[int]int{}}
	go func() {
		defer close(p.done)
		bound := time.After(10 * time.Minute)
		for i := 0; ; i++ {
			p.once(c, paths[i%len(paths)], i)
			if probeAddr != "" {
				code := harness.Readyz(probeAddr)
				p.mu.Lock()
				p.probes++
				if code != http.StatusOK {
					p.notReady++
				}
				p.mu.Unlock()
			}
			select {
			case <-p.stopc:
				return
			case <-bound:
				return
			case <-time.After(every):
			}
		}
	}()
	return p
}

func (p *prober) once(c wsClient, path string, i int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	began := time.Now()
	conn, status, _, err := c.handshake(ctx, path, nil)
	took := time.Since(began)
	if err == nil {
		err = echo(ctx, conn, fmt.Sprintf("probe %d", i))
		_ = conn.Close(websocket.StatusNormalClosure, "")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if status != 0 {
		// The time to the gateway's answer, whatever it is.
		p.lat = append(p.lat, took)
	}
	if err != nil {
		p.failed++
		p.statuses[status]++
		if p.firstErr == "" {
			p.firstErr = fmt.Sprintf("%s: %v (status %d)", path, err, status)
		}
		return
	}
	p.ok++
}

// snapshot returns the counts since the last snapshot, and resets them.
func (p *prober) snapshot() proberCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := proberCounts{ok: p.ok, failed: p.failed, probes: p.probes, notReady: p.notReady, statuses: p.statuses, firstErr: p.firstErr, lat: p.lat}
	p.ok, p.failed, p.probes, p.notReady, p.statuses, p.firstErr, p.lat = 0, 0, 0, 0, map[int]int{}, "", nil
	return c
}

// stop stops the prober and returns the counts since the last snapshot.
func (p *prober) stop() proberCounts {
	select {
	case <-p.stopc:
	default:
		close(p.stopc)
	}
	<-p.done
	return p.snapshot()
}

// tunnelStacks returns the stacks of the proxy's tunnel goroutines and
// event loops.
func tunnelStacks() string {
	buf := make([]byte, 4<<20)
	n := runtime.Stack(buf, true)
	var out []string
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "proxy.(*tunnel)") || strings.Contains(g, "proxy.(*evLoop)") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
