//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The gateway's own HTTP/2 (on the event loops) facing hostile clients
// and misbehaving pods, frame by frame.

// startLoopsH2 is a gateway serving HTTP/2 on its event loops, with an
// echo pod on 127.0.0.2 under /e.
func startLoopsH2(t *testing.T, opts Options) *h2Gateway {
	t.Helper()
	h := startH2Gateway(t, opts)
	if !h.g.srv.h2OnLoops() {
		t.Fatal("HTTP/2 is not served on the event loops")
	}
	return h
}

// h2Event is a frame from the gateway, as far as the tests look at it.
type h2Event struct {
	typ    http2.FrameType
	stream uint32
	flags  http2.Flags
	code   http2.ErrCode
	status int
	fields []hpack.HeaderField
	data   []byte
	incr   uint32
}

// rawOpts shapes a raw HTTP/2 client.
type rawOpts struct {
	// settings go in the client's first SETTINGS.
	settings []http2.Setting
	// connWindow is added to the connection's receive window at once.
	connWindow uint32
	// noReader: nothing reads what the gateway sends.
	noReader bool
	// autoWindow gives every DATA frame received back to its stream's
	// and the connection's windows.
	autoWindow bool
	// slow is how long the client takes over each DATA frame it reads
	// (in pauses of a millisecond or more).
	slow time.Duration
	// rcvbuf, when set, is the client socket's receive buffer.
	rcvbuf int
}

// rawH2 is an HTTP/2 client that writes frames as it is told: the
// attacker. A goroutine reads the gateway's frames into a list.
type rawH2 struct {
	t    *testing.T
	conn *tls.Conn
	opts rawOpts

	wmu sync.Mutex
	bw  *bufio.Writer
	w   *http2.Framer
	enc *hpack.Encoder
	blk bytes.Buffer
	// sent counts the DATA payload written per stream, and on stream 0
	// in all.
	sent map[uint32]int64

	mu     sync.Mutex
	events []h2Event
	cursor int
	// received counts the DATA payload read per stream; credit the
	// WINDOW_UPDATE increments per stream (0: the connection).
	received, credit map[uint32]int64
	// initialWindow is the gateway's SETTINGS_INITIAL_WINDOW_SIZE.
	initialWindow int64
	closed        bool
	rerr          error
	notify        chan struct{}
	gate          chan struct{}
	// budget, when positive, is the DATA the reader reads before it
	// pauses again.
	budget int64
}

// dialH2 connects to a gateway's TLS listener with ALPN h2 and sends the
// preface and SETTINGS.
func dialH2(t *testing.T, addr string, o rawOpts) *rawH2 {
	t.Helper()
	d := &net.Dialer{}
	if o.rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, o.rcvbuf)
			})
			return errors.Join(err, serr)
		}
	}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{
		ServerName:         "ws.example.com",
		InsecureSkipVerify: true, //nolint:gosec // a self-signed test certificate
		NextProtos:         []string{"h2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q, want h2", p)
	}
	c := &rawH2{t: t, conn: conn, opts: o, sent: map[uint32]int64{}, received: map[uint32]int64{}, credit: map[uint32]int64{},
		initialWindow: 65535, notify: make(chan struct{}, 1)}
	c.bw = bufio.NewWriterSize(conn, 64<<10)
	c.w = http2.NewFramer(c.bw, nil)
	c.w.AllowIllegalWrites = true
	c.enc = hpack.NewEncoder(&c.blk)
	err = c.write(func(w *http2.Framer) error {
		if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
			return err
		}
		if err := w.WriteSettings(o.settings...); err != nil {
			return err
		}
		if o.connWindow > 0 {
			return w.WriteWindowUpdate(0, o.connWindow)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !o.noReader {
		go c.read()
	}
	return c
}

// write runs f with the client's framer and sends what it wrote.
func (c *rawH2) write(f func(w *http2.Framer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := f(c.w); err != nil {
		return err
	}
	return c.bw.Flush()
}

// block is the HPACK encoding of name, value pairs (under wmu).
func (c *rawH2) block(pairs []string) []byte {
	c.blk.Reset()
	for i := 0; i+1 < len(pairs); i += 2 {
		_ = c.enc.WriteField(hpack.HeaderField{Name: pairs[i], Value: pairs[i+1]})
	}
	return append([]byte(nil), c.blk.Bytes()...)
}

// writeHeaders writes the header block of pairs on stream id, in
// CONTINUATION frames past 16 KiB (under wmu).
func (c *rawH2) writeHeaders(w *http2.Framer, id uint32, end bool, pairs []string) error {
	blk := c.block(pairs)
	first := true
	for first || len(blk) > 0 {
		frag := blk[:min(len(blk), 16384)]
		blk = blk[len(frag):]
		var err error
		if first {
			err = w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(blk) == 0})
		} else {
			err = w.WriteContinuation(id, len(blk) == 0, frag)
		}
		if err != nil {
			return err
		}
		first = false
	}
	return nil
}

// headers sends a request of pairs on stream id.
func (c *rawH2) headers(id uint32, end bool, pairs ...string) {
	c.t.Helper()
	if err := c.write(func(w *http2.Framer) error { return c.writeHeaders(w, id, end, pairs) }); err != nil {
		c.t.Fatalf("HEADERS on stream %d: %v", id, err)
	}
}

// wsRequestFields are an extended CONNECT for a websocket at path, and
// extra fields.
func wsRequestFields(path string, extra ...string) []string {
	return append([]string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", path,
		":authority", "ws.example.com", "sec-websocket-version", "13"}, extra...)
}

// data sends p on stream id in frames of up to 16 KiB, counted in sent.
func (c *rawH2) data(id uint32, p []byte) error {
	return c.write(func(w *http2.Framer) error {
		for len(p) > 0 {
			n := min(len(p), 16384)
			if err := w.WriteData(id, false, p[:n]); err != nil {
				return err
			}
			c.sent[id] += int64(n)
			c.sent[0] += int64(n)
			p = p[n:]
		}
		return nil
	})
}

