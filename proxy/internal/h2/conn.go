// Package h2 is the server side of an HTTP/2 connection (RFC 9113) as
// the gateway speaks it: websockets over extended CONNECT (RFC 8441) and
// short answers to any other request. A Conn is driven by one goroutine
// (an event loop's): the bytes read from the connection go in through
// Feed, and the frames to send come out in the Conn's output buffer. It
// never blocks, starts no goroutine and holds no timer; per stream it
// keeps a few words of state. It knows nothing of websockets or pods.
//
// Frames are parsed and written by golang.org/x/net/http2's Framer and
// header blocks by its hpack package; this package frames the byte
// stream (a frame is parsed once all its bytes, and for a header block
// all its CONTINUATION frames, have arrived) and keeps the connection's
// and streams' states and flow-control windows.
package h2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Config bounds a connection.
type Config struct {
	// MaxConcurrentStreams bounds the streams a client may have open,
	// counting those whose handler has not released them yet.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a request's header fields (RFC 9113
	// SETTINGS_MAX_HEADER_LIST_SIZE); a request over it is passed on
	// marked Truncated.
	MaxHeaderListSize uint32
	// StreamWindow is the receive window of each stream: the most a
	// client may send on a stream before its bytes are consumed.
	StreamWindow uint32
	// ConnWindow is the connection's receive window. Bytes received are
	// given back to it at once (streams' windows bound what is held), so
	// it only bounds what may be in flight.
	ConnWindow uint32
}

// DefaultConfig is the configuration of zero fields.
var DefaultConfig = Config{MaxConcurrentStreams: 250, MaxHeaderListSize: 16 << 10, StreamWindow: 64 << 10, ConnWindow: 1 << 20}

// Handler is told of a connection's streams, on the goroutine that
// drives it.
type Handler interface {
	// NewStream returns the state of a new stream, zero, which the
	// handler may keep within its own; the connection sets its fields.
	NewStream() *Stream
	// Request is a new stream's request. The handler must Release the
	// stream once it no longer uses it (after it answered, or after
	// Reset).
	Request(s *Stream, r *Request)
	// Data is payload of the stream's DATA frames, counted against the
	// stream's window until it is Consumed. p is valid during the call
	// only.
	Data(s *Stream, p []byte)
	// EndStream: the client ended its side of the stream.
	EndStream(s *Stream)
	// Reset: the client reset the stream, or the connection ended; the
	// stream takes no more frames.
	Reset(s *Stream)
	// Writable: the stream may send again, after WriteData sent less than
	// it was given.
	Writable(s *Stream)
}

// Request is a request's header block.
type Request struct {
	Method, Scheme, Authority, Path string
	// Protocol is the :protocol of an extended CONNECT.
	Protocol string
	Header   http.Header
	// EndStream: the request has no body.
	EndStream bool
	// ContentLength is the content-length field's value; -1: none.
	ContentLength int64
	// Truncated: the header fields were over MaxHeaderListSize and some
	// were dropped.
	Truncated bool
	// Malformed says why the request breaks RFC 9113's rules for one
	// (the stream is reset with PROTOCOL_ERROR instead of passed on).
	Malformed string
}

// Stream is one stream of a connection.
type Stream struct {
	ID    uint32
	state streamState
	// blocked: WriteData sent less than it was given; Writable follows
	// when the windows open.
	blocked, released bool
	// User is the handler's state for the stream.
	User any
	// bodyLeft is what the request's content-length still announces;
	// -1: none.
	bodyLeft int64

	sendWindow int64
	// recvWindow is what the client may still send; unacked is what was
	// consumed and not yet given back.
	recvWindow, unacked int64
}

type streamState uint8

const (
	stateOpen streamState = iota
	stateRemoteClosed
	stateLocalClosed
	stateClosed
)

// Ended reports whether the stream takes no more frames from either
// side.
func (s *Stream) Ended() bool { return s.state == stateClosed }

// LocalEnded reports whether the stream's answer has ended.
func (s *Stream) LocalEnded() bool { return s.state == stateLocalClosed || s.state == stateClosed }

