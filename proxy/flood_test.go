package proxy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// floodScene is 200 well-behaved clients, each on its own address,
// holding a tunnel and exchanging messages while they reconnect now and
// then, beside one client flooding handshakes and one walking pod
// addresses, through a gateway with per-client limits.
type floodScene struct {
	eg       *edgeGateway
	good     int
	msgEvery time.Duration
}

// floodLimits are the gateway's per-client limits in the scene: far
// above what a well-behaved client does, far below a flood.
var floodLimits = ClientLimits{HandshakeRate: 5, HandshakeBurst: 10, MaxTunnels: 20, RefusalBudget: 20, RefusalBlock: time.Minute}

// goodAddr is the i-th well-behaved client's address.
func goodAddr(i int) string { return fmt.Sprintf("127.0.%d.%d", 20+i/200, 1+i%200) }

const (
	flooderAddr = "127.0.30.1"
	scannerAddr = "127.0.30.2"
)

// phase is what the well-behaved clients saw in one phase.
type phase struct {
	handshakes []time.Duration // each reconnect's handshake
	failed     int             // handshakes refused or failed
	dropped    int             // tunnels that ended before their client closed them
	messages   int64
}

func (p phase) p99() time.Duration {
	s := slices.Clone(p.handshakes)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, len(s)*99/100)]
}

// run lets the well-behaved clients work for d: each holds a tunnel,
// sends a message every msgEvery and checks its echo, and every
// reconnectEvery closes it and opens a new one, timing the handshake.
func (fs *floodScene) run(t *testing.T, d, reconnectEvery time.Duration) phase {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var ph phase
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	path := "/e/" + fs.eg.pod + "/x"
	for i := range fs.good {
		wg.Go(func() {
			// Spread the clients' reconnects over the interval.
			time.Sleep(time.Duration(i) * reconnectEvery / time.Duration(fs.good))
			for time.Now().Before(end) {
				start := time.Now()
				c, resp, err := fs.eg.dialPath(ctx, edgeDial{src: goodAddr(i)}, path, nil)
				took := time.Since(start)
				if resp != nil && resp.Body != nil {
					_ = resp.Body.Close()
				}
				mu.Lock()
				if err != nil {
					ph.failed++
					if resp != nil {
						t.Logf("client %s refused: %d", goodAddr(i), resp.StatusCode)
					}
					mu.Unlock()
					time.Sleep(reconnectEvery)
					continue
				}
				ph.handshakes = append(ph.handshakes, took)
				mu.Unlock()
				until := time.Now().Add(reconnectEvery)
				if until.After(end) {
					until = end
				}
				n, ok := keepEchoing(ctx, c, until, fs.msgEvery)
				atomic.AddInt64(&ph.messages, n)
				if !ok {
					mu.Lock()
					ph.dropped++
					mu.Unlock()
				}
				_ = c.Close(websocket.StatusNormalClosure, "")
			}
		})
	}
	wg.Wait()
	return ph
}

// keepEchoing sends a message every interval until until and reads each
// echo; false when the tunnel failed.
func keepEchoing(ctx context.Context, c *websocket.Conn, until time.Time, interval time.Duration) (int64, bool) {
	var n int64
	msg := []byte("hello")
	for time.Now().Before(until) {
		if err := echo(ctx, c, websocket.MessageText, msg); err != nil {
			return n, false
		}
		n++
		time.Sleep(min(interval, time.Until(until)))
	}
	return n, true
}

// flood opens handshakes from flooderAddr, conns at a time, until stop;
// it returns how many were answered 429 and how many got through.
func (fs *floodScene) flood(stop <-chan struct{}, conns int) (limited, through *atomic.Int64) {
	limited, through = new(atomic.Int64), new(atomic.Int64)
	head := []byte(handshake("/e/" + fs.eg.pod + "/x"))
	for range conns {
		go func() {
			buf := make([]byte, 512)
			for {
				select {
				case <-stop:
					return
				default:
				}
				switch fs.rawStatus(flooderAddr, head, buf) {
				case "429":
					limited.Add(1)
				case "101":
					through.Add(1)
				}
			}
		}()
	}
	return limited, through
}

