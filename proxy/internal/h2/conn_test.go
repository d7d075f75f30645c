package h2

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// recorder is a Handler that records what the connection tells it.
type recorder struct {
	c        *Conn
	requests map[uint32]*Request
	streams  map[uint32]*Stream
	data     map[uint32]int
	ended    map[uint32]bool
	resets   map[uint32]bool
	writable map[uint32]int
	// consume gives data back to the stream's window as it comes.
	consume bool
}

func (h *recorder) NewStream() *Stream { return &Stream{} }

func (h *recorder) Request(s *Stream, r *Request) {
	h.requests[s.ID] = r
	h.streams[s.ID] = s
}

func (h *recorder) Data(s *Stream, p []byte) {
	h.data[s.ID] += len(p)
	if h.consume {
		h.c.Consumed(s, len(p))
	}
}

func (h *recorder) EndStream(s *Stream) { h.ended[s.ID] = true }
func (h *recorder) Reset(s *Stream)     { h.resets[s.ID] = true }
func (h *recorder) Writable(s *Stream)  { h.writable[s.ID]++ }

// peer is a client of a Conn: it writes frames with a Framer, feeds
// them to the Conn and reads the Conn's output back with another.
type peer struct {
	t   *testing.T
	c   *Conn
	h   *recorder
	out bytes.Buffer
	fr  *http2.Framer
	enc *hpack.Encoder
	blk bytes.Buffer
	in  bytes.Buffer
	rd  *http2.Framer
	// err is what the last Feed returned.
	err error
}

// frame is a frame the Conn wrote, as far as the tests look at it.
type frame struct {
	typ    http2.FrameType
	id     uint32
	flags  http2.Flags
	code   http2.ErrCode
	status string
	data   []byte
	incr   uint32
	last   uint32
}

func newPeer(t *testing.T, cfg Config, settings ...http2.Setting) *peer {
	t.Helper()
	h := &recorder{requests: map[uint32]*Request{}, streams: map[uint32]*Stream{}, data: map[uint32]int{},
		ended: map[uint32]bool{}, resets: map[uint32]bool{}, writable: map[uint32]int{}}
	p := &peer{t: t, h: h}
	p.c = NewConn(cfg, h)
	h.c = p.c
	p.fr = http2.NewFramer(&p.out, nil)
	p.fr.AllowIllegalWrites = true
	p.enc = hpack.NewEncoder(&p.blk)
	p.rd = http2.NewFramer(nil, &p.in)
	p.rd.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	p.rd.SetMaxReadFrameSize(1 << 24)
	p.out.WriteString(http2.ClientPreface)
	_ = p.fr.WriteSettings(settings...)
	if err := p.send(); err != nil {
		t.Fatalf("preface and SETTINGS: %v", err)
	}
	p.frames() // the server's SETTINGS, window and ACK
	return p
}

// send feeds what the client wrote to the Conn.
func (p *peer) send() error {
	p.err = p.c.Feed(p.out.Bytes())
	p.out.Reset()
	return p.err
}

// frames is what the Conn wrote since the last call.
func (p *peer) frames() []frame {
	p.t.Helper()
	p.in.Write(p.c.Output())
	p.c.Written(len(p.c.Output()))
	var fs []frame
	for {
		f, err := p.rd.ReadFrame()
		if errors.Is(err, io.EOF) {
			return fs
		}
		if err != nil {
			p.t.Fatalf("the server wrote an unreadable frame: %v", err)
		}
		h := f.Header()
		fr := frame{typ: h.Type, id: h.StreamID, flags: h.Flags}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			fr.code = f.ErrCode
		case *http2.GoAwayFrame:
			fr.code, fr.last = f.ErrCode, f.LastStreamID
		case *http2.MetaHeadersFrame:
			fr.status = f.PseudoValue("status")
		case *http2.DataFrame:
			fr.data = append([]byte(nil), f.Data()...)
		case *http2.WindowUpdateFrame:
			fr.incr = f.Increment
		}
		fs = append(fs, fr)
	}
}

// block is the HPACK encoding of name, value pairs.
func (p *peer) block(pairs ...string) []byte {
	p.blk.Reset()
	for i := 0; i+1 < len(pairs); i += 2 {
		_ = p.enc.WriteField(hpack.HeaderField{Name: pairs[i], Value: pairs[i+1]})
	}
	return append([]byte(nil), p.blk.Bytes()...)
}

