package faults

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/echopod"
	"github.com/wsgate/wsgate/internal/testenv/harness"
	"github.com/wsgate/wsgate/proxy"
)

// Limits of the gateway under abuse.
const (
	abuseReadHeaderTimeout = 2 * time.Second
	abuseMaxTunnels        = 300
	abusePerPod            = 50
	// The well-behaved clients' answers may be this much slower than
	// their baseline in the same run, or else under the ceiling.
	latencyFactor  = 20
	latencyCeiling = 2 * time.Second
	// streamBytes is what the streaming pod sends to a client that does
	// not read.
	streamBytes = 200 << 20
)

// abuse is a gateway with small limits, a well-behaved client probing
// it all along, and the pods the abusers aim at.
type abuse struct {
	g      *gateway
	ns     string
	prober *prober
	base   proberCounts
	// good is the prober's pod; flood the pod with a per-pod cap.
	goodPath, floodPath string
	flood               *echopod.Server
	// streamPath (idle timeout 1h) and streamIdlePath (idle 1s) reach
	// the streaming pod.
	streamPath, streamIdlePath string
	stream                     *streamPod
	ratios                     []string
}

// TestAbusiveClientsNeitherLeakNorSlowDownOthers runs abusers against a
// gateway with small limits (2s to send a request head, 300 tunnels, 50
// per pod) while a well-behaved client keeps connecting: slowloris
// handshakes, a thousand silent connections, oversized heads, floods past
// the per-pod and the global caps, a client that never reads while its
// pod streams 200 MB, and one that stops reading for good. Each abuser
// gets its limit; the well-behaved client's answers stay within 20x of
// their baseline (or under 2s); memory stays bounded under backpressure;
// goroutines and file descriptors return to their baseline.
func TestAbusiveClientsNeitherLeakNorSlowDownOthers(t *testing.T) {
	a := setUpAbuse(t)
	base := steadyUsage(5 * time.Second)
	a.prober = startProber(a.g.wsClient, a.g.probeAddr, []string{a.goodPath}, 20*time.Millisecond)
	defer a.prober.stop()
	time.Sleep(2 * time.Second)
	a.base = a.prober.snapshot()
	t.Logf("baseline of the well-behaved client: %s", a.base)
	if a.base.failed > 0 || a.base.ok == 0 {
		t.Fatalf("the well-behaved client fails without abuse: %s", a.base)
	}

	a.run(t, "slowloris handshakes are cut at the read-header timeout", true, a.slowloris)
	a.run(t, "a thousand silent connections are accepted after the kernel's deferral and cut at the read-header timeout", true, a.silent)
	a.run(t, "oversized request heads get 431", true, a.oversized)
	a.run(t, "a flood past the per-pod cap gets 503 with Retry-After", true, a.perPodFlood)
	a.run(t, "a flood past the global cap gets 503 with Retry-After, then the gateway recovers", false, a.globalFlood)
	a.run(t, "a client that does not read while its pod streams 200 MB holds bounded memory", true, a.backpressure)
	a.run(t, "a client that stops reading for good is cut at the idle timeout", true, a.stopsReading)

	t.Logf("well-behaved client's answer latency during abuse vs baseline (%s):\n  %s", a.base.lat, strings.Join(a.ratios, "\n  "))
	a.prober.stop()
	if !waitNoTunnels(a.g, 10*time.Second) {
		t.Errorf("%d tunnels still open at the end", a.g.server.OpenTunnels())
	}
	a.stream.pod.stop()
	u := checkNoLeak(t, "after the abuse", base, 15*time.Second)
	t.Logf("goroutines and fds: baseline %s, after the abuse %s", base, u)
}

