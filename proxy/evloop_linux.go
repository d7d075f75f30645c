//go:build linux

package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The event-driven tunnel engine, on Linux.
//
// After the handshake, a tunnel whose connections are TCP (the client's
// possibly under TLS, accepted through Server.ServeTLS) leaves Go's
// poller: its two sockets move into one of a few epoll instances, each
// served by one goroutine that reads, tracks frames and writes for every
// tunnel it holds. An idle tunnel then costs its bookkeeping only: no
// goroutine stack and no buffer. Reads go into the loop's own buffer; only
// bytes a peer cannot take yet are copied into a buffer borrowed until it
// drains (and the tunnel stops reading the other side meanwhile).
//
// A TLS client's connection stays a crypto/tls connection, driven by the
// loop over its socket: its reads never wait (a temporary error when the
// socket is empty leaves the TLS state intact) and its writes always take
// every byte (kept like any other bytes the peer cannot take yet).
//
// Sockets are registered edge-triggered for input and output once. A read
// shorter than the buffer means the socket is drained (a later arrival
// raises a new edge), unless the peer's end of stream or an error was
// reported, in which case reading goes on until it is seen.
//
// Everything about a tunnel in a loop is done on the loop's goroutine:
// other goroutines (revocation, timers, shutdown) post tasks to it.
//
// The loop's goroutine does not block in epoll_wait: the epoll descriptor
// itself sits in Go's poller, which wakes the goroutine when any socket of
// the loop is ready; the loop then collects the events without waiting.
// A goroutine blocked in a system call would hand its processor off and
// take another thread switch on every wake-up.

// evLoop is one epoll instance and the goroutine that serves it.
type evLoop struct {
	epfd   int
	wakefd int // eventfd: posted tasks are waiting
	// epf is epfd in Go's poller.
	epf    *os.File
	events []unix.EpollEvent

	mu    sync.Mutex
	tasks []func()
	woken bool

	id int // index in evLoops

	// Loop-owned state (only the loop's goroutine touches it).
	ends []*evEnd // by slot
	// lns are the listening sockets the loop accepts on (by -2-data);
	// handshakes are the connections accepted that have no tunnel yet.
	lns        []*evListener
	handshakes map[*evTunnel]struct{}
	free       []int32 // free slots
	gen        uint32  // generation of the next registration
	buf        []byte  // read buffer
	now        int64   // time of the current batch, unix nanoseconds
}

// wakeSlot is the epoll data of the loop's eventfd.
const wakeSlot = -1

// evReadSize is how much a loop reads at once.
const evReadSize = 64 << 10

var (
	evLoopsOnce sync.Once
	evLoops     []*evLoop
	evNext      atomic.Uint32
)

// startEvLoops starts one loop per CPU the runtime may use. Loops live as
// long as the process, like Go's own poller. It returns nil when epoll is
// not available; tunnels then run on goroutines.
func startEvLoops() []*evLoop {
	evLoopsOnce.Do(func() {
		n := max(runtime.GOMAXPROCS(0), 1)
		for i := range n {
			l, err := newEvLoop()
			if err != nil {
				return
			}
			l.id = i
			evLoops = append(evLoops, l)
			go l.run()
		}
	})
	return evLoops
}

func newEvLoop() (*evLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wfd)
		return nil, err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wfd)
		return nil, err
	}
	return &evLoop{
		epfd: epfd, wakefd: wfd, epf: os.NewFile(uintptr(epfd), "wsgate-tunnels"),
		events: make([]unix.EpollEvent, 256), buf: make([]byte, evReadSize),
		handshakes: map[*evTunnel]struct{}{},
	}, nil
}

// post runs f on the loop's goroutine.
func (l *evLoop) post(f func()) {
	l.mu.Lock()
	l.tasks = append(l.tasks, f)
	wake := !l.woken
	l.woken = true
	l.mu.Unlock()
	if wake {
		var one = [8]byte{1}
		_, _ = unix.Write(l.wakefd, one[:])
	}
}