// headers writes a HEADERS frame of pairs on stream id.
func (p *peer) headers(id uint32, end bool, pairs ...string) {
	_ = p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.block(pairs...), EndStream: end, EndHeaders: true})
}

// websocket is an extended CONNECT for path.
func websocket(path string) []string {
	return []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", path, ":authority", "ws.example.com"}
}

// count is the number of frames of fs of type typ (with code, for
// RST_STREAM and GOAWAY, unless code is -1).
func count(fs []frame, typ http2.FrameType, code int) int {
	n := 0
	for _, f := range fs {
		if f.typ == typ && (code < 0 || f.code == http2.ErrCode(code)) {
			n++
		}
	}
	return n
}

// goAway is the GOAWAY among fs, or fails the test.
func goAway(t *testing.T, fs []frame) frame {
	t.Helper()
	for _, f := range fs {
		if f.typ == http2.FrameGoAway {
			return f
		}
	}
	t.Fatalf("no GOAWAY among %v", fs)
	return frame{}
}

// reset is the RST_STREAM of stream id among fs, or fails the test.
func reset(t *testing.T, fs []frame, id uint32) http2.ErrCode {
	t.Helper()
	for _, f := range fs {
		if f.typ == http2.FrameRSTStream && f.id == id {
			return f.code
		}
	}
	t.Fatalf("no RST_STREAM of stream %d among %v", id, fs)
	return 0
}

// TestConnRapidResetIsBoundedByReleases: a client that opens streams and
// resets them at once (CVE-2023-44487) gets no more streams passed on
// than MaxConcurrentStreams: a stream counts until its handler releases
// it, whatever the client did with it, and the rest are refused.
func TestConnRapidResetIsBoundedByReleases(t *testing.T) {
	p := newPeer(t, Config{})
	const opened = 2000
	var fs []frame
	for id := uint32(1); id < 2*opened; id += 2 {
		p.headers(id, false, websocket("/e/127.0.0.2/x")...)
		_ = p.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		if id%64 == 1 {
			if err := p.send(); err != nil {
				t.Fatalf("stream %d: %v", id, err)
			}
			fs = append(fs, p.frames()...)
		}
	}
	if err := p.send(); err != nil {
		t.Fatal(err)
	}
	fs = append(fs, p.frames()...)
	if n := len(p.h.requests); n != 250 {
		t.Errorf("%d requests passed on, want the 250 of MaxConcurrentStreams", n)
	}
	if n := count(fs, http2.FrameRSTStream, int(http2.ErrCodeRefusedStream)); n != opened-250 {
		t.Errorf("%d streams refused, want %d", n, opened-250)
	}
	if n := len(p.h.resets); n != 250 {
		t.Errorf("the handler was told of %d resets, want 250", n)
	}
	if p.c.Streams() != 250 {
		t.Errorf("Streams() = %d, want 250 until the handler releases them", p.c.Streams())
	}
	// A release makes room for one stream, and one only.
	p.c.Release(p.h.streams[1])
	next := uint32(2*opened + 1)
	p.headers(next, false, websocket("/e/127.0.0.2/x")...)
	p.headers(next+2, false, websocket("/e/127.0.0.2/x")...)
	if err := p.send(); err != nil {
		t.Fatal(err)
	}
	fs = p.frames()
	if p.h.requests[next] == nil {
		t.Error("no stream passed on after a release")
	}
	if p.h.requests[next+2] != nil || reset(t, fs, next+2) != http2.ErrCodeRefusedStream {
		t.Error("a second stream passed on after one release")
	}
}

