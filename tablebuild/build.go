// Package tablebuild turns cluster state (WsRoutes and Pods) into a
// routing.Table and the status each route should show. It is pure: no API
// calls, no clock reads, no randomness.
//
// A build runs in three steps over a snapshot of the cache:
//
//  1. Every WsRoute is checked and compiled into the routing.Route it would
//     become. A route that cannot be used (for example an empty selector)
//     is Invalid: it claims nothing and gets no table entry.
//  2. Valid routes are walked oldest first (creationTimestamp, then
//     namespace and name). Each claims hostnames (the catch-all when it has
//     none and there is no default host) and (host, pathPrefix) pairs. A
//     route is accepted only if WsGrants give its namespace every name it
//     claims, the ClusterIssuer it names and the token issuer whose keys
//     it asks for (else HostnameNotAllowed, IssuerNotAllowed or
//     TokenIssuerNotAllowed), none of its names belongs to another namespace
//     (else HostnameConflict), and no accepted route holds one of its
//     (host, pathPrefix) pairs (else Conflict). A name belongs to the
//     namespace whose route serves it, as that route's status says
//     (status.hostnames, written by the gateway from an earlier build),
//     for as long as the route still claims it and may; a name nobody
//     serves goes to the namespace of the oldest accepted route that
//     claims it. So a route that adds a name another namespace serves, or
//     one created in the same second, never takes it over. Each refusal
//     names what stands in the way.
//  3. Each accepted route is matched against the pods of its own namespace
//     through a label index, and its eligible pods become its backends
//     (on a route that binds tokens to pods, only those with a value to
//     bind to). Its spec.auth is completed from the cluster: token keys
//     from a key Secret of its namespace, a granted issuer or the
//     cluster's ServiceAccount issuer (through Options.Keyring), and the
//     addresses of the eligible pods its forward-auth Service selects in
//     its namespace. What cannot be used is reported (AuthReady) and set
//     as routing.Auth.Problem, so that the data plane refuses what it
//     cannot check.
//
// The output depends only on the input's contents, not on its order: the
// same routes and pods in any order give an identical table and statuses.
// Build never modifies its input. Its one effect outside its result is to
// ask Options.Keyring for the key sets of the issuers accepted routes use,
// which the keyring then keeps fetching; their state at that moment is
// part of the build's input.
package tablebuild

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/routing"
)

// Options are the settings of one build that do not come from the cluster.
type Options struct {
	// DefaultHost replaces an empty spec.hostnames; when "" such routes are
	// the catch-all (routing.Route.Hosts empty). It is lower-cased but not
	// otherwise checked: the caller validates it (as a flag, say).
	DefaultHost string
	// Generation is passed to routing.New.
	Generation uint64
	// Now is passed to routing.New as builtAt; Build never reads the clock.
	Now time.Time
	// DefaultCertificate names the Secret whose certificate serves TLS
	// names that no route's certificate covers; optional.
	DefaultCertificate types.NamespacedName
	// Keyring gives the keys of token issuers and of the cluster's
	// ServiceAccount issuer. Build asks it for the set of each issuer an
	// accepted route's grant allows (which the keyring then fetches in
	// the background) and reads the sets' state; nil: routes whose keys
	// come from an issuer have none.
	Keyring Keyring
}

// Input is the cluster state one build reads. Build does not modify it.
type Input struct {
	// Routes are the WsRoutes to build, of any namespaces. Nil entries are
	// ignored; keys (namespace/name) are expected to be unique.
	Routes []*v1alpha1.WsRoute
	// Pods are all pods of all namespaces the cache holds, compacted by
	// CompactPod. A route is only ever matched against the pods of its own
	// namespace. Nil entries are ignored; keys (namespace/name) are
	// expected to be unique.
	Pods []*Pod
	// Secrets are the TLS Secrets that routes and the default certificate
	// may name, already parsed.
	Secrets map[types.NamespacedName]TLSSecret
	// Grants are the cluster's WsGrants: a route is accepted only for
	// names, ClusterIssuers and token issuers they give its namespace.
	// Nil entries are ignored.
	Grants []*v1alpha1.WsGrant
	// KeySecrets are the key Secrets' data that routes name (see
	// KeySecretRefOf), already parsed. A route only ever reads a Secret of
	// its own namespace.
	KeySecrets map[KeySecretRef]KeySecret
	// Services are the Services that routes' forward auth names, compacted
	// by CompactService. A route only ever uses a Service of its own
	// namespace.
	Services map[types.NamespacedName]Service
}