// sentOn is the DATA payload sent on stream id.
func (c *rawH2) sentOn(id uint32) int64 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.sent[id]
}

// window is what the client may send on stream id now.
func (c *rawH2) window(id uint32) int64 {
	c.wmu.Lock()
	sentOn, sentAll := c.sent[id], c.sent[0]
	c.wmu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	return min(c.initialWindow+c.credit[id]-sentOn, 65535+c.credit[0]-sentAll)
}

// read reads the gateway's frames into the list until the connection
// ends.
func (c *rawH2) read() {
	rd := http2.NewFramer(nil, c.conn)
	rd.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var debt time.Duration
	for {
		c.mu.Lock()
		gate := c.gate
		c.mu.Unlock()
		if gate != nil {
			<-gate
		}
		f, err := rd.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				continue
			}
			c.mu.Lock()
			c.closed, c.rerr = true, err
			c.mu.Unlock()
			c.wake()
			return
		}
		h := f.Header()
		ev := h2Event{typ: h.Type, stream: h.StreamID, flags: h.Flags}
		keep := true
		switch f := f.(type) {
		case *http2.DataFrame:
			c.mu.Lock()
			c.received[h.StreamID] += int64(len(f.Data()))
			if c.budget > 0 {
				if c.budget -= int64(len(f.Data())); c.budget <= 0 && c.gate == nil {
					c.gate = make(chan struct{})
				}
			}
			// The frames are kept for the first MiB of a stream only (and
			// its end): a pod may send without end.
			keep = c.received[h.StreamID] <= 1<<20 || h.Flags.Has(http2.FlagDataEndStream)
			c.mu.Unlock()
			if keep {
				ev.data = append([]byte(nil), f.Data()...)
			}
			if debt += c.opts.slow; debt >= time.Millisecond {
				time.Sleep(debt)
				debt = 0
			}
			if n := h.Length; c.opts.autoWindow && n > 0 {
				_ = c.write(func(w *http2.Framer) error {
					_ = w.WriteWindowUpdate(h.StreamID, n)
					return w.WriteWindowUpdate(0, n)
				})
			}
		case *http2.MetaHeadersFrame:
			ev.fields = f.Fields
			ev.status, _ = strconv.Atoi(f.PseudoValue("status"))
		case *http2.RSTStreamFrame:
			ev.code = f.ErrCode
		case *http2.GoAwayFrame:
			ev.code = f.ErrCode
		case *http2.WindowUpdateFrame:
			ev.incr = f.Increment
			c.mu.Lock()
			c.credit[h.StreamID] += int64(f.Increment)
			c.mu.Unlock()
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok && !f.IsAck() {
				c.mu.Lock()
				c.initialWindow = int64(v)
				c.mu.Unlock()
			}
			if !f.IsAck() {
				_ = c.write(func(w *http2.Framer) error { return w.WriteSettingsAck() })
			}
		case *http2.PingFrame:
			ev.data = append([]byte(nil), f.Data[:]...)
		}
		if keep {
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.mu.Unlock()
			c.wake()
		}
	}
}

func (c *rawH2) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// pause stops reading the gateway's frames (after the one being read);
// resume reads on.
func (c *rawH2) pause() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gate == nil {
		c.gate = make(chan struct{})
	}
}

func (c *rawH2) resume() { c.readSome(0) }

// readSome resumes reading for n bytes of DATA (0: without end).
func (c *rawH2) readSome(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.budget = n
	if c.gate != nil {
		close(c.gate)
		c.gate = nil
	}
}

// next is the next frame that match takes, the frames before it passed
// over; false once within passed or the connection ended.
func (c *rawH2) next(within time.Duration, match func(h2Event) bool) (h2Event, bool) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		for c.cursor < len(c.events) {
			ev := c.events[c.cursor]
			c.cursor++
			if match(ev) {
				c.mu.Unlock()
				return ev, true
			}
		}
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return h2Event{}, false
		}
		select {
		case <-c.notify:
		case <-deadline.C:
			return h2Event{}, false
		}
	}
}

// count is how many frames read so far match takes.
func (c *rawH2) count(match func(h2Event) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ev := range c.events {
		if match(ev) {
			n++
		}
	}
	return n
}

// answer waits for the gateway's answer on stream id: its status, or
// the code it reset the stream with.
func (c *rawH2) answer(id uint32) (status int, code http2.ErrCode) {
	c.t.Helper()
	ev, ok := c.next(5*time.Second, func(ev h2Event) bool {
		return ev.stream == id && (ev.typ == http2.FrameHeaders || ev.typ == http2.FrameRSTStream)
	})
	if !ok {
		c.mu.Lock()
		err := c.rerr
		c.mu.Unlock()
		c.t.Fatalf("no answer on stream %d (connection: %v)", id, err)
	}
	return ev.status, ev.code
}

// ping sends a PING and waits for its ACK: the gateway has taken every
// frame sent before it.
func (c *rawH2) ping() bool {
	c.t.Helper()
	var data [8]byte
	binary.BigEndian.PutUint64(data[:], uint64(time.Now().UnixNano()))
	if err := c.write(func(w *http2.Framer) error { return w.WritePing(false, data) }); err != nil {
		return false
	}
	_, ok := c.next(5*time.Second, func(ev h2Event) bool {
		return ev.typ == http2.FramePing && ev.flags.Has(http2.FlagPingAck) && bytes.Equal(ev.data, data[:])
	})
	return ok
}