// TestConnContinuationFloodIsCutOff: a header block that never ends
// (CONTINUATION frames without END_HEADERS) ends the connection with
// ENHANCE_YOUR_CALM once it is past twice the header list size and two
// frames, holding no more than that meanwhile; no request is passed on.
func TestConnContinuationFloodIsCutOff(t *testing.T) {
	for _, size := range []int{16384, 1000, 0} {
		p := newPeer(t, Config{})
		limit := 2*int(DefaultConfig.MaxHeaderListSize) + 2*16384
		_ = p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.block(websocket("/e/127.0.0.2/x")...)})
		frag := bytes.Repeat([]byte{0x40}, size)
		fed := 0
		for p.err == nil {
			if fed > limit+2*(9+16384) {
				t.Fatalf("CONTINUATION of %d bytes: %d bytes of one header block taken", size, fed)
			}
			_ = p.fr.WriteContinuation(1, false, frag)
			fed += p.out.Len()
			_ = p.send()
			if len(p.c.in) > limit+9+16384 {
				t.Fatalf("CONTINUATION of %d bytes: %d bytes held", size, len(p.c.in))
			}
		}
		if g := goAway(t, p.frames()); g.code != http2.ErrCodeEnhanceYourCalm {
			t.Errorf("CONTINUATION of %d bytes: GOAWAY %v, want ENHANCE_YOUR_CALM", size, g.code)
		}
		if len(p.h.requests) != 0 || p.c.in != nil {
			t.Errorf("CONTINUATION of %d bytes: %d requests, %d bytes held after the end", size, len(p.h.requests), len(p.c.in))
		}
		// The connection takes nothing more.
		p.headers(3, true, websocket("/e/127.0.0.2/x")...)
		if err := p.send(); err == nil || len(p.h.requests) != 0 {
			t.Errorf("after the GOAWAY: Feed %v, %d requests", err, len(p.h.requests))
		}
	}
}

// TestConnOversizedFrameFailsAtItsHeader: a frame announcing more than
// SETTINGS_MAX_FRAME_SIZE ends the connection as soon as its header is
// read: its payload is never waited for.
func TestConnOversizedFrameFailsAtItsHeader(t *testing.T) {
	p := newPeer(t, Config{})
	p.out.Write([]byte{0xff, 0xff, 0xff, byte(http2.FrameData), 0, 0, 0, 0, 1})
	if err := p.send(); err == nil {
		t.Fatal("a 16 MiB frame announced: no error")
	}
	if g := goAway(t, p.frames()); g.code != http2.ErrCodeFrameSize {
		t.Errorf("GOAWAY %v, want FRAME_SIZE_ERROR", g.code)
	}
}

// TestConnHeaderListBounds: header fields over MaxHeaderListSize, and an
// HPACK block whose dynamic table entry is referenced thousands of times
// (a few KiB that decode to megabytes), reach the handler truncated to
// the bound (the gateway answers 431).
func TestConnHeaderListBounds(t *testing.T) {
	size := func(r *Request) int {
		n := 0
		for k, vs := range r.Header {
			for _, v := range vs {
				n += len(k) + len(v) + 32
			}
		}
		return n
	}
	t.Run("fields", func(t *testing.T) {
		p := newPeer(t, Config{MaxHeaderListSize: 4096})
		pairs := websocket("/e/127.0.0.2/x")
		for i := range 6 {
			pairs = append(pairs, "x-big-"+string(rune('a'+i)), strings.Repeat("v", 1000))
		}
		p.headers(1, false, pairs...)
		if err := p.send(); err != nil {
			t.Fatal(err)
		}
		r := p.h.requests[1]
		if r == nil || !r.Truncated || size(r) > 4096 {
			t.Fatalf("request %+v: want it truncated to 4096 bytes", r)
		}
	})
	t.Run("HPACK bomb", func(t *testing.T) {
		p := newPeer(t, Config{})
		pairs := websocket("/e/127.0.0.2/x")
		bomb := strings.Repeat("b", 4000)
		for range 4000 {
			pairs = append(pairs, "x-bomb", bomb)
		}
		blk := p.block(pairs...)
		if len(blk) > 16384 {
			t.Fatalf("the bomb takes %d bytes", len(blk))
		}
		_ = p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk, EndHeaders: true})
		if err := p.send(); err != nil {
			t.Fatal(err)
		}
		r := p.h.requests[1]
		if r == nil || !r.Truncated || size(r) > int(DefaultConfig.MaxHeaderListSize) {
			t.Fatalf("a block of %d bytes decoding to %d MB: want it truncated", len(blk), 4000*4038>>20)
		}
		// The connection goes on: the decoder's state is intact.
		p.headers(3, false, websocket("/e/127.0.0.2/y")...)
		if err := p.send(); err != nil || p.h.requests[3] == nil || p.h.requests[3].Path != "/e/127.0.0.2/y" {
			t.Fatalf("the next request: %v", err)
		}
	})
}