// Conn is the server side of one HTTP/2 connection.
type Conn struct {
	cfg Config
	h   Handler

	// out is what is to be written to the connection.
	out bytes.Buffer
	fr  *http2.Framer
	// in is the bytes read and not yet parsed; feed gives the Framer one
	// frame (or header block) of them at a time.
	in   []byte
	feed sliceReader
	henc *hpack.Encoder
	hbuf bytes.Buffer

	preface, settings bool
	streams           map[uint32]*Stream
	// active counts streams not yet released by the handler.
	active       uint32
	maxClientID  uint32
	peerWindow   int64 // SETTINGS_INITIAL_WINDOW_SIZE of the client
	peerMaxFrame uint32
	sendWindow   int64
	recvUnacked  int64
	goingAway    bool
	err          error
}

// ErrClosed is returned by Feed once the connection has failed or gone
// away.
var ErrClosed = errors.New("h2: connection closed")

// clientPreface is what a client sends first.
const clientPreface = http2.ClientPreface

// NewConn is the server side of a connection whose client has just
// chosen h2; the server's SETTINGS are in its output at once.
func NewConn(cfg Config, h Handler) *Conn {
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultConfig.MaxConcurrentStreams
	}
	if cfg.MaxHeaderListSize == 0 {
		cfg.MaxHeaderListSize = DefaultConfig.MaxHeaderListSize
	}
	if cfg.StreamWindow == 0 {
		cfg.StreamWindow = DefaultConfig.StreamWindow
	}
	if cfg.ConnWindow < 65535 {
		cfg.ConnWindow = DefaultConfig.ConnWindow
	}
	c := &Conn{cfg: cfg, h: h, streams: make(map[uint32]*Stream), peerWindow: 65535, peerMaxFrame: 16384, sendWindow: 65535}
	c.fr = http2.NewFramer(&c.out, &c.feed)
	c.fr.SetMaxReadFrameSize(16384)
	c.fr.MaxHeaderListSize = cfg.MaxHeaderListSize
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	_ = c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: cfg.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: cfg.StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: cfg.MaxHeaderListSize},
		http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1},
	)
	if cfg.ConnWindow > 65535 {
		_ = c.fr.WriteWindowUpdate(0, cfg.ConnWindow-65535)
	}
	return c
}

// Output is what is to be written to the connection; Written drops the
// first n bytes of it.
func (c *Conn) Output() []byte { return c.out.Bytes() }

// Written drops n written bytes from the output.
func (c *Conn) Written(n int) { c.out.Next(n) }

// Streams is the number of streams not yet released by the handler.
func (c *Conn) Streams() int { return int(c.active) }

// Err is why the connection failed, or nil.
func (c *Conn) Err() error { return c.err }

// Pending reports whether bytes of an incomplete frame are waiting.
func (c *Conn) Pending() bool { return len(c.in) > 0 || !c.preface }

// GoingAway reports whether GoAway was called or the client sent one.
func (c *Conn) GoingAway() bool { return c.goingAway }

// Feed parses p, read from the connection, calling the handler for what
// it holds. An error means the connection must close once the output
// (which then ends with a GOAWAY) is written.
func (c *Conn) Feed(p []byte) error {
	if c.err != nil {
		return c.err
	}
	c.in = append(c.in, p...)
	if !c.preface {
		n := min(len(c.in), len(clientPreface))
		if string(c.in[:n]) != clientPreface[:n] {
			return c.fail(http2.ErrCodeProtocol, "bad connection preface")
		}
		if n < len(clientPreface) {
			return nil
		}
		c.preface = true
		c.in = c.in[n:]
	}
	for c.err == nil {
		n, err := c.frameLen()
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		c.feed.b = c.in[:n]
		f, err := c.fr.ReadFrame()
		c.in = c.in[n:]
		if err := c.handle(f, err); err != nil {
			return err
		}
	}
	if len(c.in) == 0 {
		c.in = nil // an idle connection holds no buffer
	} else if cap(c.in) > 4*len(c.in)+64<<10 {
		c.in = append([]byte(nil), c.in...)
	}
	return c.err
}