// RouteStatus is what one build observed of one route.
//
// Endpoints are computed for accepted routes only: a route that is Invalid
// or in Conflict serves nothing, and its Endpoints are zero.
type RouteStatus struct {
	// Generation is the route's metadata.generation.
	Generation int64
	// Accepted is true when the route is valid and owns all its host and
	// path prefix claims.
	Accepted bool
	// Reason is v1alpha1.ReasonAccepted, ReasonInvalid,
	// ReasonHostnameNotAllowed, ReasonIssuerNotAllowed,
	// ReasonTokenIssuerNotAllowed, ReasonHostnameConflict or
	// ReasonConflict.
	Reason string
	// Message is a human sentence; for a conflict it names the winner:
	// `host "h" and pathPrefix "/p" are already claimed by WsRoute ns/name (older)`.
	Message string
	// Endpoints are the allowlisted pods: Count, Pods (at most
	// v1alpha1.MaxStatusPods, sorted by name) and Skipped (sorted by
	// reason, only non-zero counts). Zero unless Accepted.
	Endpoints v1alpha1.RouteEndpoints
	// CertificateProblem says why the Secret in spec.tls.secretName cannot
	// serve (missing, broken); "" when it serves or spec.tls is unset.
	// Only for accepted routes.
	CertificateProblem string
	// SecretMissing says the problem is that the Secret is not (yet) in
	// the cache, as while cert-manager is issuing it.
	SecretMissing bool
	// Hostnames are the names the route serves, for status.hostnames:
	// its hosts, sorted, or v1alpha1.CatchAllHostname; nil unless
	// Accepted.
	Hostnames []string
	// Access is status.access: AccessOpen without spec.auth, else what
	// the route checks ("Token", "Token bound to pod", "ForwardAuth",
	// joined by "+").
	Access string
	// Auth is the AuthReady condition of an accepted route with
	// spec.auth; nil otherwise.
	Auth *AuthStatus
}

// Result is the output of one build.
type Result struct {
	// Table holds the accepted routes and their backends.
	Table *routing.Table
	// Routes has one entry for every input route, accepted or not.
	Routes map[routing.RouteKey]RouteStatus
	// TokenIssuers are the issuers whose keys accepted routes use (keys
	// source Issuer), sorted: the keyring keeps fetching these only.
	TokenIssuers []string
}

// Build compiles the routes, resolves their conflicts, matches the accepted
// ones against the pods of their namespaces, and returns the table and the
// status of every route. See the package documentation for the rules.
func Build(in Input, opts Options) *Result {
	defaultHost := strings.ToLower(opts.DefaultHost)

	cands := make([]*candidate, 0, len(in.Routes))
	for _, wr := range in.Routes {
		if wr != nil {
			cands = append(cands, compile(wr, defaultHost))
		}
	}
	slices.SortFunc(cands, olderFirst)

	res := &Result{Routes: make(map[routing.RouteKey]RouteStatus, len(cands))}
	accepted := resolveClaims(cands, compileGrants(in.Grants), res.Routes)

	// The forward-auth Services resolve before the pods are indexed: the
	// index then covers their selectors' keys too.
	fwdProblems := make(map[routing.RouteKey]string)
	for _, c := range accepted {
		if c.auth != nil && c.auth.forward != nil {
			if p := resolveForwardService(c, in.Services); p != "" {
				fwdProblems[c.key] = p
			}
		}
	}
	idx := newPodIndex(in.Pods, accepted)
	routes := make([]*routing.Route, 0, len(accepted))
	issuers := make(map[string]bool)
	var scratch endpointScratch
	for _, c := range accepted {
		st := res.Routes[c.key]
		c.route.Backends, st.Endpoints = idx.endpoints(c, &scratch)
		if c.auth != nil {
			var keys keyOutcome
			if c.auth.source != "" {
				keys = routeKeys(c, &in, opts.Keyring, issuers)
			}
			var fwd forwardOutcome
			if c.auth.forward != nil {
				if p, bad := fwdProblems[c.key]; bad {
					fwd.problem = p
				} else {
					fwd = idx.forwardAddrs(c, &scratch)
				}
			}
			st.Auth = finishAuth(c, &keys, &fwd)
		}
		res.Routes[c.key] = st
		routes = append(routes, c.route)
	}
	for iss := range issuers {
		res.TokenIssuers = append(res.TokenIssuers, iss)
	}
	slices.Sort(res.TokenIssuers)
	certs := certificates(accepted, in.Secrets, opts.DefaultCertificate, res.Routes)
	res.Table = routing.New(opts.Generation, opts.Now, routes, routing.WithCertificates(certs))
	return res
}

