package wstunnel

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// run feeds stream to a direction in chunks of the given sizes (cycled),
// asking for a close once closeAt bytes were read (closeAt < 0: never),
// and returns what the destination got and whether the tunnel failed.
// It drives the direction as every transport does.
func run(t *testing.T, stream []byte, chunks []int, closeAt int, from Side) (out []byte, failed bool) {
	t.Helper()
	s := New(time.Now(), 0, 0, nil, nil)
	d := s.Direction(from)
	closeNow := func() {
		s.RequestClose(&CloseRequest{Code: ClosePolicyViolation, Text: "revoked", Why: Revoked})
		if d.Close() {
			out = append(out, s.CloseFrame(from)...)
		}
	}
	pos := 0
	for i := 0; pos < len(stream); i++ {
		if closeAt >= 0 && pos >= closeAt && s.Closing() == nil {
			closeNow()
		}
		n := max(chunks[i%len(chunks)], 1)
		if closeAt > pos && closeAt < pos+n {
			n = closeAt - pos
		}
		p := stream[pos:min(pos+n, len(stream))]
		pos += len(p)
		k, sendClose := d.Forward(p)
		out = append(out, p[:k]...)
		s.Forwarded(from, k)
		if sendClose {
			out = append(out, s.CloseFrame(from)...)
		}
	}
	if closeAt >= 0 && s.Closing() == nil {
		closeNow()
	}
	_, failed = d.SourceEnded()
	s.DirectionDone(from)
	return out, failed
}

// frames splits a stream of whole frames at their ends.
func boundaries(t *testing.T, stream []byte) []int {
	t.Helper()
	var f Frames
	var b []int
	for i := range stream {
		f.Consume(stream[i:i+1], false)
		if f.AtBoundary() {
			b = append(b, i+1)
		}
	}
	return b
}

func TestCloseGoesInAtTheNextFrameBoundary(t *testing.T) {
	stream := bytes.Join([][]byte{
		frame(0x1, []byte("hello"), false),
		frame(0x2, bytes.Repeat([]byte{1}, 1000), false),
		frame(0x9, nil, false),
		frame(0x1, []byte("after"), false),
	}, nil)
	ends := boundaries(t, stream)
	for _, closeAt := range []int{0, 1, ends[0], ends[0] + 3, ends[1] - 1, ends[1], ends[2] + 1, len(stream)} {
		for _, chunk := range []int{1, 2, 7, 100, len(stream)} {
			out, failed := run(t, stream, []int{chunk}, closeAt, Pod)
			if failed {
				t.Fatalf("close at %d, chunks of %d: failed, the stream had whole frames", closeAt, chunk)
			}
			// Forwarded: the stream up to the first frame end at or after
			// the close, then exactly one Close frame toward the client.
			cut := 0
			for _, e := range ends {
				if e >= closeAt {
					cut = e
					break
				}
			}
			if closeAt == 0 {
				cut = 0
			}
			want := append(append([]byte(nil), stream[:cut]...), CloseFrame(ClosePolicyViolation, "revoked", false)...)
			if !bytes.Equal(out, want) {
				t.Fatalf("close at %d, chunks of %d: forwarded %d bytes, want %d (the stream up to byte %d, then the Close frame)",
					closeAt, chunk, len(out), len(want), cut)
			}
		}
	}
}

func TestCloseTowardThePodIsMasked(t *testing.T) {
	out, _ := run(t, frame(0x1, []byte("hi"), true), []int{1}, 1, Client)
	cf := out[len(out)-2-4-2-len("revoked"):]
	var f Frames
	if n := f.Consume(cf, false); n != len(cf) || !f.AtBoundary() || f.CloseCode() != ClosePolicyViolation {
		t.Fatalf("the Close frame toward the pod is not one frame with code 1008: % x", cf)
	}
	if cf[1]&0x80 == 0 {
		t.Fatal("the Close frame toward the pod is not masked")
	}
}

