// Package benchdoc is what the data-plane and control-plane benchmarks
// share in docs/benchmarks.md: the control plane's part of the document
// (the data-plane benchmark rewrites the file and keeps the part; the
// control-plane benchmark replaces only the part), the identity part
// (written by the data-plane benchmark when its identity rows run, kept
// otherwise), the browser-like connections part, the public edge's part
// and the websockets over HTTP/2 part (the same, for their rows) and
// number formatting.
package benchdoc

import (
	"math"
	"strconv"
	"strings"
)

// The part's bounds in the document.
const (
	Begin = "<!-- control plane: begin (written by go run ./test/bench/controlplane) -->"
	End   = "<!-- control plane: end -->"
)

// The identity part's bounds.
const (
	IdentityBegin = "<!-- identity: begin (written by go run ./test/bench -rows ...,ratetlsauth,ratetlsauthnew,fwdauth,kidflood) -->"
	IdentityEnd   = "<!-- identity: end -->"
)

// The browser-like connections part's bounds.
const (
	BrowserBegin = "<!-- browser connections: begin (written by go run ./test/bench -rows rate,ratetls,ratebrowser,ratetlsbrowser,ratetlsbrowserx25519,ratetlsresume) -->"
	BrowserEnd   = "<!-- browser connections: end -->"
)

// The public edge's part's bounds.
const (
	EdgeBegin = "<!-- edge: begin (written by go run ./test/bench -rows ...,ratelimits,ratetlslimits,edgeflood) -->"
	EdgeEnd   = "<!-- edge: end -->"
)

// The websockets over HTTP/2 part's bounds.
const (
	HTTP2Begin = "<!-- http2: begin (written by go run ./test/bench -rows ...,idleh2,rth2,rateh2) -->"
	HTTP2End   = "<!-- http2: end -->"
)

// ControlPlane returns doc's control-plane part, bounds included, or "".
func ControlPlane(doc string) string { return Part(doc, Begin, End) }

// WithControlPlane returns doc with its control-plane part replaced by
// part (which holds the bounds), or with part appended if doc has none.
func WithControlPlane(doc, part string) string { return WithPart(doc, Begin, End, part) }

// Part returns doc's part between begin and end, bounds included, or "".
func Part(doc, begin, end string) string {
	i := strings.Index(doc, begin)
	if i < 0 {
		return ""
	}
	j := strings.Index(doc[i:], end)
	if j < 0 {
		return ""
	}
	return doc[i : i+j+len(end)]
}

// WithPart returns doc with its part between begin and end replaced by
// part (which holds the bounds), or with part appended if doc has none.
func WithPart(doc, begin, end, part string) string {
	if old := Part(doc, begin, end); old != "" {
		return strings.Replace(doc, old, part, 1)
	}
	if doc != "" && !strings.HasSuffix(doc, "\n") {
		doc += "\n"
	}
	if doc != "" {
		doc += "\n"
	}
	return doc + part + "\n"
}

// Thousands prints v rounded, with a comma every three digits.
func Thousands(v float64) string {
	if v < 0 {
		return "−" + Thousands(-v)
	}
	s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
