// Package benchdoc is what the data-plane and control-plane benchmarks
// share in docs/benchmarks.md: the control plane's part of the document
// (the data-plane benchmark rewrites the file and keeps the part; the
// control-plane benchmark replaces only the part) and number formatting.
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

// ControlPlane returns doc's control-plane part, bounds included, or "".
func ControlPlane(doc string) string {
	i := strings.Index(doc, Begin)
	if i < 0 {
		return ""
	}
	j := strings.Index(doc[i:], End)
	if j < 0 {
		return ""
	}
	return doc[i : i+j+len(End)]
}

// WithControlPlane returns doc with its control-plane part replaced by
// part (which holds the bounds), or with part appended if doc has none.
func WithControlPlane(doc, part string) string {
	if old := ControlPlane(doc); old != "" {
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
