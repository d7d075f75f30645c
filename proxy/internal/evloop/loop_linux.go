//go:build linux

// Package evloop is the gateway's event loops, on Linux: a few epoll
// instances, each served by one goroutine, that own non-blocking sockets
// and tell their handlers when the sockets are ready, and that accept on
// listening sockets. It knows nothing of HTTP or websockets.
//
// Everything about a registered socket happens on its loop's goroutine:
// other goroutines Post tasks to it.
//
// The loop's goroutine does not block in epoll_wait: the epoll descriptor
// itself sits in Go's poller, which wakes the goroutine when any socket of
// the loop is ready; the loop then collects the events without waiting.
// A goroutine blocked in a system call would hand its processor off and
// take another thread switch on every wake-up.
package evloop

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Handler is told when its socket is ready, on the loop's goroutine.
type Handler interface {
	Ready(Events)
}

// Events are what epoll reported for a socket.
type Events uint32

// Readable reports that there are bytes to read, or the peer's end of stream or an
// error to find by reading.
func (e Events) Readable() bool {
	return e&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
}

// Ended reports that the peer's end of stream or an error was reported, so a short
// read does not mean the socket is drained.
func (e Events) Ended() bool { return e&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 }

// Writable reports that the socket takes bytes again (or failed: writing says how).
func (e Events) Writable() bool { return e&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 }

// Registration is a socket's place in a loop; its zero value is "not
// registered" only after Init (NewRegistration).
type Registration struct {
	slot int32
	gen  uint32
	// out: the socket is watched for output too (WantWritable).
	out bool
}

// NewRegistration is the registration of a socket not in any loop yet.
func NewRegistration() Registration { return Registration{slot: -1} }

// Registered reports whether the socket is in its loop.
func (r *Registration) Registered() bool { return r.slot >= 0 }

// Loop is one epoll instance and the goroutine that serves it.
type Loop struct {
	epfd   int
	wakefd int // eventfd: posted tasks are waiting
	// epf is epfd in Go's poller.
	epf    *os.File
	events []unix.EpollEvent

	mu    sync.Mutex
	tasks []func()
	woken bool

	id int // index in loops

	// Loop-owned state (only the loop's goroutine touches it).
	handlers []Handler // by slot
	gens     []uint32  // the generation of each slot's registration
	// lns are the listening sockets the loop accepts on.
	lns  []*Listener
	free []int32 // free slots
	gen  uint32  // generation of the next registration
	buf  []byte  // read buffer
	now  int64   // time of the current batch, unix nanoseconds
	dl   deadlines
}

// ReadSize is how much a loop reads at once.
const ReadSize = 64 << 10

var (
	loopsOnce sync.Once
	loops     []*Loop
	next      atomic.Uint32
)

// Loops starts one loop per CPU the runtime may use, the first time, and
// returns them. Loops live as long as the process, like Go's own poller.
// It returns nil when epoll is not available.
func Loops() []*Loop {
	loopsOnce.Do(func() {
		n := max(runtime.GOMAXPROCS(0), 1)
		for i := range n {
			l, err := newLoop()
			if err != nil {
				return
			}
			l.id = i
			loops = append(loops, l)
			go l.run()
		}
	})
	return loops
}

// Pick returns the next loop in turn, or nil without loops.
func Pick() *Loop {
	ls := Loops()
	if len(ls) == 0 {
		return nil
	}
	return ls[next.Add(1)%uint32(len(ls))]
}

// The epoll data of an event names what it is for: the loop's eventfd, a
// listening socket (by its index in the loop's listeners) or a
// registered socket (by its slot, with the registration's generation so
// that an event for a socket closed earlier in the same batch is
// dropped).
const wakeToken = -1

func listenerToken(idx int) int32  { return int32(-2 - idx) }
func listenerIndex(tok int32) int  { return int(-2 - tok) }
func isListenerToken(t int32) bool { return t < wakeToken }

func newLoop() (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeToken}
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
	return &Loop{
		epfd: epfd, wakefd: wfd, epf: os.NewFile(uintptr(epfd), "wsgate-loop"),
		events: make([]unix.EpollEvent, 256), buf: make([]byte, ReadSize),
	}, nil
}