func (l *evLoop) runTasks() {
	l.mu.Lock()
	tasks := l.tasks
	l.tasks = nil
	l.woken = false
	l.mu.Unlock()
	for i, f := range tasks {
		f()
		tasks[i] = nil
	}
}

func (l *evLoop) run() {
	if rc, err := l.epf.SyscallConn(); err == nil {
		poll := func(uintptr) bool {
			for l.collect(0) == len(l.events) {
			}
			return false
		}
		// Read returns only when Go's poller cannot watch the descriptor.
		_ = rc.Read(poll)
	}
	for {
		l.collect(-1)
	}
}

// collect waits up to msec (-1: no limit) for events, handles them and
// runs the posted tasks. It returns the number of events.
func (l *evLoop) collect(msec int) int {
	var (
		n   int
		err error
	)
	if msec == 0 {
		n, err = sysEpollPoll(l.epfd, l.events)
	} else {
		n, err = unix.EpollWait(l.epfd, l.events, msec)
	}
	if err != nil {
		if errors.Is(err, unix.EINTR) {
			return 0
		}
		// EBADF or EINVAL: cannot happen on a valid epoll descriptor.
		panic("wsgate: epoll_wait: " + err.Error())
	}
	if n == 0 {
		return 0
	}
	l.now = time.Now().UnixNano()
	for i := range n {
		ev := &l.events[i]
		if ev.Fd == wakeSlot {
			var b [8]byte
			_, _ = sysRead(l.wakefd, b[:])
			continue
		}
		if ev.Fd < wakeSlot {
			if ln := l.lns[-2-ev.Fd]; ln != nil {
				l.accept(ln)
			}
			continue
		}
		e := l.ends[ev.Fd]
		if e == nil || e.gen != uint32(ev.Pad) {
			continue // a socket closed earlier in this batch
		}
		e.t.handle(e.side, ev.Events)
	}
	l.runTasks()
	return n
}

// register adds a socket to the loop.
func (l *evLoop) register(e *evEnd) error {
	var slot int32
	if k := len(l.free); k > 0 {
		slot = l.free[k-1]
		l.free = l.free[:k-1]
	} else {
		slot = int32(len(l.ends))
		l.ends = append(l.ends, nil)
	}
	l.gen++
	e.slot, e.gen = slot, l.gen
	ev := unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET,
		Fd:     slot,
		Pad:    int32(e.gen),
	}
	if err := sysEpollCtl(l.epfd, unix.EPOLL_CTL_ADD, e.fd, &ev); err != nil {
		l.free = append(l.free, slot)
		return err
	}
	l.ends[slot] = e
	return nil
}

// unregister forgets a socket; closing it removes it from the epoll set.
func (l *evLoop) unregister(e *evEnd) {
	if e.slot >= 0 && l.ends[e.slot] == e {
		l.ends[e.slot] = nil
		l.free = append(l.free, e.slot)
	}
	e.slot = -1
}

// evEnd is one socket of an evented tunnel.
type evEnd struct {
	fd   int
	slot int32
	gen  uint32
	side int // 0: client, 1: pod
	t    *evTunnel
	// tls is the client's TLS connection, driven by the loop through a
	// detachConn; nil on plain TCP.
	tls *tls.Conn
}

// Direction states.
const (
	dirOpen       = iota // forwarding
	dirToBoundary        // a close is pending: forwarding up to the end of the current frame
	dirDiscard           // the Close frame was sent: reading until the peer's end of stream
	dirDone              // the source ended its stream
)

// evDir is one direction of an evented tunnel: from end[i] to end[1-i].
type evDir struct {
	fl    *flow
	state int
	// readable: the source may have bytes not read yet. drain: the peer's
	// end of stream or an error was reported, so a short read does not
	// mean the socket is drained.
	readable, drain bool
	// out holds bytes the destination could not take yet, in a borrowed
	// buffer; shutAfter half-closes the destination once out is written.
	out       []byte
	outBuf    *[]byte
	shutAfter bool
}

// release gives back the buffer of bytes kept for the destination.
func (d *evDir) release() {
	if d.outBuf != nil {
		*d.outBuf = (*d.outBuf)[:0]
		outPool.Put(d.outBuf)
	}
	d.out, d.outBuf = nil, nil
}

