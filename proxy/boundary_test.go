package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	ws "github.com/wsgate/wsgate/proxy/internal/wstunnel"
)

// TestRevocationClosesAtAFrameBoundary revokes a tunnel while a frame is
// half sent in each direction, on every engine: each peer gets the rest
// of its frame, then the Close frame 1008 (masked toward the pod), and
// nothing that came after it.
func TestRevocationClosesAtAFrameBoundary(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		f := newHostileFixture(t, e.opts)
		podFrame := ws.AppendFrame(nil, 0x2, bytes.Repeat([]byte{'p'}, 1000), nil)
		clientFrame := ws.AppendFrame(nil, 0x2, bytes.Repeat([]byte{'c'}, 700), &[4]byte{1, 2, 3, 4})
		after := ws.AppendFrame(nil, 0x1, []byte("after the close"), nil)
		rest := make(chan struct{})
		atPod := make(chan []byte, 1)
		f.podA.setScript(func(pc *podConn) {
			if !upgrade101(pc) {
				return
			}
			if _, err := pc.c.Write(podFrame[:500]); err != nil {
				return
			}
			<-rest
			_, _ = pc.c.Write(append(podFrame[500:len(podFrame):len(podFrame)], after...))
			_ = pc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, _ := io.ReadAll(pc.br)
			atPod <- got
		})
		a := openRaw(t, f, e)
		_ = a.conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := a.conn.Write(clientFrame[:300]); err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 500)
		if _, err := io.ReadFull(a.br, head); err != nil || !bytes.Equal(head, podFrame[:500]) {
			t.Fatalf("the first half of the pod's frame: %v", err)
		}
		for forwardedFromClient(f.g) < 300 {
			time.Sleep(5 * time.Millisecond)
		}

		rooms := *f.routeRooms
		rooms.Backends = nil
		f.g.publish(&rooms, f.routeOther, f.routeTenant, f.routeApp)
		// Both directions now wait for their frame to end.
		time.Sleep(100 * time.Millisecond)
		close(rest)
		if _, err := a.conn.Write(append(clientFrame[300:len(clientFrame):len(clientFrame)], ws.AppendFrame(nil, 0x1, []byte("late"), &[4]byte{5, 6, 7, 8})...)); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(a.br)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the client's connection stayed open after the Close frame")
		}
		checkClosedAtBoundary(t, "client", got, podFrame[500:], false)
		select {
		case got := <-atPod:
			checkClosedAtBoundary(t, "pod", got, clientFrame, true)
		case <-time.After(10 * time.Second):
			t.Fatal("the pod's side did not end")
		}
		waitNoTunnels(t, f.g)
	})
}

// checkClosedAtBoundary checks that got is want, then one Close frame 1008
// (masked or not), then nothing.
func checkClosedAtBoundary(t *testing.T, who string, got, want []byte, masked bool) {
	t.Helper()
	if !bytes.HasPrefix(got, want) {
		n := min(len(got), len(want))
		i := 0
		for i < n && got[i] == want[i] {
			i++
		}
		t.Fatalf("the %s got %d bytes, not the rest of its frame (%d bytes): they differ at byte %d", who, len(got), len(want), i)
	}
	var fr ws.Frames
	tail := got[len(want):]
	if n := fr.Consume(tail, false); len(tail) < 2 || n != len(tail) || !fr.AtBoundary() || fr.CloseCode() != ws.ClosePolicyViolation ||
		tail[0]&0x0f != 0x8 || (tail[1]&0x80 != 0) != masked {
		t.Fatalf("the %s got % x after its frame, want one Close frame 1008 (masked: %v) and nothing else", who, tail, masked)
	}
	// One frame only: a second would be bytes after the Close.
	var one ws.Frames
	k := 0
	for k < len(tail) {
		one.Consume(tail[k:k+1], false)
		k++
		if one.AtBoundary() {
			break
		}
	}
	if k != len(tail) {
		t.Fatalf("the %s got %d bytes after the Close frame", who, len(tail)-k)
	}
}