// ID is the loop's index among the loops.
func (l *Loop) ID() int { return l.id }

// Buf is the loop's read buffer: what is read into it must be used
// before the handler returns.
func (l *Loop) Buf() []byte { return l.buf }

// Now is the time of the events being handled, unix nanoseconds.
func (l *Loop) Now() int64 { return l.now }

// Post runs f on the loop's goroutine.
func (l *Loop) Post(f func()) {
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

func (l *Loop) runTasks() {
	l.mu.Lock()
	tasks := l.tasks
	l.tasks = nil
	l.woken = false
	l.mu.Unlock()
	if len(tasks) > 0 {
		l.now = time.Now().UnixNano()
	}
	for i, f := range tasks {
		f()
		tasks[i] = nil
	}
}

func (l *Loop) run() {
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
func (l *Loop) collect(msec int) int {
	var (
		n   int
		err error
	)
	if msec == 0 {
		n, err = epollPoll(l.epfd, l.events)
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
		switch tok := ev.Fd; {
		case tok == wakeToken:
			var b [8]byte
			_, _ = rawIO(unix.SYS_READ, l.wakefd, b[:], 0)
		case isListenerToken(tok):
			if ln := l.lns[listenerIndex(tok)]; ln != nil {
				ln.accept(l)
			}
		default:
			h := l.handlers[tok]
			if h == nil || l.gens[tok] != uint32(ev.Pad) {
				continue // a socket closed earlier in this batch
			}
			h.Ready(Events(ev.Events))
		}
	}
	l.runTasks()
	return n
}

// Register adds a non-blocking socket to the loop, edge-triggered for
// input, and for output once WantWritable was called for r (before or
// after), and records its place in r; h is told of its events. Call it
// on the loop's goroutine.
//
// Output is not watched from the start: a socket that takes bytes, as
// nearly all do nearly always, would raise an event at once for nothing,
// and a loop woken by it pays a goroutine switch and often a thread's.
func (l *Loop) Register(fd int, h Handler, r *Registration) error {
	var slot int32
	if k := len(l.free); k > 0 {
		slot = l.free[k-1]
		l.free = l.free[:k-1]
	} else {
		slot = int32(len(l.handlers))
		l.handlers = append(l.handlers, nil)
		l.gens = append(l.gens, 0)
	}
	l.gen++
	ev := unix.EpollEvent{Events: watched(r.out), Fd: slot, Pad: int32(l.gen)}
	if err := epollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.free = append(l.free, slot)
		return err
	}
	l.handlers[slot], l.gens[slot] = h, l.gen
	r.slot, r.gen = slot, l.gen
	return nil
}

// watched is the epoll events of a registration, with output or not.
func watched(out bool) uint32 {
	ev := uint32(unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET)
	if out {
		ev |= unix.EPOLLOUT
	}
	return ev
}

// WantWritable asks that r's socket fd be reported writable (Events.Writable)
// when it takes bytes again: call it when a write could not take them all, or
// for a connect in progress. From then on its output is watched as long as it
// is registered; before Register, the registration starts so.
func (l *Loop) WantWritable(fd int, r *Registration) error {
	if r.out {
		return nil
	}
	r.out = true
	if r.slot < 0 {
		return nil
	}
	// Edge-triggered: the change reports the socket at once if it takes
	// bytes by now, so no edge is lost between the write and here.
	ev := unix.EpollEvent{Events: watched(true), Fd: r.slot, Pad: int32(r.gen)}
	return epollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
}

// Forget drops a registration; closing the socket then takes it out of
// the epoll set.
func (l *Loop) Forget(r *Registration) {
	if r.slot >= 0 && l.gens[r.slot] == r.gen && l.handlers[r.slot] != nil {
		l.handlers[r.slot] = nil
		l.free = append(l.free, r.slot)
	}
	r.slot, r.out = -1, false
}

// Detach takes a registered socket out of the epoll set and drops its
// registration; its descriptor stays open.
func (l *Loop) Detach(fd int, r *Registration) {
	if r.slot >= 0 {
		_ = epollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		l.Forget(r)
	}
}