// frameLen is the length of the next whole frame in c.in, with the
// CONTINUATION frames of a header block: 0 while it is incomplete.
func (c *Conn) frameLen() (int, error) {
	// A header block may be up to twice the header list size encoded
	// (the Framer refuses more), in frames of up to 16 KiB.
	limit := 2*int(c.cfg.MaxHeaderListSize) + 2*16384
	off := 0
	for {
		if len(c.in) < off+9 {
			return 0, nil
		}
		h := c.in[off:]
		length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		typ, flags := http2.FrameType(h[3]), http2.Flags(h[4])
		if length > 16384 {
			return 0, c.fail(http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE")
		}
		if len(c.in) < off+9+length {
			if off+9+length > limit {
				return 0, c.fail(http2.ErrCodeEnhanceYourCalm, "header block too large")
			}
			return 0, nil
		}
		off += 9 + length
		headerBlock := typ == http2.FrameHeaders || typ == http2.FrameContinuation
		if !headerBlock || flags.Has(http2.FlagHeadersEndHeaders) {
			return off, nil
		}
		if off > limit {
			return 0, c.fail(http2.ErrCodeEnhanceYourCalm, "header block too large")
		}
	}
}

// fail ends the connection with a GOAWAY of code.
func (c *Conn) fail(code http2.ErrCode, why string) error {
	if c.err == nil {
		_ = c.fr.WriteGoAway(c.maxClientID, code, []byte(why))
		c.err = fmt.Errorf("h2: %s: %s", code, why)
		c.in = nil
		c.resetAll()
	}
	return c.err
}

// Close ends every stream: the handler is told of each as reset.
func (c *Conn) Close() {
	if c.err == nil {
		c.err = ErrClosed
	}
	c.resetAll()
}

func (c *Conn) resetAll() {
	for id, s := range c.streams {
		delete(c.streams, id)
		s.state = stateClosed
		c.h.Reset(s)
	}
}

// GoAway tells the client that the connection takes no new streams; the
// open ones go on.
func (c *Conn) GoAway() {
	if c.err != nil || c.goingAway {
		return
	}
	c.goingAway = true
	_ = c.fr.WriteGoAway(c.maxClientID, http2.ErrCodeNo, nil)
}

// handle acts on one frame.
func (c *Conn) handle(f http2.Frame, err error) error {
	if err != nil {
		var se http2.StreamError
		var ce http2.ConnectionError
		switch {
		case errors.As(err, &se):
			if se.StreamID%2 == 1 && se.StreamID > c.maxClientID {
				c.maxClientID = se.StreamID
			}
			c.resetStream(se.StreamID, se.Code)
			return nil
		case errors.As(err, &ce):
			why := "invalid frame"
			if d := c.fr.ErrorDetail(); d != nil {
				why = d.Error()
			}
			return c.fail(http2.ErrCode(ce), why)
		case errors.Is(err, http2.ErrFrameTooLarge):
			return c.fail(http2.ErrCodeFrameSize, "frame too large")
		default:
			return c.fail(http2.ErrCodeProtocol, err.Error())
		}
	}
	if !c.settings {
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			return c.fail(http2.ErrCodeProtocol, "the first frame is not SETTINGS")
		}
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return c.onReset(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			_ = c.fr.WritePing(true, f.Data)
		}
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			c.resetStream(f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.GoAwayFrame:
		c.goingAway = true
	case *http2.PushPromiseFrame:
		return c.fail(http2.ErrCodeProtocol, "PUSH_PROMISE from a client")
	}
	// Other frame types are ignored (RFC 9113 §4.1).
	return nil
}

func (c *Conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.settings = true
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerWindow
			c.peerWindow = int64(s.Val)
			for _, st := range c.streams {
				if st.sendWindow += delta; st.sendWindow > 1<<31-1 {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	if err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return c.fail(http2.ErrCode(ce), "invalid setting")
		}
		return c.fail(http2.ErrCodeProtocol, err.Error())
	}
	_ = c.fr.WriteSettingsAck()
	c.wakeBlocked()
	return nil
}

func (c *Conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if s, ok := c.streams[id]; ok {
		// Trailers: they end the stream; their fields are dropped.
		if s.state == stateRemoteClosed {
			c.resetStream(id, http2.ErrCodeStreamClosed)
			return nil
		}
		if !f.StreamEnded() {
			return c.fail(http2.ErrCodeProtocol, "trailers without END_STREAM")
		}
		if s.bodyLeft > 0 {
			c.resetStream(id, http2.ErrCodeProtocol)
			return nil
		}
		c.remoteEnded(s)
		return nil
	}
	if id%2 == 0 {
		return c.fail(http2.ErrCodeProtocol, "HEADERS on a server stream")
	}
	if id <= c.maxClientID {
		return c.fail(http2.ErrCodeStreamClosed, "HEADERS on a closed stream")
	}
	c.maxClientID = id
	if f.HasPriority() && f.Priority.StreamDep == id {
		_ = c.fr.WriteRSTStream(id, http2.ErrCodeProtocol)
		return nil
	}
	if c.goingAway {
		return nil
	}
	if c.active >= c.cfg.MaxConcurrentStreams {
		_ = c.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		return nil
	}
	r := readRequest(f)
	if r.Malformed != "" {
		_ = c.fr.WriteRSTStream(id, http2.ErrCodeProtocol)
		return nil
	}
	s := c.h.NewStream()
	s.ID, s.sendWindow, s.recvWindow, s.bodyLeft = id, c.peerWindow, int64(c.cfg.StreamWindow), r.ContentLength
	c.streams[id] = s
	c.active++
	if r.EndStream {
		s.state = stateRemoteClosed
	}
	c.h.Request(s, r)
	return nil
}

func (c *Conn) onData(f *http2.DataFrame) error {
	n := int64(f.Length)
	// The connection's window is given back at once: the streams' bound
	// what is held.
	c.recvUnacked += n
	if c.recvUnacked >= int64(c.cfg.ConnWindow)/2 {
		_ = c.fr.WriteWindowUpdate(0, uint32(c.recvUnacked))
		c.recvUnacked = 0
	}
	s, ok := c.streams[f.StreamID]
	if !ok {
		if f.StreamID > c.maxClientID {
			return c.fail(http2.ErrCodeProtocol, "DATA on an idle stream")
		}
		_ = c.fr.WriteRSTStream(f.StreamID, http2.ErrCodeStreamClosed)
		return nil
	}
	if s.state == stateRemoteClosed {
		c.resetStream(s.ID, http2.ErrCodeStreamClosed)
		return nil
	}
	if s.recvWindow -= n; s.recvWindow < 0 {
		c.resetStream(s.ID, http2.ErrCodeFlowControl)
		return nil
	}
	data := f.Data()
	if s.bodyLeft >= 0 {
		// The body must be as long as its content-length says (RFC 9113
		// §8.1.1).
		if s.bodyLeft -= int64(len(data)); s.bodyLeft < 0 || f.StreamEnded() && s.bodyLeft > 0 {
			c.resetStream(s.ID, http2.ErrCodeProtocol)
			return nil
		}
	}
	// Padding is consumed as it comes; the data when the handler says.
	c.Consumed(s, int(n)-len(data))
	if len(data) > 0 {
		if s.state == stateLocalClosed {
			// Answered already: the rest of the body is dropped.
			c.Consumed(s, len(data))
		} else {
			c.h.Data(s, data)
		}
	}
	if f.StreamEnded() && !s.Ended() {
		c.remoteEnded(s)
	}
	return nil
}

// remoteEnded takes the client's END_STREAM on s.
func (c *Conn) remoteEnded(s *Stream) {
	if s.state == stateLocalClosed {
		c.closeStream(s)
		return
	}
	s.state = stateRemoteClosed
	c.h.EndStream(s)
}

func (c *Conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	if f.StreamID == 0 {
		if c.sendWindow += int64(f.Increment); c.sendWindow > 1<<31-1 {
			return c.fail(http2.ErrCodeFlowControl, "connection window over 2^31-1")
		}
		c.wakeBlocked()
		return nil
	}
	s, ok := c.streams[f.StreamID]
	if !ok {
		if f.StreamID > c.maxClientID {
			return c.fail(http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream")
		}
		return nil
	}
	if s.sendWindow += int64(f.Increment); s.sendWindow > 1<<31-1 {
		c.resetStream(s.ID, http2.ErrCodeFlowControl)
		return nil
	}
	c.wake(s)
	return nil
}

func (c *Conn) onReset(f *http2.RSTStreamFrame) error {
	s, ok := c.streams[f.StreamID]
	if !ok {
		if f.StreamID > c.maxClientID {
			return c.fail(http2.ErrCodeProtocol, "RST_STREAM on an idle stream")
		}
		return nil
	}
	delete(c.streams, s.ID)
	s.state = stateClosed
	c.h.Reset(s)
	return nil
}

// wakeBlocked tells the blocked streams that they may send again.
func (c *Conn) wakeBlocked() {
	if c.sendWindow <= 0 {
		return
	}
	for _, s := range c.streams {
		c.wake(s)
	}
}

func (c *Conn) wake(s *Stream) {
	if s.blocked && s.sendWindow > 0 && c.sendWindow > 0 && !s.LocalEnded() {
		s.blocked = false
		c.h.Writable(s)
	}
}

// resetStream resets stream id with code.
func (c *Conn) resetStream(id uint32, code http2.ErrCode) {
	_ = c.fr.WriteRSTStream(id, code)
	if s, ok := c.streams[id]; ok {
		delete(c.streams, id)
		s.state = stateClosed
		c.h.Reset(s)
	}
}

// closeStream ends a stream both sides have ended.
func (c *Conn) closeStream(s *Stream) {
	s.state = stateClosed
	delete(c.streams, s.ID)
}

// Release tells the connection that the handler is done with s: it no
// longer counts against MaxConcurrentStreams. A stream still open is
// reset.
func (c *Conn) Release(s *Stream) {
	if s.released {
		return
	}
	s.released = true
	c.active--
	switch s.state {
	case stateLocalClosed:
		// A whole answer to a client still sending: it may stop.
		c.Reset(s, http2.ErrCodeNo)
	case stateOpen, stateRemoteClosed:
		c.Reset(s, http2.ErrCodeCancel)
	}
}

// Reset resets s with code (CANCEL, or NO_ERROR after a whole answer to
// a client still sending).
func (c *Conn) Reset(s *Stream, code http2.ErrCode) {
	if s.Ended() {
		return
	}
	if c.err == nil {
		_ = c.fr.WriteRSTStream(s.ID, code)
	}
	c.closeStream(s)
}

// Consumed gives n bytes of s's received data back to its window.
func (c *Conn) Consumed(s *Stream, n int) {
	if n <= 0 {
		return
	}
	s.unacked += int64(n)
	if s.state != stateOpen || c.err != nil {
		return // the client sends no more on it
	}
	if s.unacked >= int64(c.cfg.StreamWindow)/4 {
		_ = c.fr.WriteWindowUpdate(s.ID, uint32(s.unacked))
		s.recvWindow += s.unacked
		s.unacked = 0
	}
}

// WriteHeaders writes the header block of s's answer: status and h (its
// names in lower case; fields HTTP/2 forbids are left out). end ends the
// stream from the server's side.
func (c *Conn) WriteHeaders(s *Stream, status int, h http.Header, end bool) {
	if s.LocalEnded() || c.err != nil {
		return
	}
	c.hbuf.Reset()
	_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	for k, vs := range h {
		name := strings.ToLower(k)
		if connectionSpecific(name) {
			continue
		}
		for _, v := range vs {
			_ = c.henc.WriteField(hpack.HeaderField{Name: name, Value: v})
		}
	}
	block := c.hbuf.Bytes()
	first := true
	for first || len(block) > 0 {
		n := min(len(block), int(c.peerMaxFrame))
		frag, rest := block[:n], block[n:]
		if first {
			_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.ID, BlockFragment: frag, EndStream: end, EndHeaders: len(rest) == 0})
		} else {
			_ = c.fr.WriteContinuation(s.ID, len(rest) == 0, frag)
		}
		first, block = false, rest
	}
	if end {
		c.localEnded(s)
	}
}

