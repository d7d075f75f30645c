package tablebuild

import (
	"fmt"
	"slices"
	"strings"

	"github.com/wsgate/wsgate/api/v1alpha1"
)

// grants is what the cluster's WsGrants give each namespace: the
// hostnames its routes may claim, whether they may be the catch-all, the
// ClusterIssuers they may name and the token issuers whose keys the
// gateway may fetch for them.
type grants struct {
	byNamespace map[string][]*v1alpha1.WsGrantSpec
	// all are the grants that apply to every namespace ("*").
	all []*v1alpha1.WsGrantSpec
}

// compileGrants indexes the grants by namespace. Nil entries are ignored.
func compileGrants(in []*v1alpha1.WsGrant) grants {
	g := grants{byNamespace: make(map[string][]*v1alpha1.WsGrantSpec)}
	for _, gr := range in {
		if gr == nil {
			continue
		}
		for _, ns := range gr.Spec.Namespaces {
			if ns == "*" {
				g.all = append(g.all, &gr.Spec)
				continue
			}
			g.byNamespace[string(ns)] = append(g.byNamespace[string(ns)], &gr.Spec)
		}
	}
	return g
}

// any reports whether one of the grants that apply to namespace ns
// satisfies ok.
func (g grants) any(ns string, ok func(*v1alpha1.WsGrantSpec) bool) bool {
	for _, s := range g.byNamespace[ns] {
		if ok(s) {
			return true
		}
	}
	for _, s := range g.all {
		if ok(s) {
			return true
		}
	}
	return false
}

// host reports whether namespace ns may claim host ("" is the catch-all).
func (g grants) host(ns, host string) bool {
	if host == "" {
		return g.any(ns, func(s *v1alpha1.WsGrantSpec) bool { return s.CatchAll })
	}
	return g.any(ns, func(s *v1alpha1.WsGrantSpec) bool {
		for _, p := range s.Hostnames {
			if patternCovers(string(p), host) {
				return true
			}
		}
		return false
	})
}

// clusterIssuer reports whether namespace ns may use the ClusterIssuer.
func (g grants) clusterIssuer(ns, name string) bool {
	return g.any(ns, func(s *v1alpha1.WsGrantSpec) bool {
		for _, i := range s.ClusterIssuers {
			if i == "*" || string(i) == name {
				return true
			}
		}
		return false
	})
}

// tokenIssuer reports whether namespace ns may have the keys of the token
// issuer (an exact URL) fetched.
func (g grants) tokenIssuer(ns, url string) bool {
	return g.any(ns, func(s *v1alpha1.WsGrantSpec) bool {
		return slices.Contains(s.TokenIssuers, url)
	})
}

// patternCovers reports whether a grant's hostname pattern covers a
// route's host (lower case; it may be a "*." wildcard itself): "*" covers
// everything, "*.example.com" every name that ends in ".example.com", and
// any other pattern only itself. Patterns are compared in lower case.
func patternCovers(pattern, host string) bool {
	pattern = strings.ToLower(pattern)
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		return strings.HasSuffix(host, pattern[1:])
	}
	return pattern == host
}

// notGranted says why namespace ns may not have route c: the first of its
// hostnames (or the catch-all, its ClusterIssuer or its token issuer) that
// no grant gives ns, with the reason; "" when the grants allow all of it.
func (g grants) notGranted(c *candidate) (reason, msg string) {
	ns := c.key.Namespace
	for _, cl := range c.claims {
		if g.host(ns, cl.host) {
			continue
		}
		if cl.host == "" {
			return v1alpha1.ReasonHostnameNotAllowed, fmt.Sprintf(
				"no WsGrant lets namespace %q have routes without hostnames (the catch-all: catchAll true); "+
					"name a granted host in spec.hostnames, or ask the cluster admin for a grant (kubectl get wsgrants)", ns)
		}
		return v1alpha1.ReasonHostnameNotAllowed, fmt.Sprintf(
			"no WsGrant lets namespace %q claim host %q; ask the cluster admin for a grant (kubectl get wsgrants)", ns, cl.host)
	}
	if t := c.wr.Spec.TLS; t != nil && t.IssuerRef != nil && needsIssuerGrant(t.IssuerRef) {
		if !g.clusterIssuer(ns, t.IssuerRef.Name) {
			kind := t.IssuerRef.Kind
			if g := t.IssuerRef.Group; g != "" && g != "cert-manager.io" {
				kind += "." + g
			}
			return v1alpha1.ReasonIssuerNotAllowed, fmt.Sprintf(
				"no WsGrant lets namespace %q use issuer %q (%s) in tls.issuerRef; use an Issuer of the namespace, or ask the cluster admin for a grant (kubectl get wsgrants)",
				ns, t.IssuerRef.Name, kind)
		}
	}
	if a := c.auth; a != nil && a.source == v1alpha1.KeysFromIssuer && !g.tokenIssuer(ns, a.issuer) {
		return v1alpha1.ReasonTokenIssuerNotAllowed, fmt.Sprintf(
			"no WsGrant lets namespace %q fetch token keys from issuer %q (auth.jwt.keys.source Issuer); "+
				"use keys from a Secret of the namespace, or ask the cluster admin to add the issuer to a grant's tokenIssuers (kubectl get wsgrants)",
			ns, a.issuer)
	}
	return "", ""
}

// needsIssuerGrant reports whether an issuerRef names something outside
// the route's namespace: a ClusterIssuer, or an issuer of another API
// group than cert-manager's, whose scope wsgate cannot tell.
func needsIssuerGrant(ref *v1alpha1.IssuerReference) bool {
	return ref.Kind == "ClusterIssuer" || (ref.Group != "" && ref.Group != "cert-manager.io")
}