func setUpAbuse(t *testing.T) *abuse {
	a := &abuse{ns: env.Namespace(t)}
	a.g = startGateway(t, gatewayConfig{proxy: proxy.Options{ReadHeaderTimeout: abuseReadHeaderTimeout, MaxTunnels: abuseMaxTunnels}})
	port, servers := harness.EchoPods(t, "127.0.6.30", "127.0.6.31")
	a.flood = servers[0]
	createPod(t, a.ns, pod{name: "flooded", ip: "127.0.6.30", port: port, labels: map[string]string{"app": "flooded"}})
	createPod(t, a.ns, pod{name: "good", ip: "127.0.6.31", port: port, labels: map[string]string{"app": "good"}})
	a.stream = startStreamPod(t, "127.0.6.32")
	createPod(t, a.ns, pod{name: "streaming", ip: "127.0.6.32", port: int32(a.stream.port), labels: map[string]string{"app": "streaming"}})
	prefix := "/" + a.ns
	createRoute(t, a.ns, route{name: "flooded", prefix: prefix + "/flooded", app: "flooded", port: intstr.FromString("ws"), perPod: abusePerPod})
	createRoute(t, a.ns, route{name: "good", prefix: prefix + "/good", app: "good", port: intstr.FromString("ws")})
	createRoute(t, a.ns, route{name: "stream", prefix: prefix + "/stream", app: "streaming", port: intstr.FromString("ws")})
	createRoute(t, a.ns, route{name: "stream-idle", prefix: prefix + "/stream-idle", app: "streaming", port: intstr.FromString("ws"),
		timeouts: &wsgatev1alpha1.Timeouts{Idle: &metav1.Duration{Duration: time.Second}}})
	a.floodPath = harness.PodPath(prefix+"/flooded", "127.0.6.30", "/")
	a.goodPath = harness.PodPath(prefix+"/good", "127.0.6.31", "/")
	a.streamPath = harness.PodPath(prefix+"/stream", "127.0.6.32", "/")
	a.streamIdlePath = harness.PodPath(prefix+"/stream-idle", "127.0.6.32", "/")
	for _, name := range []string{"flooded", "good", "stream", "stream-idle"} {
		waitRoute(t, a.ns, name, readyWith(1))
	}
	a.g.waitServes(t, a.floodPath)
	a.g.waitServes(t, a.goodPath)
	return a
}

// run runs one abuse as a subtest and compares the well-behaved client's
// answers during it with the baseline; served says they must all be 101.
func (a *abuse) run(t *testing.T, name string, served bool, abuse func(t *testing.T)) {
	t.Run(name, func(t *testing.T) {
		a.prober.snapshot()
		abuse(t)
		c := a.prober.snapshot()
		p50, p99 := c.lat.pct(50), c.lat.pct(99)
		r50 := float64(p50) / float64(max(a.base.lat.pct(50), time.Microsecond))
		r99 := float64(p99) / float64(max(a.base.lat.pct(99), time.Microsecond))
		line := fmt.Sprintf("%-80s p50 %8s (x%.1f)  p99 %8s (x%.1f)  %d ok, %d refused %v",
			name, p50.Round(10*time.Microsecond), r50, p99.Round(10*time.Microsecond), r99, c.ok, c.failed, c.statuses)
		a.ratios = append(a.ratios, line)
		t.Logf("the well-behaved client during the abuse: %s", c)
		if len(c.lat) == 0 {
			t.Errorf("the well-behaved client got no answer during the abuse: %s", c)
		}
		if limit := max(latencyFactor*a.base.lat.pct(99), latencyCeiling); p99 > limit {
			t.Errorf("the well-behaved client's p99 answer took %s during the abuse, over %s (%dx its baseline p99 %s, or %s)",
				p99, limit, latencyFactor, a.base.lat.pct(99), latencyCeiling)
		}
		if served && c.failed > 0 {
			t.Errorf("the well-behaved client was refused during the abuse: %s", c)
		}
	})
}