// WriteData sends what the windows allow of p on s, and the end of the
// stream with its last byte when end is set; it returns how much it
// sent. When that is less than len(p) (or the end could not go), the
// handler's Writable follows once the client opens the windows.
func (c *Conn) WriteData(s *Stream, p []byte, end bool) int {
	if s.LocalEnded() || c.err != nil {
		return len(p)
	}
	sent := 0
	for sent < len(p) || end {
		n := int(min(int64(len(p)-sent), max(c.Sendable(s), 0), int64(c.peerMaxFrame)))
		last := sent+n == len(p)
		if n == 0 && !last {
			break
		}
		_ = c.fr.WriteData(s.ID, end && last, p[sent:sent+n])
		sent += n
		s.sendWindow -= int64(n)
		c.sendWindow -= int64(n)
		if last {
			if end {
				c.localEnded(s)
			}
			return sent
		}
	}
	if sent < len(p) {
		s.blocked = true
	}
	return sent
}

// Sendable is how much s may send now; at 0, the handler's Writable
// follows once the client opens the windows.
func (c *Conn) Sendable(s *Stream) int64 {
	n := min(s.sendWindow, c.sendWindow)
	if n <= 0 {
		s.blocked = true
	}
	return n
}

// localEnded takes the server's END_STREAM on s.
func (c *Conn) localEnded(s *Stream) {
	if s.state == stateRemoteClosed {
		c.closeStream(s)
		return
	}
	s.state = stateLocalClosed
}