// ended reports whether the gateway closed the connection.
func (c *rawH2) ended() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// waitEnded waits until the gateway closed the connection.
func (c *rawH2) waitEnded(within time.Duration) bool {
	deadline := time.Now().Add(within)
	for !c.ended() {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-c.notify:
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true
}

// body reads the DATA of an answer on stream id up to its END_STREAM,
// showing each frame to each (if not nil), and fails the test if the
// stream ends otherwise.
func (c *rawH2) body(id uint32, each func(h2Event)) []byte {
	c.t.Helper()
	var got []byte
	for {
		ev, ok := c.next(5*time.Second, func(ev h2Event) bool {
			return ev.stream == id && (ev.typ == http2.FrameData || ev.typ == http2.FrameRSTStream)
		})
		if !ok || ev.typ != http2.FrameData {
			c.t.Fatalf("the body ended after %d bytes: %+v", len(got), ev)
		}
		if each != nil {
			each(ev)
		}
		got = append(got, ev.data...)
		if ev.flags.Has(http2.FlagDataEndStream) {
			return got
		}
	}
}

// open opens a websocket to path on stream id, and fails the test
// unless the gateway answers 200.
func (c *rawH2) open(id uint32, path string) {
	c.t.Helper()
	c.headers(id, false, wsRequestFields(path)...)
	if status, code := c.answer(id); status != http.StatusOK {
		c.t.Fatalf("stream %d to %s: status %d, reset %v", id, path, status, code)
	}
}

// echo sends a text message on stream id and returns the pod's echo.
func (c *rawH2) echo(id uint32, msg string) string {
	c.t.Helper()
	if err := c.data(id, maskedFrame(0x1, msg)); err != nil {
		c.t.Fatalf("stream %d: %v", id, err)
	}
	var got []byte
	for len(got) < 2 || len(got) < 2+int(got[1]&0x7f) {
		ev, ok := c.next(5*time.Second, func(ev h2Event) bool {
			return ev.stream == id && (ev.typ == http2.FrameData || ev.typ == http2.FrameRSTStream)
		})
		if !ok || ev.typ != http2.FrameData {
			c.t.Fatalf("stream %d: no echo of %q (got %q)", id, msg, got)
		}
		got = append(got, ev.data...)
	}
	return string(got[2:])
}

// onlyDialed fails the test if g dialled any address but want's.
func onlyDialed(t *testing.T, g *testGateway, want ...string) {
	t.Helper()
	for _, a := range g.dialedAddrs() {
		found := false
		for _, w := range want {
			found = found || a == w
		}
		if !found {
			t.Errorf("the gateway dialled %s", a)
		}
	}
	if canaryHits() != 0 {
		t.Error("the canary was reached")
	}
}

// h2Held is what the gateway holds for the client of raw on the
// connection's loop: the TLS bytes its socket did not take and the
// HTTP/2 output not written yet; -1 once the connection ended, -2 if
// the loop does not answer.
func h2Held(g *testGateway, raw *rawH2) int {
	g.srv.h2live.mu.Lock()
	var c *h2Conn
	for lc := range g.srv.h2live.conns {
		if lc.remote == raw.conn.LocalAddr().String() {
			c = lc
		}
	}
	g.srv.h2live.mu.Unlock()
	if c == nil {
		return -1
	}
	held := make(chan int, 1)
	c.loop.Post(func() {
		if c.ended {
			held <- -1
			return
		}
		held <- len(c.out.out) + len(c.p.Output())
	})
	select {
	case n := <-held:
		return n
	case <-time.After(5 * time.Second):
		return -2
	}
}

// mostHeld samples h2Held until stop is closed, and returns the most
// seen, or -1 if the connection ended meanwhile.
func mostHeld(g *testGateway, raw *rawH2, stop <-chan struct{}) <-chan int {
	most := make(chan int, 1)
	go func() {
		m := 0
		for {
			n := h2Held(g, raw)
			if n < 0 {
				most <- n
				return
			}
			m = max(m, n)
			select {
			case <-stop:
				most <- m
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return most
}

// steady waits until n stops moving for a while, and returns it.
func steady(t *testing.T, what string, n func() int64) int64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last := n()
	for {
		time.Sleep(300 * time.Millisecond)
		now := n()
		if now == last {
			return now
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still moving after 10 s: %d", what, now)
		}
		last = now
	}
}

// firehose is a pod script: a valid upgrade, then a binary frame that
// never ends, written as fast as the gateway takes it; written counts
// what the pod's socket took.
func firehose(written *atomic.Int64) podScript {
	return func(pc *podConn) {
		if !pc.readHead() {
			return
		}
		_, req, _, _ := pc.recorded()
		head := strings.ReplaceAll(ok101, "{accept}", acceptKey(req.Header.Get("Sec-WebSocket-Key")))
		frame := []byte{0x82, 127, 0, 0, 1, 0, 0, 0, 0, 0}
		if _, err := pc.c.Write(append([]byte(head), frame...)); err != nil {
			return
		}
		chunk := bytes.Repeat([]byte("p"), 64<<10)
		for {
			_ = pc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			n, err := pc.c.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}
}

// TestHTTP2AttackRapidReset: a client that opens streams and resets them
// at once (CVE-2023-44487) gets no more handshakes running than the
// connection's 250 concurrent streams: a stream counts until its
// handshake is over, whatever the client did with it, and the streams
// beyond are refused. The connection, and other clients, go on.
func TestHTTP2AttackRapidReset(t *testing.T) {
	h := startLoopsH2(t, Options{HandshakeTimeout: 5 * time.Second})
	echo := echoPod(t, "127.0.0.2")
	hang := startFakePod(t, "127.0.0.3", silent)
	h.g.publish(testRoute("echo", "/e", backendOf("p", echo), hang.backend("h")))
	c := dialH2(t, h.tlsAddr, rawOpts{})
	const streams = 2000
	for first := uint32(1); first < 2*streams; first += 200 {
		err := c.write(func(w *http2.Framer) error {
			for id := first; id < first+200; id += 2 {
				if err := c.writeHeaders(w, id, false, wsRequestFields("/e/127.0.0.3/x")); err != nil {
					return err
				}
				if err := w.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("the gateway stopped taking streams: %v", err)
		}
	}
	if !c.ping() {
		t.Fatal("no PING answer after the resets")
	}
	refused := c.count(func(ev h2Event) bool { return ev.typ == http2.FrameRSTStream && ev.code == http2.ErrCodeRefusedStream })
	if refused != streams-250 {
		t.Errorf("%d streams refused, want all but the 250 whose handshakes still run (%d)", refused, streams-250)
	}
	waitFor(t, "the admitted handshakes' dials", func() bool { return hang.accepted() >= 250 })
	time.Sleep(100 * time.Millisecond)
	if n := hang.accepted(); n != 250 {
		t.Errorf("the pod got %d connections at once, want the 250 streams' handshakes", n)
	}
	// The connection answers and still refuses new streams while they
	// run; another client is served.
	c.headers(2*streams+1, false, wsRequestFields("/e/127.0.0.2/x")...)
	if _, code := c.answer(2*streams + 1); code != http2.ErrCodeRefusedStream {
		t.Errorf("a stream while 250 handshakes run: reset %v, want REFUSED_STREAM", code)
	}
	if _, s := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/other", nil); s == nil || s.echo(t, "other") != "other" {
		t.Fatal("another client was not served")
	}
	// Once the pod hangs up, the handshakes end and the connection takes
	// streams again.
	hang.close()
	id := uint32(2*streams + 3)
	waitFor(t, "a stream taken again", func() bool {
		c.headers(id, false, wsRequestFields("/e/127.0.0.2/x")...)
		status, _ := c.answer(id)
		id += 2
		return status == http.StatusOK
	})
	if got := c.echo(id-2, "after"); got != "after" {
		t.Errorf("echo %q", got)
	}
	onlyDialed(t, h.g, echo.Addr, hang.addr.String())
}

// TestHTTP2AttackContinuationFlood: a header block that never ends
// (CONTINUATION frames without END_HEADERS) closes the connection with
// ENHANCE_YOUR_CALM once it passes the bound, without a dial.
func TestHTTP2AttackContinuationFlood(t *testing.T) {
	h := startLoopsH2(t, Options{})
	c := dialH2(t, h.tlsAddr, rawOpts{})
	// The client's SETTINGS ACK goes before the header block: a frame
	// inside it would end the connection with PROTOCOL_ERROR instead.
	if !c.ping() {
		t.Fatal("no PING answer")
	}
	frag := bytes.Repeat([]byte{0x40}, 16384)
	written := make(chan int64, 1)
	go func() {
		var n int64
		err := c.write(func(w *http2.Framer) error {
			return w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.block(wsRequestFields("/e/127.0.0.2/x"))})
		})
		for ; err == nil && n < 16<<20; n += int64(len(frag)) {
			err = c.write(func(w *http2.Framer) error { return w.WriteContinuation(1, false, frag) })
		}
		written <- n
	}()
	ev, ok := c.next(5*time.Second, func(ev h2Event) bool { return ev.typ == http2.FrameGoAway })
	if !ok || ev.code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v (%v), want ENHANCE_YOUR_CALM", ev.code, ok)
	}
	if !c.waitEnded(5 * time.Second) {
		t.Fatal("the connection stayed open")
	}
	if n := <-written; n >= 16<<20 {
		t.Errorf("the gateway took %d bytes of one header block", n)
	}
	onlyDialed(t, h.g)
}

// TestHTTP2AttackOversizedHeaders: header fields over the bound, and an
// HPACK block that references one dynamic table entry thousands of times
// (a few KiB decoding to megabytes), are answered 431 without a dial and
// without the gateway decoding them whole; the connection goes on.
func TestHTTP2AttackOversizedHeaders(t *testing.T) {
	h := startLoopsH2(t, Options{MaxHeaderBytes: 8 << 10})
	c := dialH2(t, h.tlsAddr, rawOpts{})
	big := wsRequestFields("/e/127.0.0.2/x")
	for i := range 10 {
		big = append(big, fmt.Sprintf("x-big-%d", i), strings.Repeat("v", 1000))
	}
	c.headers(1, false, big...)
	if status, code := c.answer(1); status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("10 KB of fields over an 8 KiB bound: status %d, reset %v, want 431", status, code)
	}
	bomb := wsRequestFields("/e/127.0.0.2/x")
	value := strings.Repeat("b", 4000)
	for range 3000 {
		bomb = append(bomb, "x-bomb", value)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range 10 {
		id := uint32(3 + 2*i)
		c.headers(id, false, bomb...)
		if status, code := c.answer(id); status != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("an HPACK bomb of 12 MB: status %d, reset %v, want 431", status, code)
		}
	}
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 32<<20 {
		t.Errorf("10 HPACK bombs of 12 MB each: %d MiB allocated", grown>>20)
	}
	onlyDialed(t, h.g)
	c.open(101, "/e/127.0.0.2/x")
	if got := c.echo(101, "after"); got != "after" {
		t.Errorf("echo %q", got)
	}
}

// TestHTTP2AttackControlFloodWithoutReading: a client that floods PING
// and SETTINGS frames (each answered) and never reads the answers is
// disconnected once their answers pile up, rather than held in memory
// without bound.
func TestHTTP2AttackControlFloodWithoutReading(t *testing.T) {
	h := startLoopsH2(t, Options{})
	c := dialH2(t, h.tlsAddr, rawOpts{noReader: true})
	var batch bytes.Buffer
	fr := http2.NewFramer(&batch, nil)
	for i := range 1024 {
		_ = fr.WritePing(false, [8]byte{byte(i)})
		if i%8 == 0 {
			_ = fr.WriteSettings()
		}
	}
	const most = 128 << 20
	written, start := 0, time.Now()
	var err error
	for written < most && time.Since(start) < 15*time.Second {
		_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		var n int
		n, err = c.conn.Write(batch.Bytes())
		written += n
		if err != nil {
			break
		}
	}
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("after %d MiB of PING and SETTINGS in %v: %v, want the connection closed", written>>20, time.Since(start).Round(time.Millisecond), err)
	}
	waitFor(t, "the connection's end", func() bool { return h2Held(h.g, c) < 0 })
	t.Logf("closed after %d MiB", written>>20)
}