// evTunnel carries a tunnel on a loop.
type evTunnel struct {
	t     *tunnel
	loop  *evLoop
	end   [2]evEnd
	dir   [2]evDir
	timer *time.Timer // idle timeout and maximum lifetime
	grace *time.Timer // bounds a close
	// closing is the close request the loop acts on.
	closing *closeRequest
	// hs is set while the loop carries the handshake that precedes the
	// tunnel (a connection from a listener the loops serve).
	hs      *evHandshake
	started bool
	ended   bool
	onDone  func()
	// doneOnLoop: onDone is cheap (no access log line to write) and runs
	// on the loop instead of a goroutine of its own.
	doneOnLoop bool
}

// outPool holds the buffers of bytes a peer could not take yet.
var outPool = sync.Pool{New: func() any { b := make([]byte, 0, evReadSize+256); return &b }}

// startEvented moves a tunnel of two plain TCP connections to an event
// loop and returns true; onDone runs (on the loop) once it has ended. It
// returns false, changing nothing, when the connections cannot be
// carried there: the tunnel then runs on goroutines.
func startEvented(t *tunnel, onDone func(), doneOnLoop bool) bool {
	loops := startEvLoops()
	if len(loops) == 0 {
		return false
	}
	client, tc, dc := t.client, (*tls.Conn)(nil), (*detachConn)(nil)
	if c, ok := t.client.(*tls.Conn); ok {
		// A TLS connection can move only if it was accepted through a
		// detachListener (Server.ServeTLS).
		if dc, ok = c.NetConn().(*detachConn); !ok {
			return false
		}
		tc, client = c, dc.TCPConn
	}
	cfd, ok := dupFD(client)
	if !ok {
		return false
	}
	pfd, ok := dupFD(t.pod)
	if !ok {
		_ = unix.Close(cfd)
		return false
	}
	// The sockets now live on through the duplicates; closing Go's
	// descriptors takes them out of its poller.
	_ = client.Close()
	_ = t.pod.Close()

	l := loops[evNext.Add(1)%uint32(len(loops))]
	et := &evTunnel{t: t, loop: l, onDone: onDone, doneOnLoop: doneOnLoop}
	et.end[0] = evEnd{fd: cfd, slot: -1, side: 0, t: et, tls: tc}
	et.end[1] = evEnd{fd: pfd, slot: -1, side: 1, t: et}
	et.dir[0].fl = &t.c2p
	et.dir[1].fl = &t.p2c
	if dc != nil {
		dc.loop = &loopIO{et: et, side: 0}
	}
	t.ev.Store(et)
	l.post(et.start)
	return true
}

// detachListener accepts TCP connections as detachConns, so that a TLS
// connection made over one can move to an event loop after its handshake.
type detachListener struct{ net.Listener }

func (l detachListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		return &detachConn{TCPConn: tc}, nil
	}
	return c, err
}

// wrapForLoop prepares a listener whose connections TLS will wrap.
func wrapForLoop(l net.Listener) net.Listener { return detachListener{l} }

// detachConn is a TCP connection under TLS. Until its tunnel moves to an
// event loop it is the TCP connection; then the TLS connection over it
// reads and writes through the loop, which owns the socket.
type detachConn struct {
	*net.TCPConn
	loop *loopIO
}

func (c *detachConn) Read(p []byte) (int, error) {
	if c.loop != nil {
		return c.loop.read(p)
	}
	return c.TCPConn.Read(p)
}

func (c *detachConn) Write(p []byte) (int, error) {
	if c.loop != nil {
		return c.loop.write(p)
	}
	return c.TCPConn.Write(p)
}

// Deadlines and closing belong to the loop once it owns the socket.

func (c *detachConn) SetDeadline(t time.Time) error {
	if c.loop != nil {
		return nil
	}
	return c.TCPConn.SetDeadline(t)
}

func (c *detachConn) SetReadDeadline(t time.Time) error {
	if c.loop != nil {
		return nil
	}
	return c.TCPConn.SetReadDeadline(t)
}