func TestStreamEndingInsideTheAwaitedFrameFails(t *testing.T) {
	stream := frame(0x2, bytes.Repeat([]byte{1}, 100), false)
	if _, failed := run(t, stream[:50], []int{10}, 20, Pod); !failed {
		t.Fatal("the stream ended inside the frame the close waited for, and the direction did not fail")
	}
	// Without a close pending, the end of stream is passed on.
	s := New(time.Now(), 0, 0, nil, nil)
	d := s.Direction(Client)
	d.Forward(stream[:50])
	if end, failed := d.SourceEnded(); !end || failed {
		t.Fatalf("an open direction's end of stream: pass it on %v, failed %v", end, failed)
	}
}

func TestFirstCloseFrameNamesWhoClosed(t *testing.T) {
	s := New(time.Now(), 0, 0, nil, nil)
	pod := frame(0x8, []byte{0x03, 0xe8}, false)   // 1000 from the pod
	client := frame(0x8, []byte{0x03, 0xe9}, true) // 1001 from the client, later
	for i := range pod {
		n, _ := s.Direction(Pod).Forward(pod[i : i+1])
		s.Forwarded(Pod, n)
	}
	n, _ := s.Direction(Client).Forward(client)
	s.Forwarded(Client, n)
	// The pod's code came a byte at a time: it is complete once its
	// direction is over.
	s.DirectionDone(Pod)
	s.DirectionDone(Client)
	if why, code := s.Ending(); why != ByPod || code != 1000 {
		t.Fatalf("ending %s %d, want pod 1000", why, code)
	}
	if got := s.Bytes(Pod); got != int64(len(pod)) {
		t.Fatalf("bytes from the pod %d, want %d", got, len(pod))
	}
	// A close the gateway asked for names the tunnel's end instead.
	s.RequestClose(&CloseRequest{Code: CloseGoingAway, Text: "bye", Why: Shutdown})
	if why, code := s.Ending(); why != Shutdown || code != CloseGoingAway {
		t.Fatalf("ending %s %d, want shutdown 1001", why, code)
	}
}

func TestDeadlines(t *testing.T) {
	now := time.Unix(1000, 0)
	s := New(now, 10*time.Second, 25*time.Second, nil, nil)
	if got := s.NextDeadline(); !got.Equal(now.Add(10 * time.Second)) {
		t.Fatalf("next deadline %v, want the idle timeout", got)
	}
	if cr := s.Expired(now.Add(9 * time.Second)); cr != nil {
		t.Fatalf("expired early: %+v", cr)
	}
	s.Touch(now.Add(20 * time.Second).UnixNano())
	if got := s.NextDeadline(); !got.Equal(now.Add(25 * time.Second)) {
		t.Fatalf("next deadline %v, want the lifetime", got)
	}
	if cr := s.Expired(now.Add(21 * time.Second)); cr != nil {
		t.Fatalf("expired while active: %+v", cr)
	}
	if cr := s.Expired(now.Add(25 * time.Second)); cr == nil || cr.Why != Lifetime {
		t.Fatalf("at the lifetime: %+v", cr)
	}
	idle := New(now, time.Second, 0, nil, nil)
	if cr := idle.Expired(now.Add(time.Second)); cr == nil || cr.Why != Idle || cr.Code != CloseGoingAway {
		t.Fatalf("idle: %+v", cr)
	}
	if none := New(now, 0, 0, nil, nil); none.Timed() || !none.NextDeadline().IsZero() {
		t.Fatal("a tunnel without bounds has a deadline")
	}
}

