package proxy

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/routing"
)

// FuzzFindToken: whatever the client sends, a token found is one the
// client sent in a place the route names, and the request the pod gets
// holds no token in any of those places.
func FuzzFindToken(f *testing.F) {
	f.Add("Bearer abc", "wsg=def; x=1", "chat, "+bearerProtocolPrefix+"Z2hp", "access_token=jkl&b=2")
	f.Add("bearer  a b ", "wsg=; wsg=x", bearerProtocolPrefix+"***", "access_token=%zz&access_token=")
	f.Add("Basic x, Bearer y", ";;;wsg", ",,,", "&&&=&access_token")
	f.Add("0", "0", bearerProtocolPrefix+"00", "0") // "00": trailing bits set, not the canonical encoding of any token
	a := &routing.Auth{Tokens: &auth.Verifier{}, Cookie: "wsg", Query: "access_token"}
	f.Fuzz(func(t *testing.T, authorization, cookie, protocol, query string) {
		h := http.Header{}
		for _, kv := range [...][2]string{{"Authorization", authorization}, {"Cookie", cookie}, {"Sec-Websocket-Protocol", protocol}} {
			if kv[1] != "" {
				h.Set(kv[0], kv[1])
			}
		}
		uri := "/me/10.0.0.1/x?" + query
		r := &http.Request{Header: h, RequestURI: uri}
		tok, ans := findToken(r, a)
		if ans == nil {
			if tok == "" {
				t.Fatal("no answer and no token")
			}
			sent := authorization + cookie + query + protocol
			if enc := base64.RawURLEncoding.EncodeToString([]byte(tok)); !strings.Contains(sent, tok) && !strings.Contains(protocol, enc) && !slices.Contains(queryValues(uri, a.Query), tok) {
				t.Fatalf("token %q is nowhere in the request", tok)
			}
		} else if ans.status != http.StatusUnauthorized && ans.status != http.StatusBadRequest {
			t.Fatalf("status %d", ans.status)
		}
		ph := podHeader(r, a, nil)
		for _, v := range ph.Values("Authorization") {
			if _, bearer := bearerToken(v); bearer {
				t.Fatalf("the pod gets Authorization %q", v)
			}
		}
		for _, p := range subprotocols(ph) {
			if strings.HasPrefix(p, bearerProtocolPrefix) {
				t.Fatalf("the pod gets subprotocol %q", p)
			}
		}
		pr := &http.Request{Header: ph}
		for _, c := range pr.Cookies() {
			if c.Name == a.Cookie {
				t.Fatalf("the pod gets cookie %q", c)
			}
		}
		if vs := queryValues(withoutQueryParameter(uri, a.Query), a.Query); len(vs) != 0 {
			t.Fatalf("the pod gets query parameter values %q", vs)
		}
	})
}

// FuzzBinding: a token reaches a pod only when its binding claim is the
// pod's bound value, or an array holding it, compared exactly.
func FuzzBinding(f *testing.F) {
	sg := newES256Signer(f, "fuzz")
	f.Add(`"alice"`, "alice")
	f.Add(`["bob","alice"]`, "alice")
	f.Add(`"Alice"`, "alice")
	f.Add(`7`, "7")
	f.Add(`[7,"x"]`, "7")
	f.Add(`{"alice":"alice"}`, "alice")
	f.Add(`""`, "")
	f.Add(`null`, "null")
	v := sg.verifier(f)
	route := &routing.Route{Auth: &routing.Auth{Tokens: v, BindingClaim: "team"}}
	f.Fuzz(func(t *testing.T, claimJSON, bound string) {
		var claim any
		if len(claimJSON) > 1024 || json.Unmarshal([]byte(claimJSON), &claim) != nil {
			return
		}
		c := claimsFor("x", map[string]any{"team": claim})
		if claim == nil {
			delete(c, "team")
		}
		cl, err := v.Verify(t.Context(), sg.sign(t, c, nil, false), time.Now())
		if err != nil {
			t.Fatalf("a valid token was refused: %v", err)
		}
		want := false
		switch c := claim.(type) {
		case string:
			want = c != "" && c == bound
		case []any:
			for _, e := range c {
				if s, ok := e.(string); ok && s != "" && s == bound {
					want = true
				}
			}
		}
		got := (&identity{claims: cl}).bound(route, routing.Backend{Bound: bound})
		if got != want {
			t.Fatalf("claim %s, pod %q: bound %v, want %v", claimJSON, bound, got, want)
		}
	})
}