func (c *detachConn) SetWriteDeadline(t time.Time) error {
	if c.loop != nil {
		return nil
	}
	return c.TCPConn.SetWriteDeadline(t)
}

func (c *detachConn) Close() error {
	if c.loop != nil {
		return nil
	}
	return c.TCPConn.Close()
}

// loopIO is the socket I/O of a TLS connection on a loop: reads never
// wait (errWouldBlock when the socket is empty, which crypto/tls keeps
// no record of), and writes always take every byte, keeping what the
// socket cannot take yet as the tunnel keeps any other bytes.
type loopIO struct {
	et   *evTunnel
	side int
}

func (a *loopIO) read(p []byte) (int, error) {
	for {
		n, e := sysRead(a.et.end[a.side].fd, p)
		switch e {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, errWouldBlock
		default:
			return 0, e
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

func (a *loopIO) write(p []byte) (int, error) {
	// The direction that writes to this socket.
	if !a.et.sendRaw(1-a.side, p) {
		return 0, errTunnelFailed
	}
	return len(p), nil
}

// errWouldBlock: the socket has nothing to read now. As a temporary
// network error it leaves the TLS connection usable.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "read would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// errTunnelFailed: a write failed and the tunnel ended.
var errTunnelFailed = errors.New("tunnel ended")

// dupFD duplicates the descriptor of a plain TCP connection.
func dupFD(c net.Conn) (int, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return -1, false
	}
	return dupSocket(tc)
}

// dupSocket duplicates the descriptor of a socket in Go's poller.
func dupSocket(c syscall.Conn) (int, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, false
	}
	nfd := -1
	cerr := rc.Control(func(fd uintptr) {
		nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil || err != nil {
		return -1, false
	}
	return nfd, true
}

// start runs on the loop: it forwards the bytes read ahead during the
// handshake, registers both sockets and arms the timers.
func (et *evTunnel) start() { et.begin(nil) }

// begin starts the tunnel on its loop: head (the 101 answer, when the
// loop made the handshake) goes to the client first, then the bytes read
// ahead during the handshake; the sockets not yet in the loop's set are
// registered, and the timers armed.
func (et *evTunnel) begin(head []byte) {
	t := et.t
	l := et.loop
	et.started = true
	t.begin()
	l.now = time.Now().UnixNano()
	if len(head) > 0 && !et.sendRaw(1, head) {
		return
	}
	for i, pending := range [2][]byte{t.clientPending, t.podPending} {
		if len(pending) > 0 {
			d := &et.dir[i]
			d.fl.frames.consume(pending, false)
			t.moved(d.fl, len(pending))
			if !et.send(i, pending) {
				return
			}
		}
	}
	t.clientPending, t.podPending = nil, nil
	for i := range et.end {
		if et.end[i].slot >= 0 {
			continue
		}
		if err := l.register(&et.end[i]); err != nil {
			et.fail()
			return
		}
	}
	if t.idle > 0 || !t.deadline.IsZero() {
		et.timer = time.AfterFunc(et.nextTimer(), func() { l.post(et.checkTimers) })
	}
	if cr := t.closing.Load(); cr != nil {
		et.startClose(cr)
	}
	if et.end[0].tls != nil && !et.ended {
		// Records that arrived with the handshake may sit decoded in the
		// TLS connection, with no event to come for them.
		et.dir[0].readable = true
	}
	// Sockets that the loop's handshake left unread have no edge to
	// come.
	for i := range et.dir {
		if et.dir[i].readable && !et.ended {
			et.pump(i)
		}
	}
}

// requestClose is tunnel.Close's part for an evented tunnel.
func (et *evTunnel) requestClose(cr *closeRequest) {
	et.loop.post(func() { et.startClose(cr) })
}

// nextTimer is the time until the earlier of the idle timeout and the
// maximum lifetime.
func (et *evTunnel) nextTimer() time.Duration {
	t := et.t
	var next time.Time
	if t.idle > 0 {
		next = time.Unix(0, t.lastActive.Load()).Add(t.idle)
	}
	if !t.deadline.IsZero() && (next.IsZero() || t.deadline.Before(next)) {
		next = t.deadline
	}
	return time.Until(next)
}

func (et *evTunnel) checkTimers() {
	if et.ended || et.closing != nil {
		return
	}
	et.t.checkTimers()
	if et.t.closing.Load() == nil {
		et.timer.Reset(et.nextTimer())
	}
}

// handle acts on the epoll events of one socket.
func (et *evTunnel) handle(side int, events uint32) {
	if et.hs != nil {
		et.hs.handle(et, side, events)
		return
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		d := &et.dir[side]
		d.readable = true
		if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			d.drain = true
		}
		et.pump(side)
	}
	if et.ended {
		return
	}
	if events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		et.flush(1 - side)
	}
}

// pump reads direction i's source while it has bytes and the destination
// takes them.
func (et *evTunnel) pump(i int) {
	d := &et.dir[i]
	l := et.loop
	src := et.end[i].fd
	tc := et.end[i].tls
	for !et.ended && d.state != dirDone && d.readable && len(d.out) == 0 {
		var n int
		var err error
		if tc != nil {
			n, err = tc.Read(l.buf)
		} else {
			var e syscall.Errno
			if n, e = sysRead(src, l.buf); e != 0 {
				err = e
			}
		}
		if err != nil {
			switch {
			case errors.Is(err, unix.EAGAIN) || errors.Is(err, errWouldBlock):
				d.readable = false
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, io.EOF):
				d.readable = false
				et.sourceEnded(i)
			default:
				et.fail()
			}
			return
		}
		if n == 0 {
			if tc != nil {
				continue
			}
			d.readable = false
			et.sourceEnded(i)
			return
		}
		// A short read drained the socket; a TLS read returns one record
		// at most, so it reads on until the socket is empty.
		if tc == nil && n < len(l.buf) && !d.drain {
			d.readable = false
		}
		data := l.buf[:n]
		switch d.state {
		case dirOpen:
			et.t.lastActive.Store(l.now)
			d.fl.frames.consume(data, false)
			et.t.moved(d.fl, n)
			if !et.send(i, data) {
				return
			}
		case dirToBoundary:
			used := d.fl.frames.consume(data, true)
			et.t.moved(d.fl, used)
			if !et.send(i, data[:used]) {
				return
			}
			if d.fl.frames.atBoundary() {
				// What follows the boundary is dropped: the tunnel is
				// closing.
				et.sendClose(i)
			}
		case dirDiscard:
			// The peer's answer to the Close frame: dropped.
		}
	}
}