// cutAfter dials n connections, runs feed on each (what the abuser
// sends), and checks that the gateway closes each within the bound; it
// returns how long the gateway took.
func (a *abuse) cutAfter(t *testing.T, n int, within time.Duration, feed func(c net.Conn, stop <-chan struct{})) durations {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range n {
		c, err := net.DialTimeout("tcp", a.g.addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial: %v (after %d connections)", err, len(conns))
		}
		conns = append(conns, c)
	}
	stop := make(chan struct{})
	lat := make(durations, n)
	answers := make([]string, n)
	var wg sync.WaitGroup
	began := time.Now()
	for i, c := range conns {
		wg.Add(2)
		go func() {
			defer wg.Done()
			feed(c, stop)
		}()
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(within + 5*time.Second))
			b, err := io.ReadAll(c)
			lat[i] = time.Since(began)
			switch {
			case len(b) > 0:
				answers[i] = strings.SplitN(string(b), "\r\n", 2)[0]
			case err != nil:
				answers[i] = err.Error()
			default:
				answers[i] = "closed"
			}
		}()
	}
	go func() {
		time.Sleep(within + 5*time.Second)
		close(stop)
	}()
	wg.Wait()
	kinds := map[string]int{}
	for _, s := range answers {
		kinds[s]++
	}
	t.Logf("%d connections: the gateway ended them after %s; they saw %v", n, lat, kinds)
	if late := lat.pct(100); late > within {
		t.Errorf("the gateway took up to %s to end the connections, want under %s", late, within)
	}
	return lat
}

// slowloris sends request heads a byte every 200ms.
func (a *abuse) slowloris(t *testing.T) {
	head := []byte(handshakeHead(a.goodPath))
	a.cutAfter(t, 300, abuseReadHeaderTimeout+time.Second, func(c net.Conn, stop <-chan struct{}) {
		for _, b := range head {
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
}

// silent opens connections that send nothing. The kernel holds each for
// about proxy.AcceptDeferral before the gateway accepts it and its
// read-header timeout starts.
func (a *abuse) silent(t *testing.T) {
	a.cutAfter(t, 1000, proxy.AcceptDeferral+abuseReadHeaderTimeout+time.Second, func(net.Conn, <-chan struct{}) {})
}

// oversized sends heads of 64 KiB (the limit is 16 KiB), 100 at once, in
// waves for a second.
func (a *abuse) oversized(t *testing.T) {
	head := handshakeHead(a.goodPath, "X-Padding: "+strings.Repeat("p", 64<<10))
	statuses := map[int]int{}
	var mu sync.Mutex
	sent := 0
	for began := time.Now(); time.Since(began) < minAbuse && sent < 5000; sent += 100 {
		var wg sync.WaitGroup
		for range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status := -1
				defer func() {
					mu.Lock()
					statuses[status]++
					mu.Unlock()
				}()
				c, err := net.DialTimeout("tcp", a.g.addr, 5*time.Second)
				if err != nil {
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write([]byte(head)); err != nil {
					return
				}
				status, _ = rawStatus(bufio.NewReader(c))
			}()
		}
		wg.Wait()
	}
	t.Logf("%d heads of 64 KiB: answers %v", sent, statuses)
	if statuses[http.StatusRequestHeaderFieldsTooLarge] != sent {
		t.Errorf("answers %v, want 431 for all", statuses)
	}
}

// minAbuse is how long each abuse lasts at least, so that the
// well-behaved client measures something.
const minAbuse = time.Second

// handshakes runs n handshakes for path at once and returns the answers
// (status, and whether Retry-After came) and the tunnels that opened.
func (a *abuse) handshakes(path string, n int) (map[string]int, []*websocket.Conn) {
	var mu sync.Mutex
	answers := map[string]int{}
	var opened []*websocket.Conn
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, status, h, err := a.g.handshake(ctx, path, nil)
			key := fmt.Sprint(status)
			if h.Get("Retry-After") != "" {
				key += " with Retry-After"
			}
			mu.Lock()
			defer mu.Unlock()
			answers[key]++
			if err == nil {
				opened = append(opened, conn)
			}
		}()
	}
	wg.Wait()
	return answers, opened
}

func closeAll(conns []*websocket.Conn) {
	for _, c := range conns {
		_ = c.CloseNow()
	}
}