// claim is one (host, pathPrefix) pair a route wants to own. Host is "" for
// the catch-all.
type claim struct {
	host   string
	prefix string
}

// lookup is a selector requirement that the label index can answer: the
// pod's label key must have one of values.
type lookup struct {
	key    string
	values []string
}

// candidate is one WsRoute on its way into the table.
type candidate struct {
	wr  *v1alpha1.WsRoute
	key routing.RouteKey
	// problems say why the route cannot be used; empty when it is valid.
	problems []string

	podSelector
	port   intstr.IntOrString
	claims []claim // sorted by host
	route  *routing.Route
	// auth is spec.auth compiled; nil for an open route.
	auth *compiledAuth
	// access is status.access.
	access string
	// forward is the forward-auth Service's selector and target port,
	// once resolved for an accepted route; nil otherwise.
	forward *forwardTarget
	// notGranted and notGrantedMsg say why the grants refuse a valid
	// route ("" when they allow it); set by resolveClaims.
	notGranted, notGrantedMsg string
}

// podSelector is a label selector over the pods of one namespace, with the
// requirements the label index can answer.
type podSelector struct {
	selector labels.Selector
	lookups  []lookup
	// lookupIsSelector is true when the selector is a single Equals or In
	// requirement, so that the index's answer needs no further check.
	lookupIsSelector bool
}

func newPodSelector(sel labels.Selector) podSelector {
	ps := podSelector{selector: sel, lookups: lookups(sel)}
	reqs, _ := sel.Requirements()
	ps.lookupIsSelector = len(reqs) == 1 && len(ps.lookups) == 1
	return ps
}

// olderFirst orders routes by creationTimestamp, then namespace and name;
// the UID breaks the tie between two objects with the same key.
func olderFirst(a, b *candidate) int {
	if c := a.wr.CreationTimestamp.Compare(b.wr.CreationTimestamp.Time); c != 0 {
		return c
	}
	if c := cmp.Compare(a.key.Namespace, b.key.Namespace); c != 0 {
		return c
	}
	if c := cmp.Compare(a.key.Name, b.key.Name); c != 0 {
		return c
	}
	return cmp.Compare(a.wr.UID, b.wr.UID)
}