// TestHTTP2AttackDataBeyondTheWindow: DATA beyond a stream's window
// while its handshake runs (the gateway holds those bytes for the pod)
// resets the stream with FLOW_CONTROL_ERROR; the connection goes on.
func TestHTTP2AttackDataBeyondTheWindow(t *testing.T) {
	h := startLoopsH2(t, Options{})
	echo := echoPod(t, "127.0.0.2")
	hang := startFakePod(t, "127.0.0.3", silent)
	h.g.publish(testRoute("echo", "/e", backendOf("p", echo), hang.backend("h")))
	c := dialH2(t, h.tlsAddr, rawOpts{})
	c.headers(1, false, wsRequestFields("/e/127.0.0.3/x")...)
	if !c.ping() {
		t.Fatal("no PING answer")
	}
	if w := c.window(1); w != 64<<10 {
		t.Fatalf("a stream's window of %d, want 64 KiB", w)
	}
	if err := c.data(1, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if err := c.data(1, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, code := c.answer(1); code != http2.ErrCodeFlowControl {
		t.Fatalf("one byte beyond the window: reset %v, want FLOW_CONTROL_ERROR", code)
	}
	c.open(3, "/e/127.0.0.2/x")
	if got := c.echo(3, "on"); got != "on" {
		t.Errorf("echo %q", got)
	}
	// The reset may come before or after the handshake dialled the pod;
	// either way no byte of the stream reaches it.
	for i := range hang.accepted() {
		if _, _, after, _ := hang.conn(i).recorded(); len(after) != 0 {
			t.Errorf("the pod got %d bytes of a stream that never opened", len(after))
		}
	}
}

// TestHTTP2StreamToADeafPodHoldsItsWindowOnly: a client that sends to a
// pod that reads nothing gets no window back once the pod's socket is
// full: the gateway holds at most the stream's 64 KiB for it, and gives
// back to the window only what the pod's socket took. The other streams
// of the connection go on; a byte beyond the window resets the stream,
// and never reaches the pod.
func TestHTTP2StreamToADeafPodHoldsItsWindowOnly(t *testing.T) {
	h := startLoopsH2(t, Options{})
	echo := echoPod(t, "127.0.0.2")
	listen := make(chan struct{})
	var got atomic.Int64
	deaf := startFakePod(t, "127.0.0.3", func(pc *podConn) {
		if !pc.readHead() {
			return
		}
		_, req, _, _ := pc.recorded()
		if _, err := pc.c.Write([]byte(strings.ReplaceAll(ok101, "{accept}", acceptKey(req.Header.Get("Sec-WebSocket-Key"))))); err != nil {
			return
		}
		select {
		case <-listen:
		case <-time.After(8 * time.Second):
			return
		}
		n, _ := io.Copy(io.Discard, pc.br)
		got.Store(n)
	})
	h.g.publish(testRoute("echo", "/e", backendOf("p", echo), deaf.backend("d")))
	c := dialH2(t, h.tlsAddr, rawOpts{})
	c.open(1, "/e/127.0.0.3/deaf")
	c.open(3, "/e/127.0.0.2/live")
	// One masked binary frame of 2^40 bytes, sent while the windows
	// allow.
	if err := c.data(1, []byte{0x82, 0xff, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("c"), 16384)
	const most = 128 << 20
	for c.sentOn(1) < most {
		if w := c.window(1); w > 0 {
			if err := c.data(1, chunk[:min(w, int64(len(chunk)))]); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, ok := c.next(300*time.Millisecond, func(ev h2Event) bool {
			return ev.typ == http2.FrameWindowUpdate && (ev.stream == 1 || ev.stream == 0)
		}); !ok {
			break
		}
	}
	sent := c.sentOn(1)
	if sent >= most {
		t.Fatalf("%d MiB taken for a pod that reads nothing", sent>>20)
	}
	for i := range 3 {
		msg := fmt.Sprintf("live %d", i)
		if got := c.echo(3, msg); got != msg {
			t.Fatalf("the other stream: %q", got)
		}
	}
	if !c.ping() || c.window(1) != 0 {
		t.Fatalf("window %d after the PING, want it still closed", c.window(1))
	}
	if err := c.data(1, []byte("!")); err != nil {
		t.Fatal(err)
	}
	if _, code := c.answer(1); code != http2.ErrCodeFlowControl {
		t.Fatalf("a byte beyond the window: reset %v, want FLOW_CONTROL_ERROR", code)
	}
	close(listen)
	deaf.conn(0).wait(t)
	took := got.Load()
	if took > sent {
		t.Errorf("the pod got %d bytes, %d more than the client sent within its window", took, took-sent)
	}
	if held := sent - took; held > 64<<10 {
		t.Errorf("the gateway held %d bytes for the pod, over the stream's window of 64 KiB", held)
	}
	t.Logf("sent %d KiB, the pod's socket took %d KiB", sent>>10, took>>10)
	if got := c.echo(3, "still"); got != "still" {
		t.Errorf("the other stream: %q", got)
	}
}

// TestHTTP2ZeroWindowClientHoldsBackThePod: a client whose windows are
// 0 (SETTINGS_INITIAL_WINDOW_SIZE 0) gets its websocket's answer and
// none of the pod's bytes, and the gateway stops reading the pod rather
// than holding its bytes; the pod's bytes go as the client opens the
// window, no more.
func TestHTTP2ZeroWindowClientHoldsBackThePod(t *testing.T) {
	h := startLoopsH2(t, Options{})
	var written atomic.Int64
	fire := startFakePod(t, "127.0.0.4", firehose(&written))
	h.g.publish(testRoute("echo", "/e", fire.backend("f")))
	c := dialH2(t, h.tlsAddr, rawOpts{settings: []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 0}}})
	c.open(1, "/e/127.0.0.4/x")
	total := steady(t, "the pod's writes", written.Load)
	if total > 64<<20 {
		t.Errorf("the pod wrote %d MiB to a client that takes nothing", total>>20)
	}
	if held := h2Held(h.g, c); held < 0 || held > 16<<10 {
		t.Errorf("the gateway holds %d bytes for the client", held)
	}
	if !c.ping() {
		t.Fatal("no PING answer")
	}
	if n := c.count(func(ev h2Event) bool { return ev.typ == http2.FrameData }); n != 0 {
		t.Fatalf("%d DATA frames to a window of 0", n)
	}
	if err := c.write(func(w *http2.Framer) error { return w.WriteWindowUpdate(1, 1000) }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the window's 1000 bytes", func() bool { return c.receivedOn(1) >= 1000 })
	time.Sleep(200 * time.Millisecond)
	if n := c.receivedOn(1); n != 1000 {
		t.Errorf("%d bytes for a window of 1000", n)
	}
}

// receivedOn is the DATA payload read on stream id.
func (c *rawH2) receivedOn(id uint32) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.received[id]
}

// TestHTTP2PodFloodForAClientThatDoesNotRead: pods that send without end
// to a client that stopped reading its connection, then opened every
// stream's window at once: the gateway stops reading the pods once
// 256 KiB wait for the client, holds little more, keeps the connection,
// and goes on once the client reads again; other clients are served
// meanwhile.
func TestHTTP2PodFloodForAClientThatDoesNotRead(t *testing.T) {
	h := startLoopsH2(t, Options{})
	echo := echoPod(t, "127.0.0.2")
	var written atomic.Int64
	fire := startFakePod(t, "127.0.0.4", firehose(&written))
	h.g.publish(testRoute("echo", "/e", backendOf("p", echo), fire.backend("f")))
	c := dialH2(t, h.tlsAddr, rawOpts{settings: []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 0}}, connWindow: 1 << 30, autoWindow: true, rcvbuf: 64 << 10})
	const streams = 16
	for i := range uint32(streams) {
		c.open(2*i+1, fmt.Sprintf("/e/127.0.0.4/%d", i))
	}
	// The pods fill their sockets; then every stream's window opens for
	// a client that reads nothing.
	steady(t, "the pods' writes", written.Load)
	c.pause()
	stop := make(chan struct{})
	most := mostHeld(h.g, c, stop)
	if err := c.write(func(w *http2.Framer) error {
		return w.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	}); err != nil {
		t.Fatal(err)
	}
	steady(t, "the pods' writes", written.Load)
	if h2Held(h.g, c) < 0 {
		t.Fatal("the gateway closed the connection of a client that reads slowly")
	}
	if _, s := h.open(t, http.MethodConnect, "websocket", "/e/127.0.0.2/other", nil); s == nil || s.echo(t, "other") != "other" {
		t.Fatal("another client was not served")
	}
	var before [streams]int64
	for i := range uint32(streams) {
		before[i] = c.receivedOn(2*i + 1)
	}
	c.resume()
	waitFor(t, "the pods' bytes again", func() bool {
		for i := range uint32(streams) {
			if c.receivedOn(2*i+1) < before[i]+1<<20 {
				return false
			}
		}
		return true
	})
	close(stop)
	if m := <-most; m < 0 || m > 512<<10 {
		t.Errorf("the gateway held up to %d KiB for the client (-1: it closed the connection)", m>>10)
	}
}