// TestConnFlowControl: a client may send no more than a stream's window
// before the handler consumes its bytes; windows over 2^31-1 are errors;
// the server sends no more than the client's windows.
func TestConnFlowControl(t *testing.T) {
	t.Run("DATA beyond the window", func(t *testing.T) {
		p := newPeer(t, Config{})
		p.headers(1, false, websocket("/e/127.0.0.2/x")...)
		p.headers(3, false, websocket("/e/127.0.0.2/y")...)
		chunk := make([]byte, 16384)
		for range 4 {
			_ = p.fr.WriteData(1, false, chunk)
		}
		if err := p.send(); err != nil {
			t.Fatal(err)
		}
		if fs := p.frames(); count(fs, http2.FrameRSTStream, -1) != 0 {
			t.Fatalf("the window's 64 KiB: %v", fs)
		}
		_ = p.fr.WriteData(1, false, []byte{1})
		if err := p.send(); err != nil {
			t.Fatalf("one byte over a stream's window: connection error %v, want a stream error", err)
		}
		if code := reset(t, p.frames(), 1); code != http2.ErrCodeFlowControl {
			t.Errorf("one byte over the window: RST_STREAM %v, want FLOW_CONTROL_ERROR", code)
		}
		if p.h.data[1] != 65536 || !p.h.resets[1] {
			t.Errorf("the handler got %d bytes (want the window's 65536) and reset %v", p.h.data[1], p.h.resets[1])
		}
		_ = p.fr.WriteData(3, false, []byte("other"))
		if err := p.send(); err != nil || p.h.data[3] != 5 {
			t.Errorf("the other stream: %v, %d bytes", err, p.h.data[3])
		}
	})
	t.Run("window given back as consumed", func(t *testing.T) {
		p := newPeer(t, Config{})
		p.h.consume = true
		p.headers(1, false, websocket("/e/127.0.0.2/x")...)
		window, sent := 65536, 0
		chunk := make([]byte, 16384)
		for sent < 4<<20 {
			if window < len(chunk) {
				t.Fatalf("window %d after %d bytes consumed", window, sent)
			}
			_ = p.fr.WriteData(1, false, chunk)
			window -= len(chunk)
			sent += len(chunk)
			if err := p.send(); err != nil {
				t.Fatal(err)
			}
			for _, f := range p.frames() {
				if f.typ == http2.FrameWindowUpdate && f.id == 1 {
					window += int(f.incr)
				}
				if f.typ == http2.FrameRSTStream {
					t.Fatalf("RST_STREAM %v", f.code)
				}
			}
		}
		if p.h.data[1] != sent {
			t.Errorf("the handler got %d bytes of %d", p.h.data[1], sent)
		}
	})
	t.Run("windows over 2^31-1", func(t *testing.T) {
		p := newPeer(t, Config{})
		p.headers(1, false, websocket("/e/127.0.0.2/x")...)
		_ = p.fr.WriteWindowUpdate(1, 1<<31-1)
		if err := p.send(); err != nil {
			t.Fatal(err)
		}
		if code := reset(t, p.frames(), 1); code != http2.ErrCodeFlowControl {
			t.Errorf("a stream's window over 2^31-1: RST_STREAM %v", code)
		}
		_ = p.fr.WriteWindowUpdate(0, 1<<31-1)
		if err := p.send(); err == nil {
			t.Error("the connection's window over 2^31-1: no error")
		}
		if g := goAway(t, p.frames()); g.code != http2.ErrCodeFlowControl {
			t.Errorf("GOAWAY %v, want FLOW_CONTROL_ERROR", g.code)
		}

		p = newPeer(t, Config{})
		p.headers(1, false, websocket("/e/127.0.0.2/x")...)
		_ = p.fr.WriteWindowUpdate(1, 1<<31-1-65535)
		_ = p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536})
		if err := p.send(); err == nil {
			t.Error("SETTINGS_INITIAL_WINDOW_SIZE that takes a stream's window over 2^31-1: no error")
		}
		if g := goAway(t, p.frames()); g.code != http2.ErrCodeFlowControl {
			t.Errorf("GOAWAY %v, want FLOW_CONTROL_ERROR", g.code)
		}
	})
	t.Run("the client's windows bound what is sent", func(t *testing.T) {
		p := newPeer(t, Config{}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		p.headers(1, false, websocket("/e/127.0.0.2/x")...)
		if err := p.send(); err != nil {
			t.Fatal(err)
		}
		s := p.h.streams[1]
		p.c.WriteHeaders(s, 200, nil, false)
		big := make([]byte, 1<<20)
		if n := p.c.WriteData(s, big, false); n != 0 || p.c.Sendable(s) != 0 {
			t.Fatalf("a zero window: %d bytes sent", n)
		}
		if n := count(p.frames(), http2.FrameData, -1); n != 0 {
			t.Fatalf("%d DATA frames to a zero window", n)
		}
		_ = p.fr.WriteWindowUpdate(1, 1000)
		if err := p.send(); err != nil {
			t.Fatal(err)
		}
		if p.h.writable[1] != 1 {
			t.Fatalf("Writable told %d times once the window opened", p.h.writable[1])
		}
		if n := p.c.WriteData(s, big, false); n != 1000 {
			t.Fatalf("%d bytes sent for a window of 1000", n)
		}
		// The connection's window (65535) bounds every stream's.
		_ = p.fr.WriteWindowUpdate(1, 1<<30)
		if err := p.send(); err != nil {
			t.Fatal(err)
		}
		if n := p.c.WriteData(s, big, false); n != 65535-1000 {
			t.Fatalf("%d bytes sent, want the rest of the connection's window %d", n, 65535-1000)
		}
		got := 0
		for _, f := range p.frames() {
			if f.typ == http2.FrameData {
				if len(f.data) > 16384 {
					t.Errorf("a DATA frame of %d bytes, over SETTINGS_MAX_FRAME_SIZE", len(f.data))
				}
				got += len(f.data)
			}
		}
		if got != 65535 {
			t.Errorf("%d bytes of DATA written, want 65535", got)
		}
	})
}

