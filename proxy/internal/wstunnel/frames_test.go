package wstunnel

import (
	"bytes"
	"slices"
	"testing"
)

// frame encodes one websocket frame (FIN set), masked with a fixed key
// when masked.
func frame(opcode byte, payload []byte, masked bool) []byte {
	if masked {
		return AppendFrame(nil, opcode, payload, &[4]byte{0x11, 0x22, 0x33, 0x44})
	}
	return AppendFrame(nil, opcode, payload, nil)
}

func TestFrameTrackerFindsBoundariesInAnySplit(t *testing.T) {
	var stream []byte
	var boundaries []int
	for _, f := range [][]byte{
		frame(0x1, []byte("hi"), false),
		frame(0x2, bytes.Repeat([]byte{7}, 300), true),      // 16-bit length
		frame(0x2, bytes.Repeat([]byte{8}, 70000), false),   // 64-bit length
		frame(0x9, nil, true),                               // empty ping
		frame(0x8, []byte{0x03, 0xe9, 'b', 'y', 'e'}, true), // Close 1001
	} {
		stream = append(stream, f...)
		boundaries = append(boundaries, len(stream))
	}
	// Byte by byte, the tracker is at a boundary exactly at frame ends.
	var tr Frames
	var found []int
	for i := range stream {
		tr.Consume(stream[i:i+1], false)
		if tr.AtBoundary() {
			found = append(found, i+1)
		}
	}
	if !slices.Equal(found, boundaries) {
		t.Fatalf("boundaries %v, want %v", found, boundaries)
	}
	if tr.CloseCode() != 1001 {
		t.Errorf("close code %d, want 1001", tr.CloseCode())
	}
	// In chunks of any size, once a frame has begun, consume with
	// stopAtBoundary stops at its end.
	for _, chunk := range []int{1, 2, 3, 7, 100, 4096, len(stream)} {
		var tr Frames
		pos, next := 0, 0
		for pos < len(stream) {
			if tr.AtBoundary() {
				// Start the next frame with one byte.
				pos += tr.Consume(stream[pos:pos+1], false)
				if tr.AtBoundary() {
					t.Fatalf("chunk %d: a one-byte frame?", chunk)
				}
				continue
			}
			end := min(pos+chunk, len(stream))
			pos += tr.Consume(stream[pos:end], true)
			if tr.AtBoundary() {
				if pos != boundaries[next] {
					t.Fatalf("chunk %d: stopped at %d, want %d", chunk, pos, boundaries[next])
				}
				next++
			}
		}
		if next != len(boundaries) || tr.CloseCode() != 1001 {
			t.Errorf("chunk %d: found %d boundaries and code %d", chunk, next, tr.CloseCode())
		}
	}
}

func TestCloseFrameEncodesCodeAndMask(t *testing.T) {
	var tr Frames
	for _, masked := range []bool{false, true} {
		f := CloseFrame(1008, "pod is no longer allowlisted", masked)
		tr = Frames{}
		if n := tr.Consume(f, false); n != len(f) || !tr.AtBoundary() {
			t.Fatalf("masked=%v: the Close frame is not one whole frame", masked)
		}
		if tr.CloseCode() != 1008 {
			t.Errorf("masked=%v: code %d, want 1008", masked, tr.CloseCode())
		}
		if masked != (f[1]&0x80 != 0) {
			t.Errorf("mask bit %v, want %v", f[1]&0x80 != 0, masked)
		}
	}
	if long := CloseFrame(1001, string(bytes.Repeat([]byte("x"), 200)), false); len(long) != 2+125 {
		t.Errorf("a long reason makes a %d-byte frame; control frames carry at most 125 bytes", len(long))
	}
}