// send writes p to direction i's destination (through TLS to a TLS
// client); what it cannot take yet is kept and written when it can. It
// returns false if the tunnel failed.
func (et *evTunnel) send(i int, p []byte) bool {
	if tc := et.end[1-i].tls; tc != nil {
		if _, err := tc.Write(p); err != nil {
			et.fail()
			return false
		}
		return !et.ended
	}
	return et.sendRaw(i, p)
}

// sendRaw writes p as it is to direction i's destination socket.
func (et *evTunnel) sendRaw(i int, p []byte) bool {
	if et.ended {
		return false
	}
	d := &et.dir[i]
	if len(d.out) > 0 {
		d.out = append(d.out, p...)
		return true
	}
	n, err := writeAll(et.end[1-i].fd, p)
	if err != nil {
		et.fail()
		return false
	}
	if n < len(p) {
		d.outBuf = outPool.Get().(*[]byte)
		*d.outBuf = append((*d.outBuf)[:0], p[n:]...)
		d.out = *d.outBuf
	}
	return true
}

// writeAll writes p to the socket fd until it is written or the socket
// cannot take more now; it returns how much was written.
func writeAll(fd int, p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, e := sysWrite(fd, p[written:])
		switch e {
		case 0:
			written += n
		case unix.EINTR:
		case unix.EAGAIN:
			return written, nil
		default:
			return written, e
		}
	}
	return written, nil
}

