package wstunnel

import (
	"sync"
	"sync/atomic"
	"time"
)

// Reason says why a tunnel ended.
type Reason string

// Reasons a tunnel ends.
const (
	ByClient Reason = "client"
	ByPod    Reason = "pod"
	Idle     Reason = "idle"
	Lifetime Reason = "lifetime"
	Revoked  Reason = "revoked"
	Expired  Reason = "expired"
	Shutdown Reason = "shutdown"
	Failed   Reason = "error"
)

// endedBy is who ends the stream read from each side.
var endedBy = [2]Reason{Client: ByClient, Pod: ByPod}

// CloseGrace bounds how long a closing tunnel waits for the current frame
// to end and for the peers to answer the Close frame.
const CloseGrace = time.Second

// CloseRequest is a close the gateway asks for: Code and Text go into the
// Close frames sent both ways, Why into logs and metrics.
type CloseRequest struct {
	Code uint16
	Text string
	Why  Reason
}

// Counter counts bytes (a Prometheus counter fits).
type Counter interface{ Add(float64) }

// State is what both directions of a tunnel share: the close request,
// activity and deadlines, byte counts, and who ended the tunnel. Its
// methods are safe for concurrent use; each Direction is not.
type State struct {
	dir [2]Direction
	// pending are the bytes read from each side during the handshake,
	// forwarded before anything else (nil when neither sent any, as in
	// most tunnels).
	pending *[2][]byte

	idle time.Duration // 0: none
	// deadline (the maximum lifetime) and expiry (the credentials'), in
	// unix nanoseconds; 0: none.
	deadline, expiry int64

	lastActive atomic.Int64 // unix nanoseconds
	closing    atomic.Pointer[CloseRequest]

	bytes    [2]atomic.Int64
	counters [2]Counter
	// noted: the first Close frame of each direction was recorded.
	noted [2]bool

	mu sync.Mutex
	// firstClose is the side whose Close frame came first, and its code.
	firstClose     Reason
	firstCloseCode uint16
	// ended is the first reason recorded.
	ended Reason
}

// New returns the state of a tunnel opened now: idle and lifetime bound it
// (0: no bound); pending are the bytes each side sent with the handshake.
func New(now time.Time, idle, lifetime time.Duration, clientPending, podPending []byte) *State {
	s := &State{idle: max(idle, 0)}
	if len(clientPending) > 0 || len(podPending) > 0 {
		s.pending = &[2][]byte{clientPending, podPending}
	}
	if lifetime > 0 {
		s.deadline = now.Add(lifetime).UnixNano()
	}
	s.lastActive.Store(now.UnixNano())
	return s
}

// ExpireAt makes the tunnel close with 1008 at t, when the credentials it
// was opened with expire. It must be called before the tunnel is carried.
func (s *State) ExpireAt(t time.Time) {
	s.expiry = 0
	if !t.IsZero() {
		s.expiry = t.UnixNano()
	}
}

// CountInto adds the bytes read from each side to c[side] too.
func (s *State) CountInto(fromClient, fromPod Counter) {
	s.counters = [2]Counter{fromClient, fromPod}
}

// Direction is the state of the bytes read from side.
func (s *State) Direction(from Side) *Direction { return &s.dir[from] }

// TakePending returns, once, the bytes side sent with the handshake.
func (s *State) TakePending(from Side) []byte {
	if s.pending == nil {
		return nil
	}
	p := s.pending[from]
	s.pending[from] = nil
	return p
}

// RequestClose records a close the gateway asks for; false if one was
// already recorded (the first one stands).
func (s *State) RequestClose(cr *CloseRequest) bool {
	if !s.closing.CompareAndSwap(nil, cr) {
		return false
	}
	s.SetEnded(cr.Why)
	return true
}

// Closing returns the close request, or nil.
func (s *State) Closing() *CloseRequest { return s.closing.Load() }

// CloseFrame is the Close frame that the direction from side writes to
// the other side: masked toward the pod.
func (s *State) CloseFrame(from Side) []byte {
	cr := s.closing.Load()
	return CloseFrame(cr.Code, cr.Text, from.Other() == Pod)
}