// resolveClaims walks the candidates oldest first, records a status for
// each, and returns the accepted ones in that order.
func resolveClaims(cands []*candidate, g grants, statuses map[routing.RouteKey]RouteStatus) []*candidate {
	owners := make(map[claim]*candidate, len(cands))
	for _, c := range cands {
		if len(c.problems) == 0 {
			c.notGranted, c.notGrantedMsg = g.notGranted(c)
		}
	}
	serving := servingOwners(cands)
	hostOwners := make(map[string]*candidate, len(cands))
	accepted := make([]*candidate, 0, len(cands))
	for _, c := range cands {
		if _, dup := statuses[c.key]; dup {
			continue // a second object with the same key; the older one stands
		}
		st := RouteStatus{Generation: c.wr.Generation, Access: c.access}
		if len(c.problems) > 0 {
			st.Reason = v1alpha1.ReasonInvalid
			st.Message = "the route cannot be used: " + strings.Join(c.problems, "; ")
		} else if c.notGranted != "" {
			st.Reason, st.Message = c.notGranted, c.notGrantedMsg
		} else if msg := hostConflictMessage(c, serving, hostOwners); msg != "" {
			st.Reason = v1alpha1.ReasonHostnameConflict
			st.Message = msg
		} else if msg := conflictMessage(c, owners); msg != "" {
			st.Reason = v1alpha1.ReasonConflict
			st.Message = msg
		} else {
			for _, cl := range c.claims {
				owners[cl] = c
				if _, owned := hostOwners[cl.host]; !owned {
					hostOwners[cl.host] = c
				}
			}
			st.Accepted = true
			st.Reason = v1alpha1.ReasonAccepted
			st.Hostnames = servedHostnames(c)
			st.Message = acceptedMessage(c)
			accepted = append(accepted, c)
		}
		statuses[c.key] = st
	}
	return accepted
}

// conflictMessage names the first of c's claims that an accepted route
// already holds, or returns "" when c can take all its claims.
func conflictMessage(c *candidate, owners map[claim]*candidate) string {
	for _, cl := range c.claims {
		winner, taken := owners[cl]
		if !taken {
			continue
		}
		why := "older"
		if winner.wr.CreationTimestamp.Time.Equal(c.wr.CreationTimestamp.Time) {
			why = "same age, first by namespace/name"
		}
		return fmt.Sprintf("%s and pathPrefix %q are already claimed by WsRoute %s (%s)",
			describeHost(cl.host), cl.prefix, winner.key, why)
	}
	return ""
}

// servingOwners finds the route that serves each name now: a valid route
// whose namespace may have the name, that claims it in its spec, and
// whose status says the gateway accepted it for that name. Where several
// namespaces' routes say so (a status not yet rewritten), the oldest
// route counts. cands are oldest first, their grants already checked.
func servingOwners(cands []*candidate) map[string]*candidate {
	out := make(map[string]*candidate)
	for _, c := range cands {
		if len(c.problems) > 0 || c.notGranted != "" || len(c.wr.Status.Hostnames) == 0 {
			continue
		}
		for _, cl := range c.claims {
			if _, taken := out[cl.host]; !taken && slices.Contains(c.wr.Status.Hostnames, statusHostname(cl.host)) {
				out[cl.host] = c
			}
		}
	}
	return out
}

// statusHostname is how status.hostnames writes a claimed host ("" is
// the catch-all).
func statusHostname(host string) string {
	if host == "" {
		return v1alpha1.CatchAllHostname
	}
	return host
}

// servedHostnames is status.hostnames of an accepted route.
func servedHostnames(c *candidate) []string {
	out := make([]string, len(c.claims))
	for i, cl := range c.claims {
		out[i] = statusHostname(cl.host)
	}
	return out
}

// hostConflictMessage names the first of c's hosts that belongs to
// another namespace, or returns "" when c's namespace may use them all.
// A host belongs to the namespace whose route serves it (serving), else
// to that of the oldest accepted route that claimed it (hostOwners).
func hostConflictMessage(c *candidate, serving, hostOwners map[string]*candidate) string {
	for _, cl := range c.claims {
		if owner, served := serving[cl.host]; served && owner.key.Namespace != c.key.Namespace {
			return fmt.Sprintf("%s belongs to namespace %q, whose WsRoute %s serves it; a name belongs to one namespace at a time",
				describeHost(cl.host), owner.key.Namespace, owner.key)
		}
		owner, owned := hostOwners[cl.host]
		if !owned || owner.key.Namespace == c.key.Namespace {
			continue
		}
		return fmt.Sprintf("%s belongs to namespace %q, whose WsRoute %s claimed it first; a name belongs to one namespace at a time",
			describeHost(cl.host), owner.key.Namespace, owner.key)
	}
	return ""
}

