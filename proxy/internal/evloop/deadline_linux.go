//go:build linux

package evloop

import "time"

// A Deadline is a time at which its loop calls a function (Calls), on
// the loop's goroutine: the timeouts of the sockets a loop serves. A
// Deadline belongs to one loop.
//
// A loop keeps its deadlines in a heap under one runtime timer, armed for
// the earliest. Timeouts are mostly the same span from now, so a new
// deadline is mostly later than the armed one and costs no timer change:
// a runtime timer per socket, made, moved and stopped per connection,
// wakes a sleeping thread whenever it becomes the process's earliest.
type Deadline struct {
	at  int64 // since epoch, nanoseconds
	idx int   // place in the heap, +1; 0: not in it
	fn  func()
}

// epoch is what deadlines are counted from: with Go's monotonic clock, so
// that a step of the wall clock moves none.
var epoch = time.Now()

// sinceEpoch is t on the deadlines' clock: as far from now as
// time.Until(t) says (by the monotonic clock when t has its reading, as
// time.Now and what is added to it have; by the wall clock otherwise).
func sinceEpoch(t time.Time) int64 {
	now := time.Now()
	return int64(now.Sub(epoch) + t.Sub(now))
}

// deadlines are a loop's: a min-heap by time, and the timer.
type deadlines struct {
	heap  []*Deadline
	timer *time.Timer
	armed int64 // when the timer fires, since epoch; 0: stopped or fired
}

// Calls sets the function that d's loop calls when d comes.
func (d *Deadline) Calls(fn func()) { d.fn = fn }

// SetDeadline makes the loop call d's function at at, or as soon as it
// can if at has passed, unless d is stopped or set again first. Call it
// on the loop's goroutine.
func (l *Loop) SetDeadline(d *Deadline, at time.Time) {
	d.at = sinceEpoch(at)
	h := &l.dl
	if d.idx == 0 {
		h.heap = append(h.heap, d)
		d.idx = len(h.heap)
		h.up(d.idx - 1)
	} else {
		h.fix(d.idx - 1)
	}
	l.armDeadlines()
}

// StopDeadline takes d out of the loop's deadlines; fn is not called.
// Call it on the loop's goroutine.
func (l *Loop) StopDeadline(d *Deadline) {
	if d.idx == 0 {
		return
	}
	h := &l.dl
	i, last := d.idx-1, len(h.heap)-1
	if i != last {
		h.swap(i, last)
	}
	h.heap[last] = nil
	h.heap = h.heap[:last]
	d.idx = 0
	if i != last {
		h.fix(i)
	}
	// The timer stays armed: when it fires for nothing, it is armed
	// for the earliest of the rest.
}

// armDeadlines moves the timer earlier when the earliest deadline is
// before it.
func (l *Loop) armDeadlines() {
	h := &l.dl
	if len(h.heap) == 0 {
		return
	}
	at := h.heap[0].at
	if h.armed != 0 && h.armed <= at {
		return
	}
	h.armed = at
	wait := time.Duration(max(at-int64(time.Since(epoch)), 0))
	if h.timer == nil {
		h.timer = time.AfterFunc(wait, func() { l.Post(l.fireDeadlines) })
		return
	}
	h.timer.Reset(wait)
}

// fireDeadlines calls the functions whose deadlines have come, then arms
// the timer for the next.
func (l *Loop) fireDeadlines() {
	h := &l.dl
	h.armed = 0
	t := time.Now()
	l.now = t.UnixNano()
	now := int64(t.Sub(epoch))
	for len(h.heap) > 0 && h.heap[0].at <= now {
		d := h.heap[0]
		l.StopDeadline(d)
		d.fn()
	}
	l.armDeadlines()
}

func (h *deadlines) less(i, j int) bool { return h.heap[i].at < h.heap[j].at }

func (h *deadlines) swap(i, j int) {
	h.heap[i], h.heap[j] = h.heap[j], h.heap[i]
	h.heap[i].idx, h.heap[j].idx = i+1, j+1
}

func (h *deadlines) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h *deadlines) down(i int) {
	n := len(h.heap)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if r := c + 1; r < n && h.less(r, c) {
			c = r
		}
		if !h.less(c, i) {
			return
		}
		h.swap(i, c)
		i = c
	}
}

func (h *deadlines) fix(i int) {
	h.up(i)
	h.down(i)
}