// TestHTTP2FloodingPodStarvesNoOtherStream: a pod that sends without end
// to a client slower than it takes no more than its share of the
// connection: another stream of the same connection still gets its
// bytes through.
func TestHTTP2FloodingPodStarvesNoOtherStream(t *testing.T) {
	h := startLoopsH2(t, Options{})
	echo := echoPod(t, "127.0.0.2")
	var written atomic.Int64
	fire := startFakePod(t, "127.0.0.4", firehose(&written))
	h.g.publish(testRoute("echo", "/e", backendOf("p", echo), fire.backend("f")))
	c := dialH2(t, h.tlsAddr, rawOpts{settings: []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1 << 30}}, connWindow: 1 << 30, slow: 300 * time.Microsecond, rcvbuf: 64 << 10})
	const floods = 2
	for i := range uint32(floods) {
		c.open(2*i+1, "/e/127.0.0.4/flood")
	}
	chat := uint32(2*floods + 1)
	c.open(chat, "/e/127.0.0.2/chat")
	waitFor(t, "the flood", func() bool { return c.receivedOn(1) > 1<<20 })
	for i := range 10 {
		msg := fmt.Sprintf("chat %d", i)
		if got := c.echo(chat, msg); got != msg {
			t.Fatalf("echo %q, want %q", got, msg)
		}
	}
}