// FuzzCloseAtABoundary drives a direction with frames, chunk sizes and a
// close point from the fuzzer: what reaches the destination is always the
// stream up to a frame end at or after the close, then one Close frame,
// then nothing; or the direction fails when the stream ends inside that
// frame.
func FuzzCloseAtABoundary(f *testing.F) {
	f.Add([]byte{1, 5, 2, 200, 9, 0}, []byte{3, 1, 7}, uint16(4), true)
	f.Add([]byte{2, 130, 1, 0}, []byte{200}, uint16(0), false)
	f.Fuzz(func(t *testing.T, spec, chunkSpec []byte, closeAt uint16, masked bool) {
		var stream []byte
		for i := 0; i+1 < len(spec) && len(stream) < 1<<16; i += 2 {
			op := []byte{0x0, 0x1, 0x2, 0x8, 0x9, 0xa}[int(spec[i])%6]
			size := int(spec[i+1])
			if op >= 0x8 {
				size %= 126
			} else {
				size *= int(spec[i]) + 1 // up to 16-bit lengths
			}
			payload := bytes.Repeat([]byte{spec[i]}, size)
			if op == 0x8 && size >= 2 {
				binary.BigEndian.PutUint16(payload, 1000)
			}
			stream = append(stream, frame(op, payload, masked)...)
		}
		if len(stream) == 0 {
			return
		}
		chunks := make([]int, 0, len(chunkSpec)+1)
		for _, c := range chunkSpec {
			chunks = append(chunks, int(c)+1)
		}
		if len(chunks) == 0 {
			chunks = append(chunks, len(stream))
		}
		// The stream is cut somewhere when the fuzzer's close point lands
		// past its end: a source that ends mid-frame.
		cutStream := stream
		if int(closeAt) > len(stream) {
			cutStream = stream[:int(closeAt)%len(stream)]
		}
		if len(cutStream) == 0 {
			return
		}
		at := int(closeAt) % (len(cutStream) + 1)
		out, failed := run(t, cutStream, chunks, at, Client)
		ends := append([]int{0}, boundaries(t, cutStream)...)
		cut := -1
		for _, e := range ends {
			if e >= at {
				cut = e
				break
			}
		}
		if cut < 0 {
			if !failed {
				t.Fatalf("the stream ended inside the awaited frame (close at %d of %d) without failing", at, len(cutStream))
			}
			if !bytes.Equal(out, cutStream[:len(out)]) {
				t.Fatal("a failing direction forwarded bytes that are not the stream's")
			}
			return
		}
		if failed {
			t.Fatalf("failed with a boundary at %d after the close at %d", cut, at)
		}
		if !bytes.Equal(out[:min(cut, len(out))], cutStream[:cut]) || len(out) <= cut {
			t.Fatalf("close at %d: forwarded %d bytes, not the stream up to its frame end %d and a Close frame", at, len(out), cut)
		}
		var tail Frames
		rest := out[cut:]
		if n := tail.Consume(rest, false); n != len(rest) || !tail.AtBoundary() || tail.CloseCode() != ClosePolicyViolation || rest[1]&0x80 == 0 {
			t.Fatalf("close at %d: after the stream came % x, not one masked Close frame 1008", at, rest)
		}
	})
}

// TestClosingHandshakeIsDoneOnceAWholeCloseWentEachWay: a Close frame
// counts once its last byte went on, in whatever pieces it came; data
// frames do not count; both directions need theirs.
func TestClosingHandshakeIsDoneOnceAWholeCloseWentEachWay(t *testing.T) {
	data := AppendFrame(nil, 0x2, []byte("payload"), nil)
	fromPod := append(append([]byte(nil), data...), CloseFrame(1000, "bye", false)...)
	fromClient := append(AppendFrame(nil, 0x1, []byte("hi"), &[4]byte{1, 2, 3, 4}), CloseFrame(1000, "", true)...)
	s := New(time.Now(), 0, 0, nil, nil)
	feed := func(from Side, p []byte) {
		n, _ := s.Direction(from).Forward(p)
		s.Forwarded(from, n)
	}
	// The pod's data frame and all but the last byte of its Close.
	feed(Pod, fromPod[:len(fromPod)-1])
	if s.Direction(Pod).ClosePassed() {
		t.Fatal("a Close frame short of its last byte counted as passed")
	}
	feed(Pod, fromPod[len(fromPod)-1:])
	if !s.Direction(Pod).ClosePassed() {
		t.Fatal("the pod's whole Close frame did not count")
	}
	if s.ClosingHandshakeDone() {
		t.Fatal("done with a Close one way only")
	}
	// The client's frames one byte at a time.
	for i := range fromClient {
		if s.ClosingHandshakeDone() {
			t.Fatalf("done after %d of the client's %d bytes", i, len(fromClient))
		}
		feed(Client, fromClient[i:i+1])
	}
	if !s.ClosingHandshakeDone() {
		t.Fatal("not done after a whole Close frame each way")
	}
	// Data frames alone never count.
	d := New(time.Now(), 0, 0, nil, nil)
	n, _ := d.Direction(Client).Forward(data)
	d.Forwarded(Client, n)
	if d.Direction(Client).ClosePassed() {
		t.Fatal("a data frame counted as a Close")
	}
}