// Forwarded accounts n bytes from side that went on, and records the
// direction's first Close frame (who closed first) as soon as it is seen.
func (s *State) Forwarded(from Side, n int) {
	s.bytes[from].Add(int64(n))
	if c := s.counters[from]; c != nil {
		c.Add(float64(n))
	}
	if f := &s.dir[from].frames; f.closeSeen && !s.noted[from] {
		s.noted[from] = true
		s.noteClose(endedBy[from], f.CloseCode())
	}
}

// DirectionDone records the direction's Close frame again once the
// direction is over, when its code is surely complete.
func (s *State) DirectionDone(from Side) {
	if f := &s.dir[from].frames; f.closeSeen {
		s.noteClose(endedBy[from], f.CloseCode())
	}
}

// Bytes is the number of bytes read from side and forwarded.
func (s *State) Bytes(from Side) int64 { return s.bytes[from].Load() }

func (s *State) noteClose(by Reason, code uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.firstClose == "" {
		s.firstClose = by
	}
	if s.firstClose == by && code != 0 {
		s.firstCloseCode = code
	}
}

// SetEnded records why the tunnel ends, unless a reason was recorded.
func (s *State) SetEnded(why Reason) {
	s.mu.Lock()
	if s.ended == "" {
		s.ended = why
	}
	s.mu.Unlock()
}

// ClosingHandshakeDone reports whether a whole Close frame went each way:
// the websocket's closing handshake is over, and neither side may send
// anything more. It reads both directions: call it where one goroutine
// carries both.
func (s *State) ClosingHandshakeDone() bool {
	return s.dir[Client].ClosePassed() && s.dir[Pod].ClosePassed()
}

// SourceEnded records that side ended its stream.
func (s *State) SourceEnded(from Side) { s.SetEnded(endedBy[from]) }

// Ending says why the tunnel ended and with which close code (0: none):
// a close the gateway asked for, else the side whose Close frame came
// first, else the side that ended its stream or the error.
func (s *State) Ending() (Reason, uint16) {
	if cr := s.closing.Load(); cr != nil {
		return cr.Why, cr.Code
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.firstClose != "" {
		return s.firstClose, s.firstCloseCode
	}
	return s.ended, 0
}

// Touch records activity at now (unix nanoseconds).
func (s *State) Touch(now int64) { s.lastActive.Store(now) }

// Timed reports whether an idle timeout or a maximum lifetime bounds the
// tunnel.
func (s *State) Timed() bool { return s.idle > 0 || s.deadline != 0 || s.expiry != 0 }

// NextDeadline is the earliest of the idle timeout, the maximum lifetime
// and the credentials' expiry; zero when none bounds the tunnel.
func (s *State) NextDeadline() time.Time {
	var next time.Time
	if s.idle > 0 {
		next = time.Unix(0, s.lastActive.Load()).Add(s.idle)
	}
	for _, d := range [...]int64{s.deadline, s.expiry} {
		if d != 0 && (next.IsZero() || d < next.UnixNano()) {
			next = time.Unix(0, d)
		}
	}
	return next
}

// Expired returns the close to ask for when, at now, the tunnel's
// lifetime is over or it has been idle too long; nil otherwise (a
// deadline that passed while the other direction was busy is simply
// armed again).
func (s *State) Expired(now time.Time) *CloseRequest {
	if s.expiry != 0 && now.UnixNano() >= s.expiry {
		return &CloseRequest{Code: ClosePolicyViolation, Text: "credentials expired", Why: Expired}
	}
	if s.deadline != 0 && now.UnixNano() >= s.deadline {
		return &CloseRequest{Code: CloseGoingAway, Text: "maximum connection lifetime reached", Why: Lifetime}
	}
	if s.idle > 0 && now.Sub(time.Unix(0, s.lastActive.Load())) >= s.idle {
		return &CloseRequest{Code: CloseGoingAway, Text: "idle timeout", Why: Idle}
	}
	return nil
}