// perPodFlood fills the flooded pod's cap, then floods it.
func (a *abuse) perPodFlood(t *testing.T) {
	accepted := a.flood.Accepted()
	answers, held := a.handshakes(a.floodPath, abusePerPod)
	defer closeAll(held)
	if len(held) != abusePerPod {
		t.Fatalf("filling the pod's cap of %d: %v", abusePerPod, answers)
	}
	dials := a.g.dials.Load()
	began := time.Now()
	total := map[string]int{}
	flooded := 0
	for ; time.Since(began) < minAbuse && flooded < 5000; flooded += 500 {
		answers, extra := a.handshakes(a.floodPath, 500)
		closeAll(extra)
		for k, v := range answers {
			total[k] += v
		}
	}
	t.Logf("%d handshakes past the pod's cap of %d, 500 at once: answers %v in %s", flooded, abusePerPod, total, time.Since(began).Round(time.Millisecond))
	if total["503 with Retry-After"] != flooded {
		t.Errorf("answers %v, want 503 with Retry-After for all", total)
	}
	if n := a.flood.Accepted() - accepted; n != abusePerPod {
		t.Errorf("the flooded pod accepted %d handshakes, want %d (its cap)", n, abusePerPod)
	}
	// The prober's dials are to the good pod; none of the flood's.
	if n := a.g.dials.Load() - dials; n > int64(time.Since(began)/(20*time.Millisecond))+5 {
		t.Errorf("the gateway dialled %d times during a flood it refused", n)
	}
}

// globalFlood fills the gateway's cap with tunnels to the good pod, floods
// it, and lets go: the well-behaved client gets 503 meanwhile (the cap is
// global), then 101 again.
func (a *abuse) globalFlood(t *testing.T) {
	var held []*websocket.Conn
	defer func() { closeAll(held) }()
	for len(held) < abuseMaxTunnels {
		answers, opened := a.handshakes(a.goodPath, abuseMaxTunnels-len(held))
		held = append(held, opened...)
		if len(opened) == 0 {
			t.Logf("the gateway is full with %d tunnels of the abuser: %v", len(held), answers)
			break
		}
	}
	answers, extra := a.handshakes(a.goodPath, 500)
	closeAll(extra)
	t.Logf("500 handshakes at once past the global cap of %d: answers %v", abuseMaxTunnels, answers)
	// A slot the well-behaved client held when the abuser filled the
	// gateway may go to the flood.
	if free := abuseMaxTunnels - len(held); answers["503 with Retry-After"]+answers["101"] != 500 || answers["101"] > free {
		t.Errorf("answers %v, want 503 with Retry-After for all (but %d)", answers, free)
	}
	time.Sleep(500 * time.Millisecond)
	closeAll(held)
	held = nil
	released := time.Now()
	harness.Eventually(t, 5*time.Second, "a well-behaved handshake gets 101 after the flood", func() error {
		if got := a.g.status(a.goodPath, nil); got != http.StatusSwitchingProtocols {
			return fmt.Errorf("status %d", got)
		}
		return nil
	})
	t.Logf("the gateway served again %s after the abuser let go", time.Since(released).Round(time.Millisecond))
}

// backpressure has the streaming pod send 200 MB to a client that reads
// nothing for 3s, then everything.
func (a *abuse) backpressure(t *testing.T) {
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	streamsEnded := a.stream.ended.Load()
	c, br := rawTunnel(t, a.g, a.streamPath)
	defer func() {
		// The client leaves; the pod sees the end of the stream and
		// ends too, before the next abuse.
		_ = c.Close()
		deadline := time.Now().Add(5 * time.Second)
		for a.stream.ended.Load() == streamsEnded && time.Now().Before(deadline) {
			time.Sleep(pollEvery)
		}
	}()
	// The pod streams; the client reads nothing.
	time.Sleep(3 * time.Second)
	sentWhileStalled := a.stream.sent.Load()
	during := heap()
	time.Sleep(500 * time.Millisecond)
	if now := a.stream.sent.Load(); now != sentWhileStalled {
		t.Errorf("the pod could still send (%d more bytes) after 3s: no backpressure", now-sentWhileStalled)
	}
	// Now read it all.
	began := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
	got, err := skipFrames(br, streamBytes)
	took := time.Since(began)
	after := heap()
	mb := func(b uint64) float64 { return float64(b) / (1 << 20) }
	t.Logf("the pod sent %.1f MB before backpressure stopped it; HeapInuse %.1f MB before, %.1f MB while stalled, %.1f MB after %d MB went through in %s",
		mb(uint64(sentWhileStalled)), mb(before), mb(during), mb(after), got>>20, took.Round(time.Millisecond))
	if err != nil || got != streamBytes {
		t.Errorf("the client read %d bytes of payload (%v), want %d", got, err, streamBytes)
	}
	if sentWhileStalled > 64<<20 {
		t.Errorf("the pod sent %d bytes to a client that read none", sentWhileStalled)
	}
	const bound = 32 << 20
	if during > before+bound || after > before+bound {
		t.Errorf("HeapInuse grew from %.1f MB to %.1f MB (stalled) and %.1f MB (after): over %d MB", mb(before), mb(during), mb(after), bound>>20)
	}
}