// scan walks pod addresses from scannerAddr until stop; it returns the
// answers by status.
func (fs *floodScene) scan(stop <-chan struct{}) *sync.Map {
	seen := &sync.Map{}
	go func() {
		buf := make([]byte, 512)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			head := []byte(handshake(fmt.Sprintf("/e/10.%d.%d.%d/x", i>>16&255, i>>8&255, i&255)))
			if st := fs.rawStatus(scannerAddr, head, buf); st != "" {
				v, _ := seen.LoadOrStore(st, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			}
		}
	}()
	return seen
}

// rawStatus connects from src, sends head and returns the status code
// of the answer's first read ("" for none).
func (fs *floodScene) rawStatus(src string, head, buf []byte) string {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", fs.eg.g.addr)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(head); err != nil {
		return ""
	}
	if n, _ := c.Read(buf); n >= 12 {
		return string(buf[9:12])
	}
	return ""
}

func count(m *sync.Map, status string) int64 {
	if v, ok := m.Load(status); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// TestFloodAndScanDoNotHurtOthers: one client flooding handshakes and
// one walking addresses are limited, while 200 others keep their
// tunnels and messages, and every handshake of theirs succeeds. Their
// handshake p99, quiet and under the flood, is logged; its ratio is a
// timing on a shared machine, measured by the benchmark's edgeflood row
// beside a quiet phase of the same run, not judged here.
func TestFloodAndScanDoNotHurtOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("a flood of handshakes for several seconds")
	}
	eg := startEdgeGateway(t, engine{}, Options{ClientLimits: floodLimits})
	fs := &floodScene{eg: eg, good: 200, msgEvery: 200 * time.Millisecond}
	const d, reconnect = 3 * time.Second, time.Second
	quiet := fs.run(t, d, reconnect)
	stop := make(chan struct{})
	limited, through := fs.flood(stop, 4)
	scanned := fs.scan(stop)
	loud := fs.run(t, d, reconnect)
	close(stop)

	for _, ph := range []struct {
		name string
		p    phase
	}{{"quiet", quiet}, {"flood", loud}} {
		if ph.p.failed > 0 || ph.p.dropped > 0 {
			t.Errorf("%s phase: %d handshakes of well-behaved clients failed, %d of their tunnels dropped", ph.name, ph.p.failed, ph.p.dropped)
		}
		if len(ph.p.handshakes) < fs.good*2 {
			t.Errorf("%s phase: only %d handshakes of %d clients", ph.name, len(ph.p.handshakes), fs.good)
		}
	}
	// The flooder gets its burst and the rate's tokens, at most, and is
	// refused the rest.
	if limited.Load() < 100 || through.Load() > int64(floodLimits.HandshakeBurst)+int64(floodLimits.HandshakeRate*float64(d/time.Second+1)) {
		t.Errorf("the flooder got %d answers 429 and %d tunnels", limited.Load(), through.Load())
	}
	if n404, n429 := count(scanned, "404"), count(scanned, "429"); n404 > int64(floodLimits.RefusalBudget)+1 || n429 == 0 {
		t.Errorf("the scanner got %d answers 404 and %d answers 429, budget %d", n404, n429, floodLimits.RefusalBudget)
	}
	if got := eg.limitedCount(t, limitRate); got < float64(limited.Load()) {
		t.Errorf("wsgate_client_limited_total{reason=handshake_rate} = %v, the flooder got %d answers 429", got, limited.Load())
	}
	if got := value(t, eg.reg, "wsgate_client_blocks_total", nil); got != 1 {
		t.Errorf("wsgate_client_blocks_total = %v, want the scanner's one block", got)
	}
	t.Logf("well-behaved clients' handshake p99: quiet %v, flood %v (x%.2f); %d + %d handshakes, %d + %d messages; flooder: %d limited, %d through; scanner: %d 404, %d 429",
		quiet.p99(), loud.p99(), float64(loud.p99())/float64(quiet.p99()), len(quiet.handshakes), len(loud.handshakes), quiet.messages, loud.messages,
		limited.Load(), through.Load(), count(scanned, "404"), count(scanned, "429"))
}