// connectionSpecific reports whether a field (lower case) has no place in
// HTTP/2 (RFC 9113 §8.2.2).
func connectionSpecific(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// readRequest is the request of a header block, checked against RFC
// 9113 §8.3 and RFC 8441 §4.
func readRequest(f *http2.MetaHeadersFrame) *Request {
	r := &Request{Header: make(http.Header, len(f.Fields)), EndStream: f.StreamEnded(), Truncated: f.Truncated, ContentLength: -1}
	seen := map[string]bool{}
	var cookies []string
	for _, hf := range f.Fields {
		if hf.IsPseudo() {
			if seen[hf.Name] {
				r.Malformed = "duplicate " + hf.Name
				return r
			}
			seen[hf.Name] = true
			switch hf.Name {
			case ":method":
				r.Method = hf.Value
			case ":scheme":
				r.Scheme = hf.Value
			case ":authority":
				r.Authority = hf.Value
			case ":path":
				r.Path = hf.Value
			case ":protocol":
				r.Protocol = hf.Value
			default:
				r.Malformed = "unknown pseudo-header " + hf.Name
				return r
			}
			continue
		}
		switch {
		case connectionSpecific(hf.Name):
			r.Malformed = "connection-specific field " + hf.Name
			return r
		case hf.Name == "te" && hf.Value != "trailers":
			r.Malformed = "te other than trailers"
			return r
		case hf.Name == "cookie":
			cookies = append(cookies, hf.Value)
			continue
		case hf.Name == "content-length":
			n, err := strconv.ParseUint(hf.Value, 10, 63)
			if err != nil || r.ContentLength >= 0 && int64(n) != r.ContentLength {
				r.Malformed = "invalid content-length"
				return r
			}
			r.ContentLength = int64(n)
		}
		r.Header.Add(hf.Name, hf.Value)
	}
	if len(cookies) > 0 {
		r.Header.Set("Cookie", strings.Join(cookies, "; "))
	}
	switch {
	case r.Method == "":
		r.Malformed = "no :method"
	case r.EndStream && r.ContentLength > 0:
		r.Malformed = "content-length without a body"
	case seen[":protocol"] && r.Method != http.MethodConnect:
		r.Malformed = ":protocol without CONNECT"
	case r.Method == http.MethodConnect && !seen[":protocol"]:
		if seen[":scheme"] || seen[":path"] || r.Authority == "" {
			r.Malformed = "CONNECT with :scheme or :path, or without :authority"
		}
	case r.Scheme == "" || r.Path == "":
		r.Malformed = "no :scheme or :path"
	}
	return r
}

// sliceReader reads its bytes once.
type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