func describeHost(host string) string {
	if host == "" {
		return "the catch-all host (no hostnames and no default host)"
	}
	return fmt.Sprintf("host %q", host)
}

func acceptedMessage(c *candidate) string {
	const owns = "the route is valid and owns pathPrefix "
	prefix := strconv.Quote(c.route.PathPrefix)
	hosts := c.route.Hosts
	switch len(hosts) {
	case 0:
		return owns + prefix + " on the catch-all host"
	case 1:
		return owns + prefix + " on host " + strconv.Quote(hosts[0])
	}
	quoted := make([]string, len(hosts))
	for i, h := range hosts {
		quoted[i] = strconv.Quote(h)
	}
	return owns + prefix + " on hosts " + strings.Join(quoted, ", ")
}

// compile checks a WsRoute and turns it into a candidate with its
// routing.Route (without backends) and its claims. The checks repeat the
// parts of the CRD validation that the table relies on, so that an object
// admitted by an older or missing schema cannot break the data plane.
func compile(wr *v1alpha1.WsRoute, defaultHost string) *candidate {
	spec := &wr.Spec
	c := &candidate{
		wr:     wr,
		key:    routing.RouteKey{Namespace: wr.Namespace, Name: wr.Name},
		port:   spec.Port,
		access: accessOf(spec.Auth),
	}
	problem := func(format string, args ...any) {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}

	sel, err := metav1.LabelSelectorAsSelector(&spec.Selector)
	switch {
	case err != nil:
		problem("spec.selector is invalid: %v", err)
	case sel.Empty():
		problem("spec.selector is empty, and an empty selector would expose every pod in the namespace")
	default:
		c.podSelector = newPodSelector(sel)
	}

	checkPort("spec.port", spec.Port, problem)

	var hosts []string
	for _, h := range spec.Hostnames {
		host := strings.ToLower(string(h))
		if !validHostname(host) {
			problem("spec.hostnames entry %q is not a DNS name with at most one leading \"*.\" label", string(h))
			continue
		}
		hosts = append(hosts, host)
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	if len(spec.Hostnames) == 0 && defaultHost != "" {
		hosts = append(hosts, defaultHost)
	}

	prefix := cmp.Or(spec.PathPrefix, "/")
	if msg := checkPath(prefix, true); msg != "" {
		problem("spec.pathPrefix %q %s", prefix, msg)
	}
	backendPath := cmp.Or(spec.BackendPath, "/")
	if msg := checkPath(backendPath, false); msg != "" {
		problem("spec.backendPath %q %s", backendPath, msg)
	}

	var drain bool
	switch spec.RevokePolicy {
	case "", v1alpha1.RevokeClose:
	case v1alpha1.RevokeDrain:
		drain = true
	default:
		problem("spec.revokePolicy %q is neither %s nor %s", spec.RevokePolicy, v1alpha1.RevokeClose, v1alpha1.RevokeDrain)
	}

	var maxConns int
	if spec.MaxConnectionsPerPod != nil {
		maxConns = int(*spec.MaxConnectionsPerPod)
		if maxConns < 1 {
			problem("spec.maxConnectionsPerPod %d is not positive", maxConns)
		}
	}

	limits := compileLimits(spec.Limits, problem)

	var timeouts routing.Timeouts
	if t := spec.Timeouts; t != nil {
		timeouts.Handshake = duration(t.Handshake, "handshake", problem)
		timeouts.Idle = duration(t.Idle, "idle", problem)
		timeouts.MaxLifetime = duration(t.MaxLifetime, "maxLifetime", problem)
	}

	var origins []string
	if len(spec.AllowedOrigins) > 0 {
		origins = make([]string, len(spec.AllowedOrigins))
		for i, o := range spec.AllowedOrigins {
			origins[i] = string(o)
		}
		slices.Sort(origins)
		origins = slices.Compact(origins)
	}

	c.auth = compileAuth(wr, problem)

	if len(c.problems) > 0 {
		return c
	}
	if len(hosts) == 0 {
		c.claims = []claim{{host: "", prefix: prefix}}
	} else {
		c.claims = make([]claim, len(hosts))
		for i, h := range hosts {
			c.claims[i] = claim{host: h, prefix: prefix}
		}
	}
	c.route = &routing.Route{
		Key:                  c.key,
		Generation:           wr.Generation,
		Hosts:                hosts,
		PathPrefix:           prefix,
		BackendPath:          backendPath,
		AllowedOrigins:       origins,
		Timeouts:             timeouts,
		MaxConnectionsPerPod: maxConns,
		DrainOnRevoke:        drain,
		Limits:               limits,
	}
	return c
}

// compileLimits is a route's spec.limits (nil: none). The CRD refuses
// what it reports; objects stored before it are checked here too.
func compileLimits(l *v1alpha1.ClientLimits, problem func(string, ...any)) *routing.ClientLimits {
	if l == nil || (l.HandshakesPerMinute == nil && l.MaxTunnelsPerClient == nil) {
		return nil
	}
	out := &routing.ClientLimits{}
	if p := l.HandshakesPerMinute; p != nil {
		if *p < 1 {
			problem("spec.limits.handshakesPerMinute %d is not positive", *p)
		}
		out.HandshakeRate = float64(*p) / 60
		// Ten seconds' worth, at least one.
		out.HandshakeBurst = max(1, (int(*p)+5)/6)
		if b := l.HandshakeBurst; b != nil {
			if *b < 1 {
				problem("spec.limits.handshakeBurst %d is not positive", *b)
			}
			out.HandshakeBurst = int(*b)
		}
	}
	if m := l.MaxTunnelsPerClient; m != nil {
		if *m < 1 {
			problem("spec.limits.maxTunnelsPerClient %d is not positive", *m)
		}
		out.MaxTunnels = int(*m)
	}
	return out
}

// lookups returns the requirements of sel that the label index can answer:
// Equals, DoubleEquals and In. (In with several values is answered by the
// union of its values' lists, which are disjoint since a pod has one value
// per key.)
func lookups(sel labels.Selector) []lookup {
	reqs, _ := sel.Requirements()
	var out []lookup
	for i := range reqs {
		switch reqs[i].Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
			values := reqs[i].ValuesUnsorted()
			slices.Sort(values)
			out = append(out, lookup{key: reqs[i].Key(), values: slices.Compact(values)})
		}
	}
	return out
}