// TestHTTP2PodRefusalIsRelayedWithinTheWindow: a pod's answer that is
// not an upgrade is relayed with its body at the pace of the client's
// window; a client that opens no window has its stream reset once the
// handshake timeout passed, and the pod's connection closed.
func TestHTTP2PodRefusalIsRelayedWithinTheWindow(t *testing.T) {
	h := startLoopsH2(t, Options{HandshakeTimeout: time.Second})
	body := bytes.Repeat([]byte("r"), 2000)
	refusing := startFakePod(t, "127.0.0.5", func(pc *podConn) {
		if !pc.readHead() {
			return
		}
		_, _ = pc.c.Write(append([]byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 2000\r\nX-Pod: refused\r\n\r\n"), body...))
		pc.drain()
	})
	h.g.publish(testRoute("echo", "/e", refusing.backend("r")))

	c := dialH2(t, h.tlsAddr, rawOpts{settings: []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 300}}, autoWindow: true})
	c.headers(1, false, wsRequestFields("/e/127.0.0.5/x")...)
	ev, ok := c.next(5*time.Second, func(ev h2Event) bool { return ev.stream == 1 && ev.typ == http2.FrameHeaders })
	if !ok || ev.status != http.StatusForbidden {
		t.Fatalf("the pod's refusal: %+v", ev)
	}
	for _, f := range ev.fields {
		if f.Name == "connection" || f.Name == "content-length" && f.Value != "2000" {
			t.Errorf("the answer has %s: %s", f.Name, f.Value)
		}
	}
	got := c.body(1, func(ev h2Event) {
		if len(ev.data) > 300 {
			t.Errorf("a DATA frame of %d bytes for a window of 300", len(ev.data))
		}
	})
	if !bytes.Equal(got, body) {
		t.Errorf("%d bytes of the pod's body relayed, want its 2000", len(got))
	}

	stalled := dialH2(t, h.tlsAddr, rawOpts{settings: []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 0}}})
	stalled.headers(1, false, wsRequestFields("/e/127.0.0.5/y")...)
	start := time.Now()
	if status, _ := stalled.answer(1); status != http.StatusForbidden {
		t.Fatalf("status %d", status)
	}
	if _, code := stalled.answer(1); code != http2.ErrCodeCancel {
		t.Errorf("the stream of a client that opens no window: reset %v, want CANCEL", code)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("reset after %v, want the handshake timeout of 1 s", d)
	}
	if n := stalled.receivedOn(1); n != 0 {
		t.Errorf("%d bytes to a window of 0", n)
	}
	refusing.conn(1).wait(t)
}