// flush writes what direction i's destination could not take before, and
// goes on reading the source once it is written.
func (et *evTunnel) flush(i int) {
	d := &et.dir[i]
	if len(d.out) == 0 {
		return
	}
	n, err := writeAll(et.end[1-i].fd, d.out)
	if err != nil {
		et.fail()
		return
	}
	if d.out = d.out[n:]; len(d.out) > 0 {
		return
	}
	dst := et.end[1-i].fd
	d.release()
	if d.shutAfter {
		d.shutAfter = false
		_ = sysShutdownWrite(dst)
	}
	if et.maybeEnd() {
		return
	}
	et.pump(i)
}

// shutdownDst half-closes direction i's destination once what it holds
// for it is written.
func (et *evTunnel) shutdownDst(i int) {
	if tc := et.end[1-i].tls; tc != nil {
		// close_notify, then the TCP end of stream.
		_ = tc.CloseWrite()
		if et.ended {
			return
		}
	}
	d := &et.dir[i]
	if len(d.out) > 0 {
		d.shutAfter = true
		return
	}
	_ = sysShutdownWrite(et.end[1-i].fd)
}

// sourceEnded handles the end of stream of direction i's source.
func (et *evTunnel) sourceEnded(i int) {
	d := &et.dir[i]
	switch d.state {
	case dirOpen:
		// Half-close: pass the end of stream on; the other direction
		// goes on. When it has ended already, closing both sockets
		// below sends the end of stream.
		et.t.setEnded(d.fl.eof)
		d.state = dirDone
		if et.dir[1-i].state != dirDone || len(d.out) > 0 {
			et.shutdownDst(i)
		}
	case dirToBoundary:
		// The frame did not end: no boundary to close at.
		et.fail()
		return
	case dirDiscard:
		d.state = dirDone
	}
	et.maybeEnd()
}

// startClose begins a close the gateway asked for: each open direction
// sends its Close frame at its next frame boundary.
func (et *evTunnel) startClose(cr *closeRequest) {
	if !et.started || et.ended || et.closing != nil {
		return
	}
	et.closing = cr
	if et.timer != nil {
		et.timer.Stop()
	}
	l := et.loop
	et.grace = time.AfterFunc(closeGrace, func() {
		l.post(func() {
			if !et.ended {
				et.fail()
			}
		})
	})
	for i := range et.dir {
		d := &et.dir[i]
		if d.state != dirOpen {
			continue
		}
		if d.fl.frames.atBoundary() {
			et.sendClose(i)
		} else {
			d.state = dirToBoundary
		}
		if et.ended {
			return
		}
	}
}

// sendClose sends the Close frame to direction i's destination, then its
// end of stream, and reads the source until the peer ends it.
func (et *evTunnel) sendClose(i int) {
	d := &et.dir[i]
	cr := et.closing
	d.state = dirDiscard
	if !et.send(i, closeFrame(cr.code, cr.reason, i == 0)) {
		return
	}
	et.shutdownDst(i)
}

// maybeEnd ends the tunnel once both directions are done and written.
func (et *evTunnel) maybeEnd() bool {
	if et.ended {
		return true
	}
	for i := range et.dir {
		if d := &et.dir[i]; d.state != dirDone || len(d.out) > 0 {
			return false
		}
	}
	et.close()
	return true
}

// fail ends the tunnel at once.
func (et *evTunnel) fail() {
	if et.ended {
		return
	}
	et.t.setEnded(ClosedError)
	et.close()
}

// close closes both sockets and reports the tunnel ended.
func (et *evTunnel) close() {
	et.ended = true
	t := et.t
	for i := range et.end {
		e := &et.end[i]
		et.loop.unregister(e)
		_ = sysClose(e.fd)
	}
	for i := range et.dir {
		et.dir[i].release()
		t.flowEnded(et.dir[i].fl)
	}
	if et.timer != nil {
		et.timer.Stop()
	}
	if et.grace != nil {
		et.grace.Stop()
	}
	t.end()
	if et.onDone != nil {
		if et.doneOnLoop {
			et.onDone()
			return
		}
		// Off the loop: the access log may write to a slow pipe, and
		// the loop carries other tunnels.
		go et.onDone()
	}
}
