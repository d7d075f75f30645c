package proxy

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
)

// frame encodes one websocket frame (FIN set).
func frame(opcode byte, payload []byte, masked bool) []byte {
	var b bytes.Buffer
	b.WriteByte(0x80 | opcode)
	m := byte(0)
	if masked {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b.WriteByte(m | byte(n))
	case n < 1<<16:
		b.WriteByte(m | 126)
		_ = binary.Write(&b, binary.BigEndian, uint16(n))
	default:
		b.WriteByte(m | 127)
		_ = binary.Write(&b, binary.BigEndian, uint64(n))
	}
	p := append([]byte(nil), payload...)
	if masked {
		key := []byte{0x11, 0x22, 0x33, 0x44}
		b.Write(key)
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	b.Write(p)
	return b.Bytes()
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
	var tr frameTracker
	var found []int
	for i := range stream {
		tr.consume(stream[i:i+1], false)
		if tr.atBoundary() {
			found = append(found, i+1)
		}
	}
	if !slices.Equal(found, boundaries) {
		t.Fatalf("boundaries %v, want %v", found, boundaries)
	}
	if tr.peerCloseCode() != 1001 {
		t.Errorf("close code %d, want 1001", tr.peerCloseCode())
	}
	// In chunks of any size, once a frame has begun, consume with
	// stopAtBoundary stops at its end.
	for _, chunk := range []int{1, 2, 3, 7, 100, 4096, len(stream)} {
		var tr frameTracker
		pos, next := 0, 0
		for pos < len(stream) {
			if tr.atBoundary() {
				// Start the next frame with one byte.
				pos += tr.consume(stream[pos:pos+1], false)
				if tr.atBoundary() {
					t.Fatalf("chunk %d: a one-byte frame?", chunk)
				}
				continue
			}
			end := min(pos+chunk, len(stream))
			pos += tr.consume(stream[pos:end], true)
			if tr.atBoundary() {
				if pos != boundaries[next] {
					t.Fatalf("chunk %d: stopped at %d, want %d", chunk, pos, boundaries[next])
				}
				next++
			}
		}
		if next != len(boundaries) || tr.peerCloseCode() != 1001 {
			t.Errorf("chunk %d: found %d boundaries and code %d", chunk, next, tr.peerCloseCode())
		}
	}
}

func TestCloseFrameEncodesCodeAndMask(t *testing.T) {
	var tr frameTracker
	for _, masked := range []bool{false, true} {
		f := closeFrame(1008, "pod is no longer allowlisted", masked)
		tr = frameTracker{}
		if n := tr.consume(f, false); n != len(f) || !tr.atBoundary() {
			t.Fatalf("masked=%v: the Close frame is not one whole frame", masked)
		}
		if tr.peerCloseCode() != 1008 {
			t.Errorf("masked=%v: code %d, want 1008", masked, tr.peerCloseCode())
		}
		if masked != (f[1]&0x80 != 0) {
			t.Errorf("mask bit %v, want %v", f[1]&0x80 != 0, masked)
		}
	}
	if long := closeFrame(1001, string(bytes.Repeat([]byte("x"), 200)), false); len(long) != 2+125 {
		t.Errorf("a long reason makes a %d-byte frame; control frames carry at most 125 bytes", len(long))
	}
}