// TestConnStreamIDAbuse: stream identifiers a client may not use end the
// connection (RFC 9113 §5.1.1), and no request of them is passed on.
func TestConnStreamIDAbuse(t *testing.T) {
	ws := websocket("/e/127.0.0.2/x")
	cases := []struct {
		name  string
		write func(p *peer)
		code  http2.ErrCode
		// legit is how many requests came before the abuse.
		legit int
	}{
		{"HEADERS on an even stream", func(p *peer) { p.headers(2, true, ws...) }, http2.ErrCodeProtocol, 0},
		{"HEADERS on stream 0", func(p *peer) { p.headers(0, true, ws...) }, http2.ErrCodeProtocol, 0},
		{"a decreasing stream ID", func(p *peer) { p.headers(5, false, ws...); p.headers(3, false, ws...) }, http2.ErrCodeStreamClosed, 1},
		{"a closed stream reused", func(p *peer) {
			p.headers(1, false, ws...)
			_ = p.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			p.headers(1, false, ws...)
		}, http2.ErrCodeStreamClosed, 1},
		{"DATA on an idle stream", func(p *peer) { _ = p.fr.WriteData(7, false, []byte("x")) }, http2.ErrCodeProtocol, 0},
		{"WINDOW_UPDATE on an idle stream", func(p *peer) { _ = p.fr.WriteWindowUpdate(7, 1) }, http2.ErrCodeProtocol, 0},
		{"RST_STREAM on an idle stream", func(p *peer) { _ = p.fr.WriteRSTStream(7, http2.ErrCodeCancel) }, http2.ErrCodeProtocol, 0},
		{"DATA on stream 0", func(p *peer) { _ = p.fr.WriteData(0, false, []byte("x")) }, http2.ErrCodeProtocol, 0},
		{"PUSH_PROMISE", func(p *peer) {
			_ = p.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: p.block(ws...), EndHeaders: true})
		}, http2.ErrCodeProtocol, 0},
		{"trailers without END_STREAM", func(p *peer) { p.headers(1, false, ws...); p.headers(1, false, "x-t", "1") }, http2.ErrCodeProtocol, 1},
	}
	for _, c := range cases {
		p := newPeer(t, Config{})
		c.write(p)
		if err := p.send(); err == nil {
			t.Errorf("%s: no connection error", c.name)
			continue
		}
		if g := goAway(t, p.frames()); g.code != c.code {
			t.Errorf("%s: GOAWAY %v, want %v", c.name, g.code, c.code)
		}
		if len(p.h.requests) != c.legit {
			t.Errorf("%s: a request passed on", c.name)
		}
		// Every stream the handler had is reset, and nothing more comes.
		for id := range p.h.requests {
			if !p.h.resets[id] {
				t.Errorf("%s: stream %d not reset when the connection failed", c.name, id)
			}
		}
		p.headers(101, true, ws...)
		if err := p.send(); err == nil || len(p.h.requests) != c.legit {
			t.Errorf("%s: the failed connection took another frame", c.name)
		}
	}
}

