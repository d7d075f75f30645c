package proxy

import (
	"sync"
	"time"

	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
)

// tunnel is one websocket between a client and a pod after the
// handshake: its state over the byte streams (ws.State: frames, the
// close at a boundary, deadlines, who ended it), what names it (for the
// registry, revocation and the access log), and the engine that carries
// its bytes.
type tunnel struct {
	st *ws.State
	// slot is the tunnel's place under the caps, released when it is
	// unregistered.
	slot *slot
	// info names the tunnel for the registry and the access log.
	info *tunnelInfo
	// drainOnRevoke is the route's revokePolicy when the tunnel opened.
	drainOnRevoke bool
	metrics       tunnelMetrics
	opened        time.Time

	mu sync.Mutex
	// carrier is the engine carrying the tunnel, once it carries it.
	carrier carrier
}

// carrier is an engine that carries a tunnel's bytes: it is told when a
// close is requested, and applies it to each direction through the
// tunnel's state.
type carrier interface {
	closeRequested()
}

// newTunnel prepares a tunnel opened now, bounded by idle and lifetime
// (0: none), with the bytes each side sent along with the handshake.
func newTunnel(idle, lifetime time.Duration, clientPending, podPending []byte) *tunnel {
	now := time.Now()
	return &tunnel{st: ws.New(now, idle, lifetime, clientPending, podPending), opened: now}
}

// setMetrics sets the tunnel's metric series.
func (t *tunnel) setMetrics(m tunnelMetrics) {
	t.metrics = m
	t.st.CountInto(m.fromClient, m.fromPod)
}

// carry records the engine that carries the tunnel from now on.
func (t *tunnel) carry(c carrier) {
	t.mu.Lock()
	t.carrier = c
	t.mu.Unlock()
}

// Close asks the tunnel to end with a Close frame (code, text) sent to
// both peers at their next frame boundary. It returns at once; the first
// request stands.
func (t *tunnel) Close(code uint16, text string, why ws.Reason) {
	t.close(&ws.CloseRequest{Code: code, Text: text, Why: why})
}

func (t *tunnel) close(cr *ws.CloseRequest) {
	if !t.st.RequestClose(cr) {
		return
	}
	t.mu.Lock()
	c := t.carrier
	t.mu.Unlock()
	// Without a carrier yet, the engine looks at the request when it
	// starts.
	if c != nil {
		c.closeRequested()
	}
}

// begin counts the tunnel as active, whichever engine carries it.
func (t *tunnel) begin() {
	if t.metrics.active != nil {
		t.metrics.active.Inc()
	}
}

// end counts the tunnel as no longer active, once both connections are
// closed.
func (t *tunnel) end() {
	if t.metrics.active != nil {
		t.metrics.active.Dec()
	}
}