func duration(d *metav1.Duration, field string, problem func(string, ...any)) time.Duration {
	if d == nil {
		return 0
	}
	if d.Duration < 0 {
		problem("spec.timeouts.%s %s is negative", field, d.Duration)
		return 0
	}
	return d.Duration
}

// checkPath returns what is wrong with a pathPrefix (prefix true) or
// backendPath, or "" when it is usable.
func checkPath(p string, prefix bool) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return `does not start with "/"`
	case strings.Contains(p, "//"):
		return `contains "//"`
	case strings.Contains(p, ".."):
		return `contains ".."`
	case strings.Contains(p, "/./") || strings.HasSuffix(p, "/."):
		return `contains a "." segment`
	case strings.Contains(p, "%"):
		return `contains "%"`
	case prefix && p != "/" && strings.HasSuffix(p, "/"):
		return `ends with "/"`
	}
	return ""
}

// validHostname reports whether h is a lower-case DNS name with at most one
// leading "*." label, as the CRD's Hostname pattern requires.
func validHostname(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if (b < 'a' || b > 'z') && (b < '0' || b > '9') && b != '-' {
				return false
			}
		}
	}
	return true
}

// checkPort reports, through problem, a port (the field named field) that
// is neither a number in 1-65535 nor a non-empty name.
func checkPort(field string, port intstr.IntOrString, problem func(string, ...any)) {
	switch port.Type {
	case intstr.Int:
		if port.IntVal < 1 || port.IntVal > 65535 {
			problem("%s %d is not in 1-65535", field, port.IntVal)
		}
	default:
		if port.StrVal == "" {
			problem("%s is an empty name", field)
		}
	}
}