// TestConnAfterGoAway: once the server said GOAWAY, new streams are not
// passed on; the open ones go on.
func TestConnAfterGoAway(t *testing.T) {
	p := newPeer(t, Config{})
	p.headers(1, false, websocket("/e/127.0.0.2/x")...)
	if err := p.send(); err != nil {
		t.Fatal(err)
	}
	p.c.GoAway()
	if g := goAway(t, p.frames()); g.code != http2.ErrCodeNo || g.last != 1 {
		t.Errorf("GOAWAY %v last stream %d, want NO_ERROR and 1", g.code, g.last)
	}
	p.headers(3, false, websocket("/e/127.0.0.2/y")...)
	_ = p.fr.WriteData(1, false, []byte("still"))
	if err := p.send(); err != nil {
		t.Fatal(err)
	}
	if p.h.requests[3] != nil {
		t.Error("a stream opened after the GOAWAY was passed on")
	}
	if p.h.data[1] != 5 {
		t.Errorf("the open stream got %d bytes after the GOAWAY", p.h.data[1])
	}
}

// TestConnMalformedRequests: requests that break RFC 9113 §8 (smuggling
// material once turned into HTTP/1.1) are reset with PROTOCOL_ERROR and
// never passed on.
func TestConnMalformedRequests(t *testing.T) {
	base := []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/e/127.0.0.2/x", ":authority", "ws.example.com"}
	with := func(extra ...string) []string { return append(append([]string(nil), base...), extra...) }
	cases := []struct {
		name  string
		pairs []string
		end   bool
	}{
		{"duplicate :path", with(":path", "/e/127.0.0.250/x"), false},
		{"duplicate :authority", with(":authority", "other.example.com"), false},
		{"duplicate :protocol", with(":protocol", "websocket"), false},
		{"unknown pseudo-header", with(":host", "x"), false},
		{"pseudo-header after a field", append(with("x-a", "1"), ":status", "200"), false},
		{"response pseudo-header", with(":status", "200"), false},
		{"upper-case name", with("X-Upper", "1"), false},
		{"connection", with("connection", "upgrade"), false},
		{"upgrade", with("upgrade", "websocket"), false},
		{"transfer-encoding", with("transfer-encoding", "chunked"), false},
		{"keep-alive", with("keep-alive", "1"), false},
		{"proxy-connection", with("proxy-connection", "keep-alive"), false},
		{"te other than trailers", with("te", "gzip"), false},
		{"a name with a space", with("x a", "1"), false},
		{"a value with CR LF", with("x-a", "1\r\nx-b: 2"), false},
		{"a value with NUL", with("x-a", "1\x00"), false},
		{":path with CR LF", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/e/127.0.0.2/x HTTP/1.1\r\nHost: evil", ":authority", "ws.example.com"}, false},
		{":protocol on a GET", []string{":method", "GET", ":protocol", "websocket", ":scheme", "https", ":path", "/e/127.0.0.2/x", ":authority", "ws.example.com"}, true},
		{"CONNECT with :path and no :protocol", []string{":method", "CONNECT", ":scheme", "https", ":path", "/e/127.0.0.2/x", ":authority", "ws.example.com"}, false},
		{"CONNECT without :authority", []string{":method", "CONNECT"}, false},
		{"no :method", []string{":protocol", "websocket", ":scheme", "https", ":path", "/e/127.0.0.2/x", ":authority", "ws.example.com"}, false},
		{"GET without :path", []string{":method", "GET", ":scheme", "https", ":authority", "ws.example.com"}, true},
		{"GET with an empty :path", []string{":method", "GET", ":scheme", "https", ":path", "", ":authority", "ws.example.com"}, true},
		{"GET without :scheme", []string{":method", "GET", ":path", "/e/127.0.0.2/x", ":authority", "ws.example.com"}, true},
		{"content-length without a body", []string{":method", "GET", ":scheme", "https", ":path", "/e/127.0.0.2/x", ":authority", "ws.example.com", "content-length", "5"}, true},
		{"two content-lengths", with("content-length", "5", "content-length", "6"), false},
		{"content-length not a number", with("content-length", "5, 5"), false},
		{"negative content-length", with("content-length", "-1"), false},
	}
	for _, c := range cases {
		p := newPeer(t, Config{})
		p.headers(1, c.end, c.pairs...)
		if err := p.send(); err != nil {
			t.Errorf("%s: connection error %v, want the stream reset", c.name, err)
			continue
		}
		fs := p.frames()
		if p.h.requests[1] != nil {
			t.Errorf("%s: passed on as %+v", c.name, p.h.requests[1])
			continue
		}
		if code := reset(t, fs, 1); code != http2.ErrCodeProtocol {
			t.Errorf("%s: RST_STREAM %v, want PROTOCOL_ERROR", c.name, code)
		}
		// The connection goes on.
		p.headers(3, false, base...)
		if err := p.send(); err != nil || p.h.requests[3] == nil {
			t.Errorf("%s: the next request: %v", c.name, err)
		}
	}
	// What is well formed is passed on as it came, cookies joined.
	p := newPeer(t, Config{})
	p.headers(1, false, with("te", "trailers", "cookie", "a=1", "cookie", "b=2", "host", "ws.example.com")...)
	if err := p.send(); err != nil {
		t.Fatal(err)
	}
	r := p.h.requests[1]
	if r == nil || r.Method != "CONNECT" || r.Protocol != "websocket" || r.Path != "/e/127.0.0.2/x" || r.Authority != "ws.example.com" || r.Header.Get("Cookie") != "a=1; b=2" {
		t.Fatalf("a valid request passed on as %+v", r)
	}
}

// TestConnBodyMustMatchContentLength: a body longer or shorter than its
// content-length resets the stream (RFC 9113 §8.1.1).
func TestConnBodyMustMatchContentLength(t *testing.T) {
	get := []string{":method", "POST", ":scheme", "https", ":path", "/e/127.0.0.2/x", ":authority", "ws.example.com", "content-length", "4"}
	for _, body := range []string{"abc", "abcde"} {
		p := newPeer(t, Config{})
		p.headers(1, false, get...)
		_ = p.fr.WriteData(1, true, []byte(body))
		if err := p.send(); err != nil {
			t.Fatal(err)
		}
		if code := reset(t, p.frames(), 1); code != http2.ErrCodeProtocol || !p.h.resets[1] || p.h.ended[1] {
			t.Errorf("a body of %d bytes for content-length 4: RST_STREAM %v, reset %v, ended %v", len(body), code, p.h.resets[1], p.h.ended[1])
		}
	}
}

// TestConnPrefaceAndPending: the connection waits for a preface it gets
// in pieces, refuses a wrong one, wants SETTINGS first, and says whether
// bytes of an incomplete frame are waiting (the read-header timeout
// applies then).
func TestConnPrefaceAndPending(t *testing.T) {
	h := &recorder{requests: map[uint32]*Request{}, streams: map[uint32]*Stream{}, data: map[uint32]int{},
		ended: map[uint32]bool{}, resets: map[uint32]bool{}, writable: map[uint32]int{}}
	c := NewConn(Config{}, h)
	if !c.Pending() {
		t.Error("Pending() false before the preface")
	}
	if err := c.Feed([]byte(http2.ClientPreface[:10])); err != nil || !c.Pending() {
		t.Errorf("half a preface: %v, Pending %v", err, c.Pending())
	}
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	_ = fr.WriteSettings()
	settings := b.Bytes()
	if err := c.Feed([]byte(http2.ClientPreface[10:])); err != nil || c.Pending() {
		t.Errorf("the whole preface: %v, Pending %v", err, c.Pending())
	}
	if err := c.Feed(settings[:5]); err != nil || !c.Pending() {
		t.Errorf("part of a frame: %v, Pending %v", err, c.Pending())
	}
	if err := c.Feed(settings[5:]); err != nil || c.Pending() || c.in != nil {
		t.Errorf("the rest of the frame: %v, Pending %v, %d bytes held", err, c.Pending(), len(c.in))
	}

	if err := NewConn(Config{}, h).Feed([]byte("GET / HTTP/1.1\r\n\r\n")); err == nil {
		t.Error("an HTTP/1.1 request as a preface: no error")
	}
	b.Reset()
	_ = fr.WritePing(false, [8]byte{})
	c = NewConn(Config{}, h)
	if err := c.Feed(append([]byte(http2.ClientPreface), b.Bytes()...)); err == nil {
		t.Error("PING before SETTINGS: no error")
	}
}
