package benchdoc

import (
	"strings"
	"testing"
)

func TestWithControlPlane(t *testing.T) {
	part := Begin + "\n## Control plane\n\nfigures\n" + End
	newer := Begin + "\n## Control plane\n\nnewer figures\n" + End
	for _, tc := range []struct{ name, doc, part, want string }{
		{"appended to a document without one", "# Benchmarks\n\nrows\n", part, "# Benchmarks\n\nrows\n\n" + part + "\n"},
		{"appended without a final newline", "# Benchmarks", part, "# Benchmarks\n\n" + part + "\n"},
		{"an empty document", "", part, part + "\n"},
		{"replaced in place", "# B\n\n" + part + "\n\ntail\n", newer, "# B\n\n" + newer + "\n\ntail\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := WithControlPlane(tc.doc, tc.part)
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if ControlPlane(got) != tc.part {
				t.Errorf("ControlPlane of the result is %q, want %q", ControlPlane(got), tc.part)
			}
		})
	}
	if got := ControlPlane("# B\n" + Begin + "\nno end"); got != "" {
		t.Errorf("a part without its end: got %q, want none", got)
	}
}

func TestIdentityPartAfterControlPlane(t *testing.T) {
	cp := Begin + "\ncontrol plane\n" + End
	id := IdentityBegin + "\n## Identity at the handshake\n" + IdentityEnd
	doc := WithPart(WithControlPlane("# B\n", cp), IdentityBegin, IdentityEnd, id)
	if want := "# B\n\n" + cp + "\n\n" + id + "\n"; doc != want {
		t.Fatalf("got %q, want %q", doc, want)
	}
	if got := Part(doc, IdentityBegin, IdentityEnd); got != id {
		t.Errorf("Part: got %q, want %q", got, id)
	}
	if got := ControlPlane(doc); got != cp {
		t.Errorf("ControlPlane: got %q, want %q", got, cp)
	}
}

func TestBrowserPartKeptBesideIdentity(t *testing.T) {
	id := IdentityBegin + "\n## Identity at the handshake\n" + IdentityEnd
	br := BrowserBegin + "\n## New connections as browsers make them\n" + BrowserEnd
	newer := BrowserBegin + "\n## New connections as browsers make them\nnewer\n" + BrowserEnd
	doc := WithPart(WithPart("# B\n", IdentityBegin, IdentityEnd, id), BrowserBegin, BrowserEnd, br)
	if want := "# B\n\n" + id + "\n\n" + br + "\n"; doc != want {
		t.Fatalf("got %q, want %q", doc, want)
	}
	doc = WithPart(doc, BrowserBegin, BrowserEnd, newer)
	if got := Part(doc, BrowserBegin, BrowserEnd); got != newer {
		t.Errorf("Part after a replacement: got %q, want %q", got, newer)
	}
	if got := Part(doc, IdentityBegin, IdentityEnd); got != id {
		t.Errorf("identity part: got %q, want %q", got, id)
	}
}

func TestEdgePartKeptBesideOthers(t *testing.T) {
	cp := Begin + "\n## Control plane\n" + End
	id := IdentityBegin + "\n## Identity at the handshake\n" + IdentityEnd
	br := BrowserBegin + "\n## New connections as browsers make them\n" + BrowserEnd
	ed := EdgeBegin + "\n## The public edge\n" + EdgeEnd
	newer := EdgeBegin + "\n## The public edge\nnewer\n" + EdgeEnd
	doc := WithPart(WithPart(WithPart(WithControlPlane("# B\n", cp), IdentityBegin, IdentityEnd, id), BrowserBegin, BrowserEnd, br), EdgeBegin, EdgeEnd, ed)
	if want := "# B\n\n" + cp + "\n\n" + id + "\n\n" + br + "\n\n" + ed + "\n"; doc != want {
		t.Fatalf("got %q, want %q", doc, want)
	}
	// A run whose edge rows did not run keeps the old document's part.
	rewritten := WithPart(WithControlPlane("# B, newer\n", ControlPlane(doc)), EdgeBegin, EdgeEnd, Part(doc, EdgeBegin, EdgeEnd))
	if got := Part(rewritten, EdgeBegin, EdgeEnd); got != ed {
		t.Errorf("kept part: got %q, want %q", got, ed)
	}
	doc = WithPart(doc, EdgeBegin, EdgeEnd, newer)
	if got := Part(doc, EdgeBegin, EdgeEnd); got != newer {
		t.Errorf("Part after a replacement: got %q, want %q", got, newer)
	}
	for _, p := range []struct{ name, begin, end, want string }{
		{"control plane", Begin, End, cp},
		{"identity", IdentityBegin, IdentityEnd, id},
		{"browser", BrowserBegin, BrowserEnd, br},
	} {
		if got := Part(doc, p.begin, p.end); got != p.want {
			t.Errorf("%s part: got %q, want %q", p.name, got, p.want)
		}
	}
}

func TestHTTP2PartKeptBesideOthers(t *testing.T) {
	cp := Begin + "\n## Control plane\n" + End
	ed := EdgeBegin + "\n## The public edge\n" + EdgeEnd
	h2 := HTTP2Begin + "\n## Websockets over HTTP/2\n" + HTTP2End
	newer := HTTP2Begin + "\n## Websockets over HTTP/2\nnewer\n" + HTTP2End
	doc := WithPart(WithPart(WithControlPlane("# B\n", cp), EdgeBegin, EdgeEnd, ed), HTTP2Begin, HTTP2End, h2)
	if want := "# B\n\n" + cp + "\n\n" + ed + "\n\n" + h2 + "\n"; doc != want {
		t.Fatalf("got %q, want %q", doc, want)
	}
	// A run whose HTTP/2 rows did not run keeps the old document's part,
	// after the edge part it also kept.
	rewritten := WithPart(WithPart(WithControlPlane("# B, newer\n", ControlPlane(doc)), EdgeBegin, EdgeEnd, Part(doc, EdgeBegin, EdgeEnd)),
		HTTP2Begin, HTTP2End, Part(doc, HTTP2Begin, HTTP2End))
	if rewritten != strings.Replace(doc, "# B\n", "# B, newer\n", 1) {
		t.Errorf("rewritten document %q", rewritten)
	}
	doc = WithPart(doc, HTTP2Begin, HTTP2End, newer)
	if got := Part(doc, HTTP2Begin, HTTP2End); got != newer {
		t.Errorf("Part after a replacement: got %q, want %q", got, newer)
	}
	for _, p := range []struct{ name, begin, end, want string }{
		{"control plane", Begin, End, cp},
		{"edge", EdgeBegin, EdgeEnd, ed},
	} {
		if got := Part(doc, p.begin, p.end); got != p.want {
			t.Errorf("%s part: got %q, want %q", p.name, got, p.want)
		}
	}
}