// stopsReading opens a tunnel (idle timeout 1s) whose client never reads
// while the pod streams: the gateway must end it (the pod's writes then
// fail).
func (a *abuse) stopsReading(t *testing.T) {
	ended := a.stream.ended.Load()
	c, _ := rawTunnel(t, a.g, a.streamIdlePath)
	defer c.Close()
	opened := time.Now()
	within := time.Second + closeGrace + 2*time.Second
	deadline := time.Now().Add(within)
	for a.stream.ended.Load() == ended && time.Now().Before(deadline) {
		time.Sleep(pollEvery)
	}
	if a.stream.ended.Load() == ended {
		t.Logf("the tunnel goroutines left:\n%s", tunnelStacks())
		t.Errorf("a tunnel whose client stopped reading is still open %s after it opened (idle timeout 1s)", within)
		return
	}
	t.Logf("the gateway ended the tunnel %s after it opened", time.Since(opened).Round(time.Millisecond))
}

// rawTunnel opens a tunnel with a raw connection, which reads nothing
// unless told.
func rawTunnel(t *testing.T, g *gateway, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", g.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(handshakeHead(path))); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("handshake for %s: %v", path, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake for %s: %s", path, resp.Status)
	}
	_ = c.SetDeadline(time.Time{})
	return c, br
}

// skipFrames reads frames, discarding payloads, until want bytes of
// payload came or the stream ends.
func skipFrames(br *bufio.Reader, want int64) (int64, error) {
	var got int64
	for got < want {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return got, err
		}
		n := int64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(br, b[:]); err != nil {
				return got, err
			}
			n = int64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(br, b[:]); err != nil {
				return got, err
			}
			n = int64(binary.BigEndian.Uint64(b[:]))
		}
		if h[0]&0x0f == 0x8 {
			return got, errors.New("close frame")
		}
		m, err := io.CopyN(io.Discard, br, n)
		got += m
		if err != nil {
			return got, err
		}
	}
	return got, nil
}

// streamPod is a raw pod that, on each tunnel, sends streamBytes of
// binary frames of 1 MiB as fast as the gateway takes them.
type streamPod struct {
	pod  *rawPod
	port int
	sent atomic.Int64
	// ended counts the streams that ended (all sent, or a failed write:
	// the gateway closed the connection).
	ended atomic.Int64
}

func startStreamPod(t *testing.T, ip string) *streamPod {
	s := &streamPod{port: freePort(t, ip)}
	payload := make([]byte, 1<<20)
	frame := append(frameHeader(0x2, len(payload)), payload...)
	s.pod = startRawPod(t, ip, s.port, func(p *rawPod, c net.Conn, br *bufio.Reader) {
		key, err := readHead(br)
		if err != nil {
			return
		}
		if _, err := c.Write([]byte(accept101(key))); err != nil {
			return
		}
		defer s.ended.Add(1)
		clientDone := make(chan struct{})
		go func() {
			// Whatever the client sends (its Close) is read and dropped,
			// until the gateway passes its end of stream on.
			defer close(clientDone)
			_, _ = io.Copy(io.Discard, br)
		}()
		for sent := 0; sent < streamBytes; sent += len(payload) {
			select {
			case <-p.release:
				return
			default:
			}
			n, err := c.Write(frame)
			s.sent.Add(int64(n))
			if err != nil {
				return
			}
		}
		select {
		case <-clientDone:
		case <-p.release:
		}
	})
	return s
}