// TestHTTP2SlowClientIsClosed: a client that leaves the preface or a
// frame incomplete, even a byte at a time, is disconnected within the
// read-header timeout; one whose frames are complete is not.
func TestHTTP2SlowClientIsClosed(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h := startLoopsH2(t, Options{ReadHeaderTimeout: timeout})
	var settings bytes.Buffer
	_ = http2.NewFramer(&settings, nil).WriteSettings()
	start := append([]byte(http2.ClientPreface), settings.Bytes()...)
	var headers bytes.Buffer
	_ = http2.NewFramer(&headers, nil).WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: bytes.Repeat([]byte{0x40}, 1000), EndHeaders: false})
	cases := []struct {
		name string
		// sent is sent at once; trickle a byte at a time after it.
		sent, trickle []byte
	}{
		{"no preface", nil, nil},
		{"half a preface", []byte(http2.ClientPreface[:12]), nil},
		{"half a frame header", append(append([]byte(nil), start...), 0, 0, 10, 1), nil},
		{"a header block without its end", append(append([]byte(nil), start...), headers.Bytes()...), nil},
		{"a preface a byte at a time", nil, []byte(http2.ClientPreface)},
		{"a frame a byte at a time", start, headers.Bytes()[:200]},
	}
	for _, c := range cases {
		conn, err := tls.Dial("tcp", h.tlsAddr, &tls.Config{ServerName: "ws.example.com", InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // a self-signed test certificate
		if err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		closed := make(chan time.Duration, 1)
		go func() {
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.Copy(io.Discard, conn)
			closed <- time.Since(began)
		}()
		_, _ = conn.Write(c.sent)
		for i := 0; i < len(c.trickle); i++ {
			if _, err := conn.Write(c.trickle[i : i+1]); err != nil {
				break
			}
			select {
			case d := <-closed:
				closed <- d
				i = len(c.trickle)
			case <-time.After(timeout / 6):
			}
		}
		select {
		case d := <-closed:
			if d < timeout/2 || d > timeout+time.Second {
				t.Errorf("%s: closed after %v, want the read-header timeout of %v", c.name, d.Round(time.Millisecond), timeout)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s: still open after 5 s", c.name)
		}
		_ = conn.Close()
	}
	// Complete frames: the connection waits for streams longer.
	raw := dialH2(t, h.tlsAddr, rawOpts{})
	time.Sleep(3 * timeout)
	if !raw.ping() {
		t.Error("a connection without streams closed within the read-header timeout")
	}
}

// TestHTTP2AttackMalformedRequests: pseudo-header tricks, fields HTTP/2
// forbids, and paths or authorities aimed at addresses no route
// allowlists each get the status their HTTP/1.1 form gets, or a stream
// reset, on a connection that goes on; nothing is dialled.
func TestHTTP2AttackMalformedRequests(t *testing.T) {
	h := startLoopsH2(t, Options{})
	echo := echoPod(t, "127.0.0.2")
	other := echoPod(t, "127.0.0.3")
	otherRoute := testRoute("other", "/o", backendOf("o", other))
	otherRoute.Hosts = []string{"other.example.com"}
	h.g.publish(testRoute("echo", "/e", backendOf("p", echo)), otherRoute)
	canary := canaryAddr.String()
	req := func(method, protocol, path, authority string, extra ...string) []string {
		f := []string{":method", method}
		if protocol != "" {
			f = append(f, ":protocol", protocol)
		}
		if path != "" {
			f = append(f, ":scheme", "https", ":path", path)
		}
		if authority != "" {
			f = append(f, ":authority", authority)
		}
		return append(append(f, "sec-websocket-version", "13"), extra...)
	}
	ws := func(path string, extra ...string) []string {
		return req("CONNECT", "websocket", path, "ws.example.com", extra...)
	}
	cases := []struct {
		name   string
		fields []string
		// status is the answer, or 0 for a reset with PROTOCOL_ERROR.
		status int
	}{
		{"a second :path to the canary", ws("/e/127.0.0.2/x", ":path", "/e/"+canaryIP+"/x"), 0},
		{"a second :authority", ws("/e/127.0.0.2/x", ":authority", canary), 0},
		{"a pseudo-header after the fields", append(ws("/e/127.0.0.2/x"), ":path", "/e/"+canaryIP), 0},
		{"an upper-case name", ws("/e/127.0.0.2/x", "X-Pod", canaryIP), 0},
		{"connection", ws("/e/127.0.0.2/x", "connection", "upgrade"), 0},
		{"upgrade", ws("/e/127.0.0.2/x", "upgrade", "websocket"), 0},
		{"transfer-encoding", ws("/e/127.0.0.2/x", "transfer-encoding", "chunked"), 0},
		{"te: gzip", ws("/e/127.0.0.2/x", "te", "gzip"), 0},
		{"keep-alive", ws("/e/127.0.0.2/x", "keep-alive", "300"), 0},
		{"proxy-connection", ws("/e/127.0.0.2/x", "proxy-connection", "keep-alive"), 0},
		{"CR LF in a field", ws("/e/127.0.0.2/x", "x-a", "1\r\nHost: "+canary), 0},
		{"NUL in :path", ws("/e/127.0.0.2\x00/x"), 0},
		{":protocol on a GET", req("GET", "websocket", "/e/127.0.0.2/x", "ws.example.com"), 0},
		{"CONNECT with :path and without :protocol", req("CONNECT", "", "/e/127.0.0.2/x", "ws.example.com"), 0},
		{"CONNECT to the canary", req("CONNECT", "", "", canary), http.StatusMethodNotAllowed},
		{"another protocol", req("CONNECT", "webtransport", "/e/127.0.0.2/x", "ws.example.com"), http.StatusMethodNotAllowed},
		{":protocol WebSocket", req("CONNECT", "WebSocket", "/e/127.0.0.2/x", "ws.example.com"), http.StatusMethodNotAllowed},
		{"a GET", req("GET", "", "/e/127.0.0.2/x", "ws.example.com"), http.StatusUpgradeRequired},
		{"no Sec-WebSocket-Version", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/e/127.0.0.2/x", ":authority", "ws.example.com"}, http.StatusUpgradeRequired},
		{"the canary", ws("/e/" + canaryIP + "/x"), http.StatusNotFound},
		{"the canary behind a query", ws("/e/" + canaryIP + "?/e/127.0.0.2/x"), http.StatusNotFound},
		{"the canary percent-encoded", ws("/e/%31%32%37.0.0.250/x"), http.StatusBadRequest},
		{"dot segments to the canary", ws("/e/127.0.0.2/../" + canaryIP + "/x"), http.StatusBadRequest},
		{"encoded dot segments", ws("/e/127.0.0.2/%2e%2e/" + canaryIP), http.StatusBadRequest},
		{"a dot segment", ws("/e/./" + canaryIP + "/x"), http.StatusBadRequest},
		{"an empty segment", ws("/e//" + canaryIP + "/x"), http.StatusBadRequest},
		{"a backslash", ws("/e/127.0.0.2\\..\\" + canaryIP), http.StatusBadRequest},
		{"a fragment", ws("/e/127.0.0.2#/../" + canaryIP), http.StatusBadRequest},
		{"a space in the path", ws("/e/127.0.0.2 /x"), http.StatusBadRequest},
		{"a space in the query", ws("/e/127.0.0.2/x?a HTTP/1.0"), http.StatusBadRequest},
		{"no leading slash", ws("e/127.0.0.2/x"), http.StatusBadRequest},
		{"an absolute URI to the canary", ws("https://" + canary + "/e/127.0.0.2/x"), http.StatusBadRequest},
		{"an asterisk", ws("*"), http.StatusBadRequest},
		{"the canary as :authority", req("CONNECT", "websocket", "/e/127.0.0.2/x", canary), http.StatusMisdirectedRequest},
		{"userinfo in :authority", req("CONNECT", "websocket", "/e/127.0.0.2/x", canaryIP+"@ws.example.com"), http.StatusBadRequest},
		{"no :authority, a Host of another site", req("CONNECT", "websocket", "/o/127.0.0.3/x", "", "host", "other.example.com"), http.StatusMisdirectedRequest},
		{"a Host of another site beside :authority (malformed, RFC 9113 §8.3.1)", ws("/o/127.0.0.3/x", "host", "other.example.com"), http.StatusBadRequest},
		{"no :authority nor Host", req("CONNECT", "websocket", "/e/127.0.0.2/x", ""), http.StatusBadRequest},
	}
	c := dialH2(t, h.tlsAddr, rawOpts{})
	for i, tc := range cases {
		id := uint32(2*i + 1)
		c.headers(id, tc.fields[1] == "GET", tc.fields...)
		status, code := c.answer(id)
		switch {
		case tc.status == 0 && (status != 0 || code != http2.ErrCodeProtocol):
			t.Errorf("%s: status %d, reset %v, want a reset with PROTOCOL_ERROR", tc.name, status, code)
		case tc.status != 0 && status != tc.status:
			t.Errorf("%s: status %d, reset %v, want %d", tc.name, status, code, tc.status)
		}
		if n := h.g.dials.Load(); n != 0 {
			t.Fatalf("%s: dialled %v", tc.name, h.g.dialedAddrs())
		}
	}
	if c.ended() {
		t.Fatal("the connection ended")
	}
	// The same connection opens a websocket to an allowlisted pod.
	c.open(1001, "/e/127.0.0.2/x")
	if got := c.echo(1001, "ok"); got != "ok" {
		t.Errorf("echo %q", got)
	}
	onlyDialed(t, h.g, echo.Addr)
}
