// Package wstunnel is the state of a websocket tunnel, over byte streams
// and without sockets: where frames end in each direction, how a close the
// gateway asks for is carried out at a frame boundary, who closed first,
// and when the tunnel is idle or too old. The gateway's transports move
// the bytes and report what their sockets did; they decide nothing.
//
// A tunnel has two directions, one per Side: bytes read from that side go
// to the other. Each Direction is used by one goroutine at a time (the
// one carrying that direction); a State is shared by both.
package wstunnel

// Side is one peer of a tunnel.
type Side uint8

const (
	// Client is the browser's side.
	Client Side = 0
	// Pod is the pod's side.
	Pod Side = 1
)

// Other is the side across the tunnel.
func (s Side) Other() Side { return 1 - s }

func (s Side) String() string {
	if s == Client {
		return "client"
	}
	return "pod"
}

// Phase is where a direction is in its life.
type Phase uint8

const (
	// Forwarding means every byte goes on.
	Forwarding Phase = iota
	// ToBoundary means a close is pending; bytes go on up to the end of the
	// current frame.
	ToBoundary
	// Discarding means the gateway's Close frame was sent; what the source
	// still sends (its answer to the Close) is dropped until it ends.
	Discarding
	// Ended means the source ended its stream.
	Ended
)

// Direction is the state of the bytes read from one side. The transport
// gives it what it read (Forward), the end of the source's stream
// (SourceEnded) and the gateway's close request (Close); it says what to
// write to the destination.
type Direction struct {
	frames Frames
	phase  Phase
}

// Phase reports where the direction is.
func (d *Direction) Phase() Phase { return d.phase }

// ClosePassed reports whether a whole Close frame went on in this
// direction: its source may send nothing after it (RFC 6455, section
// 5.5.1).
func (d *Direction) ClosePassed() bool { return d.frames.closeSeen && d.frames.AtBoundary() }

// Forward takes bytes read from the source and returns how many of them,
// from the start, go to the destination; the rest are dropped. With
// sendClose, the transport writes the Close frame (State.CloseFrame)
// after them and then ends the destination's stream.
func (d *Direction) Forward(p []byte) (n int, sendClose bool) {
	switch d.phase {
	case Forwarding:
		return d.frames.Consume(p, false), false
	case ToBoundary:
		n = d.frames.Consume(p, true)
		if d.frames.AtBoundary() {
			d.phase = Discarding
			return n, true
		}
		return n, false
	default:
		return 0, false
	}
}

// Close applies the gateway's close request to the direction. With
// sendClose, the direction is at a frame boundary: the transport writes
// the Close frame now and ends the destination's stream; otherwise the
// Close goes after the current frame (see Forward).
func (d *Direction) Close() (sendClose bool) {
	if d.phase != Forwarding {
		return false
	}
	if d.frames.AtBoundary() {
		d.phase = Discarding
		return true
	}
	d.phase = ToBoundary
	return false
}

// SourceEnded takes the end of the source's stream. With endDestination
// the end is passed on (the tunnel is half-closed, and the other
// direction goes on); failed means the stream ended inside the frame a
// close was waiting for, which leaves no boundary to close at: the
// transport ends the tunnel at once.
func (d *Direction) SourceEnded() (endDestination, failed bool) {
	switch d.phase {
	case Forwarding:
		d.phase = Ended
		return true, false
	case ToBoundary:
		d.phase = Ended
		return false, true
	default:
		d.phase = Ended
		return false, false
	}
}
