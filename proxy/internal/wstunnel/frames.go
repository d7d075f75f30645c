package wstunnel

import (
	"crypto/rand"
	"encoding/binary"
)

// Websocket close status codes the gateway sends (RFC 6455, section 7.4).
const (
	// CloseGoingAway (1001): the gateway is shutting down, or the tunnel
	// reached its idle timeout or maximum lifetime.
	CloseGoingAway = 1001
	// ClosePolicyViolation (1008): the tunnel is no longer allowed (its
	// pod left the allowlist, or its route no longer serves its host,
	// path or Origin).
	ClosePolicyViolation = 1008
)

// Frames follows websocket frame headers in one direction of a tunnel,
// just enough to know where each frame ends, so that a Close frame can be
// inserted between two frames. It never changes the bytes.
type Frames struct {
	// hdr collects a header split across reads; hdrLen is how much of it
	// is filled, and 0 means the next byte starts a frame header.
	hdr    [14]byte
	hdrLen int
	// remaining payload bytes of the current frame.
	remaining uint64

	// The status code of the first Close frame seen, for logs and
	// metrics: closeCode is valid once closeSeen is true and closeLen
	// bytes of it were read.
	closeSeen bool
	closeCode uint16
	closeLen  int
	inClose   bool    // the current frame is that first Close frame
	mask      [4]byte // its masking key, if masked
	masked    bool
	offset    int // payload bytes of it read so far
}

// AtBoundary reports whether the bytes seen so far end exactly at the end
// of a frame.
func (f *Frames) AtBoundary() bool { return f.hdrLen == 0 && f.remaining == 0 }

// Consume follows the frames in p and returns how many bytes it took:
// all of p, or with stopAtBoundary, only up to the first frame boundary
// (0 if p starts at one).
func (f *Frames) Consume(p []byte, stopAtBoundary bool) int {
	i := 0
	for i < len(p) {
		if stopAtBoundary && f.AtBoundary() {
			return i
		}
		if f.remaining > 0 {
			n := min(uint64(len(p)-i), f.remaining)
			if f.inClose {
				f.readCloseCode(p[i : i+int(n)])
			}
			f.remaining -= n
			i += int(n)
			continue
		}
		// Collect header bytes until the header is complete.
		f.hdr[f.hdrLen] = p[i]
		f.hdrLen++
		i++
		if need := headerLen(f.hdr[:f.hdrLen]); need > 0 && f.hdrLen == need {
			f.remaining = payloadLen(f.hdr[:f.hdrLen])
			f.inClose = false
			if f.hdr[0]&0x0f == opClose && !f.closeSeen {
				f.closeSeen, f.inClose, f.offset = true, true, 0
				if f.masked = f.hdr[1]&0x80 != 0; f.masked {
					copy(f.mask[:], f.hdr[need-4:need])
				}
			}
			f.hdrLen = 0
		}
	}
	return i
}

// readCloseCode takes the status code from the first two payload bytes of
// the first Close frame.
func (f *Frames) readCloseCode(b []byte) {
	for _, c := range b {
		if f.offset >= 2 {
			f.inClose = false
			return
		}
		if f.masked {
			c ^= f.mask[f.offset%4]
		}
		f.closeCode = f.closeCode<<8 | uint16(c)
		f.offset++
		f.closeLen = f.offset
	}
}

// CloseCode returns the status code of the first Close frame seen, or 0
// when none was seen or it carried no code (yet).
func (f *Frames) CloseCode() uint16 {
	if !f.closeSeen || f.closeLen < 2 {
		return 0
	}
	return f.closeCode
}

// headerLen returns the full header length given its first bytes, or -1
// while fewer than two bytes are known.
func headerLen(h []byte) int {
	if len(h) < 2 {
		return -1
	}
	n := 2
	switch h[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h[1]&0x80 != 0 {
		n += 4 // masking key
	}
	return n
}

// payloadLen decodes the payload length of a complete header.
func payloadLen(h []byte) uint64 {
	switch l := h[1] & 0x7f; l {
	case 126:
		return uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		return binary.BigEndian.Uint64(h[2:10]) &^ (1 << 63)
	default:
		return uint64(l)
	}
}

// Opcodes of the frames the gateway writes.
const (
	opClose = 0x8
)

// AppendFrame appends one final frame (FIN set) with opcode and payload;
// with mask, the payload is masked with it, as a client's frames are.
func AppendFrame(dst []byte, opcode byte, payload []byte, mask *[4]byte) []byte {
	var maskBit byte
	if mask != nil {
		maskBit = 0x80
	}
	dst = append(dst, 0x80|opcode)
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, maskBit|byte(n))
	case n < 1<<16:
		dst = append(dst, maskBit|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, maskBit|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	if mask == nil {
		return append(dst, payload...)
	}
	dst = append(dst, mask[:]...)
	for i, c := range payload {
		dst = append(dst, c^mask[i%4])
	}
	return dst
}

// CloseFrame encodes a Close frame with a status code and a reason (cut
// to fit a control frame). Frames toward the pod are masked with a random
// key (the gateway speaks as a client there); those toward the client
// are not.
func CloseFrame(code uint16, reason string, toPod bool) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	payload := make([]byte, 0, 2+len(reason))
	payload = binary.BigEndian.AppendUint16(payload, code)
	payload = append(payload, reason...)
	var mask *[4]byte
	if toPod {
		mask = new([4]byte)
		_, _ = rand.Read(mask[:])
	}
	return AppendFrame(make([]byte, 0, 6+len(payload)), opClose, payload, mask)
}
