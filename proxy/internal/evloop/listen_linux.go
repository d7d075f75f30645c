//go:build linux

package evloop

import (
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Listener is a listening socket served by every loop: each watches it,
// edge-triggered (EPOLLEXCLUSIVE: one loop wakes per arrival), and
// accepts until the queue is empty or a batch is taken.
type Listener struct {
	fd int
	// Accepted takes each accepted connection (non-blocking), on the loop
	// that accepted it.
	accepted func(l *Loop, fd int, peer netip.AddrPort)
	// backoff is asked how long to pause accepting, after the last
	// pause, when descriptors or memory ran out.
	backoff func(err error, last time.Duration) time.Duration
	// batch bounds the connections a loop accepts per wake-up.
	batch int
	// slot is the listener's place in each loop's listeners (by loop
	// id), -1 while it is not in that loop's epoll set, -2 once stopped;
	// delay is each loop's backoff. Each loop touches its own entries
	// only.
	slot  []int32
	delay []time.Duration
	// left counts the loops that still watch the socket; the last one to
	// let go closes it.
	left   atomic.Int32
	failed chan error
}

// MaxAcceptBatch bounds the connections a loop accepts per wake-up by
// default, so that a flood of them does not starve the tunnels it
// carries.
const MaxAcceptBatch = 64

// Listen serves the listening socket fd (which becomes the loops') on
// every loop: accepted gets each connection; backoff says how long
// accepting pauses, after the last pause, when descriptors or memory ran
// out; batch bounds the connections accepted
// per wake-up (0: MaxAcceptBatch). It returns nil without loops.
func Listen(fd int, batch int, accepted func(*Loop, int, netip.AddrPort), backoff func(error, time.Duration) time.Duration) *Listener {
	ls := Loops()
	if len(ls) == 0 {
		return nil
	}
	if batch <= 0 {
		batch = MaxAcceptBatch
	}
	ln := &Listener{
		fd: fd, accepted: accepted, backoff: backoff, batch: batch,
		slot: make([]int32, len(ls)), delay: make([]time.Duration, len(ls)),
		failed: make(chan error, 1),
	}
	for i := range ln.slot {
		ln.slot[i] = -1
	}
	ln.left.Store(int32(len(ls)))
	for _, l := range ls {
		l.Post(func() { l.watch(ln) })
	}
	return ln
}

// Failed receives the error that ended accepting, if any.
func (ln *Listener) Failed() <-chan error { return ln.failed }

// Stop takes the socket out of every loop and closes it. The connections
// that the kernel queued on it are accepted first, as any other: closing
// a listening socket resets them, which their clients would see after
// sending their requests.
func (ln *Listener) Stop() {
	for _, l := range Loops() {
		l.Post(func() {
			if ln.slot[l.id] == -2 {
				return // stopped already
			}
			l.unwatch(ln)
			ln.slot[l.id] = -2
			if ln.left.Add(-1) == 0 {
				ln.acceptQueued(l)
				_ = unix.Close(ln.fd)
			}
		})
	}
}

// acceptQueued accepts every connection waiting on the listening socket.
func (ln *Listener) acceptQueued(l *Loop) {
	for {
		fd, peer, err := accept4(ln.fd)
		switch err {
		case 0:
			ln.accepted(l, fd, peer)
		case unix.EINTR, unix.ECONNABORTED:
		default:
			return
		}
	}
}

func (ln *Listener) fail(err error) {
	select {
	case ln.failed <- err:
	default:
	}
}

// watch adds a listening socket to the loop's epoll set.
func (l *Loop) watch(ln *Listener) {
	if ln.slot[l.id] != -1 {
		return
	}
	idx := -1
	for i, x := range l.lns {
		if x == nil {
			idx = i
			break
		}
	}
	if idx < 0 {
		idx = len(l.lns)
		l.lns = append(l.lns, nil)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE | unix.EPOLLET, Fd: listenerToken(idx)}
	if err := epollCtl(l.epfd, unix.EPOLL_CTL_ADD, ln.fd, &ev); err != nil {
		ln.fail(err)
		return
	}
	l.lns[idx] = ln
	ln.slot[l.id] = int32(idx)
}

// unwatch takes a listening socket out of the loop's epoll set.
func (l *Loop) unwatch(ln *Listener) {
	idx := ln.slot[l.id]
	if idx < 0 {
		return
	}
	_ = epollCtl(l.epfd, unix.EPOLL_CTL_DEL, ln.fd, nil)
	l.lns[idx] = nil
	ln.slot[l.id] = -1
}

// accept takes the connections waiting on a listening socket, a batch at
// most.
func (ln *Listener) accept(l *Loop) {
	for range ln.batch {
		fd, peer, err := accept4(ln.fd)
		switch err {
		case 0:
			ln.delay[l.id] = 0
			ln.accepted(l, fd, peer)
			continue
		case unix.EAGAIN:
		case unix.EINTR, unix.ECONNABORTED:
			continue
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			// Back off. The socket leaves this loop's set meanwhile, or it
			// would wake the loop at once again.
			d := ln.backoff(err, ln.delay[l.id])
			ln.delay[l.id] = d
			l.unwatch(ln)
			time.AfterFunc(d, func() {
				l.Post(func() {
					if ln.slot[l.id] == -1 {
						l.watch(ln)
					}
				})
			})
		default:
			ln.fail(os.NewSyscallError("accept4", err))
		}
		return
	}
	// More may be waiting. The listening socket is edge-triggered: no
	// event comes for connections already queued, so a task wakes the
	// loop to go on.
	l.Post(func() {
		if ln.slot[l.id] >= 0 {
			ln.accept(l)
		}
	})
}
