package tablebuild

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/routing"
)

func TestConflicts(t *testing.T) {
	type want struct {
		reason  string
		message string // when not "", the exact message
	}
	tests := []struct {
		name        string
		defaultHost string
		// grants, when not nil, replace grantAll.
		grants []*v1alpha1.WsGrant
		routes []*v1alpha1.WsRoute
		want   map[routing.RouteKey]want
	}{
		{
			name: "the older route wins a shared host and prefix",
			routes: []*v1alpha1.WsRoute{
				newRoute("z", "young", 10, hosts("h1"), prefix("/p")),
				newRoute("z", "old", 5, hosts("h1"), prefix("/p")),
			},
			want: map[routing.RouteKey]want{
				key("z", "old"):   {reason: v1alpha1.ReasonAccepted},
				key("z", "young"): {reason: v1alpha1.ReasonConflict, message: `host "h1" and pathPrefix "/p" are already claimed by WsRoute z/old (older)`},
			},
		},
		{
			name: "with the same creation time the namespace breaks the tie",
			routes: []*v1alpha1.WsRoute{
				newRoute("b", "a", 0, hosts("h1")),
				newRoute("a", "z", 0, hosts("h1")),
			},
			want: map[routing.RouteKey]want{
				key("a", "z"): {reason: v1alpha1.ReasonAccepted},
				key("b", "a"): {reason: v1alpha1.ReasonHostnameConflict, message: `host "h1" belongs to namespace "a", whose WsRoute a/z claimed it first; a name belongs to one namespace at a time`},
			},
		},
		{
			name: "with the same creation time and namespace the name breaks the tie",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "b", 0, hosts("h1")),
				newRoute("a", "a", 0, hosts("h1")),
			},
			want: map[routing.RouteKey]want{
				key("a", "a"): {reason: v1alpha1.ReasonAccepted},
				key("a", "b"): {reason: v1alpha1.ReasonConflict},
			},
		},
		{
			name: "when the winner is deleted the next oldest is accepted",
			routes: []*v1alpha1.WsRoute{
				// "first" (age 0) is gone from the cache.
				newRoute("a", "third", 2, hosts("h1")),
				newRoute("a", "second", 1, hosts("h1")),
			},
			want: map[routing.RouteKey]want{
				key("a", "second"): {reason: v1alpha1.ReasonAccepted},
				key("a", "third"):  {reason: v1alpha1.ReasonConflict, message: `host "h1" and pathPrefix "/" are already claimed by WsRoute a/second (older)`},
			},
		},
		{
			name: "a route that loses one claim loses all, and frees the others for younger routes",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "A", 0, hosts("h1")),
				newRoute("a", "B", 1, hosts("h1", "h2")),
				newRoute("a", "C", 2, hosts("h2")),
			},
			want: map[routing.RouteKey]want{
				key("a", "A"): {reason: v1alpha1.ReasonAccepted},
				key("a", "B"): {reason: v1alpha1.ReasonConflict, message: `host "h1" and pathPrefix "/" are already claimed by WsRoute a/A (older)`},
				key("a", "C"): {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "the same host with different prefixes does not conflict within a namespace",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "root", 0, hosts("h1")),
				newRoute("a", "chat", 1, hosts("h1"), prefix("/chat")),
				newRoute("a", "chat2", 2, hosts("h1"), prefix("/chat2")),
			},
			want: map[routing.RouteKey]want{
				key("a", "root"):  {reason: v1alpha1.ReasonAccepted},
				key("a", "chat"):  {reason: v1alpha1.ReasonAccepted},
				key("a", "chat2"): {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "a wildcard host and a name it covers do not conflict",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "wild", 0, hosts("*.example.com")),
				newRoute("a", "exact", 1, hosts("a.example.com")),
			},
			want: map[routing.RouteKey]want{
				key("a", "wild"):  {reason: v1alpha1.ReasonAccepted},
				key("a", "exact"): {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "hostnames that differ only in case conflict",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "lower", 0, hosts("ws.example.com")),
				newRoute("a", "upper", 1, hosts("WS.Example.com")),
			},
			want: map[routing.RouteKey]want{
				key("a", "lower"): {reason: v1alpha1.ReasonAccepted},
				key("a", "upper"): {reason: v1alpha1.ReasonConflict},
			},
		},
		{
			name: "two catch-all routes on the same prefix conflict",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "one", 0),
				newRoute("a", "two", 1),
			},
			want: map[routing.RouteKey]want{
				key("a", "one"): {reason: v1alpha1.ReasonAccepted},
				key("a", "two"): {reason: v1alpha1.ReasonConflict, message: `the catch-all host (no hostnames and no default host) and pathPrefix "/" are already claimed by WsRoute a/one (older)`},
			},
		},
		{
			name:        "a route on the default host conflicts with one that names it",
			defaultHost: "WS.example.com",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "named", 0, hosts("ws.example.com")),
				newRoute("a", "default", 1),
			},
			want: map[routing.RouteKey]want{
				key("a", "named"):   {reason: v1alpha1.ReasonAccepted},
				key("a", "default"): {reason: v1alpha1.ReasonConflict, message: `host "ws.example.com" and pathPrefix "/" are already claimed by WsRoute a/named (older)`},
			},
		},
		{
			name: "an invalid older route claims nothing",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "broken", 0, hosts("h1"), selector(metav1.LabelSelector{})),
				newRoute("a", "fine", 1, hosts("h1")),
			},
			want: map[routing.RouteKey]want{
				key("a", "broken"): {reason: v1alpha1.ReasonInvalid},
				key("a", "fine"):   {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "a conflicting route claims nothing either",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "A", 0, hosts("h1")),
				newRoute("a", "B", 1, hosts("h1", "h2")),
				newRoute("a", "C", 2, hosts("h2", "h3")),
				newRoute("a", "D", 3, hosts("h3")),
			},
			want: map[routing.RouteKey]want{
				key("a", "A"): {reason: v1alpha1.ReasonAccepted},
				key("a", "B"): {reason: v1alpha1.ReasonConflict},
				key("a", "C"): {reason: v1alpha1.ReasonAccepted},
				key("a", "D"): {reason: v1alpha1.ReasonConflict, message: `host "h3" and pathPrefix "/" are already claimed by WsRoute a/C (older)`},
			},
		},

		// A name belongs to one namespace.
		{
			name: "a host belongs to the namespace of its oldest accepted route, for every prefix",
			routes: []*v1alpha1.WsRoute{
				newRoute("victim", "rooms", 0, hosts("victim.example.com"), prefix("/rooms")),
				newRoute("attacker", "shadow", 1, hosts("victim.example.com"), prefix("/rooms/127.0.9.50")),
				newRoute("attacker", "other-prefix", 2, hosts("victim.example.com"), prefix("/elsewhere")),
			},
			want: map[routing.RouteKey]want{
				key("victim", "rooms"):          {reason: v1alpha1.ReasonAccepted},
				key("attacker", "shadow"):       {reason: v1alpha1.ReasonHostnameConflict, message: `host "victim.example.com" belongs to namespace "victim", whose WsRoute victim/rooms claimed it first; a name belongs to one namespace at a time`},
				key("attacker", "other-prefix"): {reason: v1alpha1.ReasonHostnameConflict},
			},
		},
		{
			name: "the same name in two namespaces, created the other way round",
			routes: []*v1alpha1.WsRoute{
				newRoute("victim", "rooms", 1, hosts("victim.example.com"), prefix("/rooms")),
				newRoute("attacker", "shadow", 0, hosts("victim.example.com"), prefix("/rooms/127.0.9.50")),
			},
			want: map[routing.RouteKey]want{
				key("attacker", "shadow"): {reason: v1alpha1.ReasonAccepted},
				key("victim", "rooms"):    {reason: v1alpha1.ReasonHostnameConflict, message: `host "victim.example.com" belongs to namespace "attacker", whose WsRoute attacker/shadow claimed it first; a name belongs to one namespace at a time`},
			},
		},
		{
			name: "ownership moves when the owner's routes are deleted",
			routes: []*v1alpha1.WsRoute{
				// victim/rooms (age 0) is gone from the cache.
				newRoute("attacker", "shadow", 1, hosts("victim.example.com"), prefix("/rooms/127.0.9.50")),
			},
			want: map[routing.RouteKey]want{
				key("attacker", "shadow"): {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "the owner's younger routes share its names; its conflicting ones do not hand them over",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "x", 0, hosts("h1"), prefix("/p")),
				newRoute("a", "y", 1, hosts("h1"), prefix("/p")),
				newRoute("a", "z", 2, hosts("h1"), prefix("/q")),
				newRoute("b", "w", 3, hosts("h1"), prefix("/r")),
			},
			want: map[routing.RouteKey]want{
				key("a", "x"): {reason: v1alpha1.ReasonAccepted},
				key("a", "y"): {reason: v1alpha1.ReasonConflict},
				key("a", "z"): {reason: v1alpha1.ReasonAccepted},
				key("b", "w"): {reason: v1alpha1.ReasonHostnameConflict},
			},
		},
		{
			name: "a route that is not accepted owns nothing",
			grants: []*v1alpha1.WsGrant{
				grant("b", withHosts("h1", "h2")),
				grant("a", withHosts("h2")),
			},
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "invalid", 0, hosts("h1"), selector(metav1.LabelSelector{})),
				newRoute("a", "ungranted", 1, hosts("h1", "h2")),
				newRoute("b", "fine", 2, hosts("h1", "h2")),
			},
			want: map[routing.RouteKey]want{
				key("a", "invalid"):   {reason: v1alpha1.ReasonInvalid},
				key("a", "ungranted"): {reason: v1alpha1.ReasonHostnameNotAllowed},
				key("b", "fine"):      {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "a route that loses one name to another namespace loses all, and frees the others",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "A", 0, hosts("h1")),
				newRoute("b", "B", 1, hosts("h1", "h2")),
				newRoute("c", "C", 2, hosts("h2")),
			},
			want: map[routing.RouteKey]want{
				key("a", "A"): {reason: v1alpha1.ReasonAccepted},
				key("b", "B"): {reason: v1alpha1.ReasonHostnameConflict},
				key("c", "C"): {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "a wildcard and an exact name under it may belong to different namespaces",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "wild", 0, hosts("*.example.com")),
				newRoute("b", "exact", 1, hosts("x.example.com")),
			},
			want: map[routing.RouteKey]want{
				key("a", "wild"):  {reason: v1alpha1.ReasonAccepted},
				key("b", "exact"): {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "the same wildcard belongs to one namespace",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "wild", 0, hosts("*.example.com"), prefix("/a")),
				newRoute("b", "wild", 1, hosts("*.example.com"), prefix("/b")),
			},
			want: map[routing.RouteKey]want{
				key("a", "wild"): {reason: v1alpha1.ReasonAccepted},
				key("b", "wild"): {reason: v1alpha1.ReasonHostnameConflict},
			},
		},
		{
			name: "the catch-all belongs to one namespace",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "one", 0),
				newRoute("b", "two", 1, prefix("/two")),
			},
			want: map[routing.RouteKey]want{
				key("a", "one"): {reason: v1alpha1.ReasonAccepted},
				key("b", "two"): {reason: v1alpha1.ReasonHostnameConflict, message: `the catch-all host (no hostnames and no default host) belongs to namespace "a", whose WsRoute a/one claimed it first; a name belongs to one namespace at a time`},
			},
		},
		{
			name:        "the default host belongs to one namespace, named or not",
			defaultHost: "ws.example.com",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "default", 0, prefix("/a")),
				newRoute("b", "named", 1, hosts("ws.example.com"), prefix("/b")),
				newRoute("c", "default", 2, prefix("/c")),
			},
			want: map[routing.RouteKey]want{
				key("a", "default"): {reason: v1alpha1.ReasonAccepted},
				key("b", "named"):   {reason: v1alpha1.ReasonHostnameConflict},
				key("c", "default"): {reason: v1alpha1.ReasonHostnameConflict},
			},
		},

		// A name stays with the namespace that serves it.
		{
			name: "an older route that adds a name another namespace serves does not take it",
			routes: []*v1alpha1.WsRoute{
				newRoute("victim", "rooms", 5, hosts("victim.example.com"), serving("victim.example.com")),
				newRoute("attacker", "old", 0, hosts("attacker.example.com", "victim.example.com"), serving("attacker.example.com")),
			},
			want: map[routing.RouteKey]want{
				key("victim", "rooms"): {reason: v1alpha1.ReasonAccepted},
				key("attacker", "old"): {reason: v1alpha1.ReasonHostnameConflict, message: `host "victim.example.com" belongs to namespace "victim", whose WsRoute victim/rooms serves it; a name belongs to one namespace at a time`},
			},
		},
		{
			name: "a route created in the same second from a namespace that sorts first does not take a served name",
			routes: []*v1alpha1.WsRoute{
				newRoute("zeta", "rooms", 0, hosts("h1"), serving("h1")),
				newRoute("alpha", "rooms", 0, hosts("h1"), prefix("/a")),
			},
			want: map[routing.RouteKey]want{
				key("zeta", "rooms"):  {reason: v1alpha1.ReasonAccepted},
				key("alpha", "rooms"): {reason: v1alpha1.ReasonHostnameConflict},
			},
		},
		{
			name: "a served name is kept by the namespace, for its routes added later too",
			routes: []*v1alpha1.WsRoute{
				newRoute("other", "old", 0, hosts("h1"), prefix("/o")),
				newRoute("owner", "serving", 5, hosts("h1"), serving("h1")),
				newRoute("owner", "added", 9, hosts("h1"), prefix("/added")),
			},
			want: map[routing.RouteKey]want{
				key("other", "old"):     {reason: v1alpha1.ReasonHostnameConflict},
				key("owner", "serving"): {reason: v1alpha1.ReasonAccepted},
				key("owner", "added"):   {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "a route that no longer claims a name it served does not keep it",
			routes: []*v1alpha1.WsRoute{
				newRoute("victim", "moved", 0, hosts("elsewhere.example.com"), serving("h1")),
				newRoute("b", "new", 5, hosts("h1")),
			},
			want: map[routing.RouteKey]want{
				key("victim", "moved"): {reason: v1alpha1.ReasonAccepted},
				key("b", "new"):        {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name:   "a route whose grant was withdrawn does not keep the name it served",
			grants: []*v1alpha1.WsGrant{grant("b", withHosts("h1"))},
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "served", 0, hosts("h1"), serving("h1")),
				newRoute("b", "new", 5, hosts("h1")),
			},
			want: map[routing.RouteKey]want{
				key("a", "served"): {reason: v1alpha1.ReasonHostnameNotAllowed},
				key("b", "new"):    {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name: "where two namespaces' statuses both say they serve a name, the oldest route keeps it",
			routes: []*v1alpha1.WsRoute{
				newRoute("b", "young", 5, hosts("h1"), serving("h1")),
				newRoute("a", "old", 1, hosts("h1"), serving("h1")),
				newRoute("c", "oldest", 0, hosts("h1")),
			},
			want: map[routing.RouteKey]want{
				key("a", "old"):    {reason: v1alpha1.ReasonAccepted},
				key("b", "young"):  {reason: v1alpha1.ReasonHostnameConflict},
				key("c", "oldest"): {reason: v1alpha1.ReasonHostnameConflict},
			},
		},
		{
			name: "the catch-all stays with the namespace that serves it",
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "old", 0, prefix("/a")),
				newRoute("b", "serving", 5, serving(v1alpha1.CatchAllHostname)),
			},
			want: map[routing.RouteKey]want{
				key("a", "old"):     {reason: v1alpha1.ReasonHostnameConflict},
				key("b", "serving"): {reason: v1alpha1.ReasonAccepted},
			},
		},

		// The cluster admin grants names.
		{
			name:   "without a grant nothing is accepted",
			grants: []*v1alpha1.WsGrant{},
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "named", 0, hosts("ws.example.com")),
				newRoute("a", "catch-all", 1),
			},
			want: map[routing.RouteKey]want{
				key("a", "named"):     {reason: v1alpha1.ReasonHostnameNotAllowed, message: `no WsGrant lets namespace "a" claim host "ws.example.com"; ask the cluster admin for a grant (kubectl get wsgrants)`},
				key("a", "catch-all"): {reason: v1alpha1.ReasonHostnameNotAllowed, message: `no WsGrant lets namespace "a" have routes without hostnames (the catch-all: catchAll true); name a granted host in spec.hostnames, or ask the cluster admin for a grant (kubectl get wsgrants)`},
			},
		},
		{
			name:   "an exact grant covers that name only",
			grants: []*v1alpha1.WsGrant{grant("a", withHosts("ws.example.com"))},
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "exact", 0, hosts("WS.example.com")),
				newRoute("a", "under", 1, hosts("x.ws.example.com")),
				newRoute("a", "wild", 2, hosts("*.ws.example.com")),
				newRoute("a", "one-of-two", 3, hosts("ws.example.com", "other.example.com"), prefix("/two")),
				newRoute("b", "elsewhere", 4, hosts("b.example.com")),
			},
			want: map[routing.RouteKey]want{
				key("a", "exact"):      {reason: v1alpha1.ReasonAccepted},
				key("a", "under"):      {reason: v1alpha1.ReasonHostnameNotAllowed},
				key("a", "wild"):       {reason: v1alpha1.ReasonHostnameNotAllowed},
				key("a", "one-of-two"): {reason: v1alpha1.ReasonHostnameNotAllowed, message: `no WsGrant lets namespace "a" claim host "other.example.com"; ask the cluster admin for a grant (kubectl get wsgrants)`},
				key("b", "elsewhere"):  {reason: v1alpha1.ReasonHostnameNotAllowed},
			},
		},
		{
			name:   "a wildcard grant covers every name and wildcard under it, not the name itself",
			grants: []*v1alpha1.WsGrant{grant("a", withHosts("*.games.example.com"))},
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "one", 0, hosts("x.games.example.com")),
				newRoute("a", "deep", 1, hosts("a.b.games.example.com")),
				newRoute("a", "wild", 2, hosts("*.games.example.com")),
				newRoute("a", "apex", 3, hosts("games.example.com")),
				newRoute("a", "suffix-only", 4, hosts("xgames.example.com")),
				newRoute("a", "wider", 5, hosts("*.example.com")),
			},
			want: map[routing.RouteKey]want{
				key("a", "one"):         {reason: v1alpha1.ReasonAccepted},
				key("a", "deep"):        {reason: v1alpha1.ReasonAccepted},
				key("a", "wild"):        {reason: v1alpha1.ReasonAccepted},
				key("a", "apex"):        {reason: v1alpha1.ReasonHostnameNotAllowed},
				key("a", "suffix-only"): {reason: v1alpha1.ReasonHostnameNotAllowed},
				key("a", "wider"):       {reason: v1alpha1.ReasonHostnameNotAllowed},
			},
		},
		{
			name: "grants add up, and a grant to every namespace applies to each",
			grants: []*v1alpha1.WsGrant{
				grant("a", withHosts("a.example.com")),
				grant("a", withHosts("b.example.com")),
				grant("*", withHosts("shared.example.com")),
			},
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "both", 0, hosts("a.example.com", "b.example.com")),
				newRoute("z", "shared", 1, hosts("shared.example.com")),
			},
			want: map[routing.RouteKey]want{
				key("a", "both"):   {reason: v1alpha1.ReasonAccepted},
				key("z", "shared"): {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name:   "routes without hostnames need catchAll",
			grants: []*v1alpha1.WsGrant{grant("a", withHosts("*")), grant("b", withCatchAll)},
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "catch-all", 0, prefix("/a")),
				newRoute("b", "catch-all", 1, prefix("/b")),
			},
			want: map[routing.RouteKey]want{
				key("a", "catch-all"): {reason: v1alpha1.ReasonHostnameNotAllowed},
				key("b", "catch-all"): {reason: v1alpha1.ReasonAccepted},
			},
		},
		{
			name:        "with a default host, routes without hostnames need that name granted",
			defaultHost: "ws.example.com",
			grants:      []*v1alpha1.WsGrant{grant("a", withHosts("ws.example.com")), grant("b", withCatchAll)},
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "default", 0, prefix("/a")),
				newRoute("b", "default", 1, prefix("/b")),
			},
			want: map[routing.RouteKey]want{
				key("a", "default"): {reason: v1alpha1.ReasonAccepted},
				key("b", "default"): {reason: v1alpha1.ReasonHostnameNotAllowed, message: `no WsGrant lets namespace "b" claim host "ws.example.com"; ask the cluster admin for a grant (kubectl get wsgrants)`},
			},
		},
		{
			name:   "a ClusterIssuer needs a grant; an Issuer of the namespace does not",
			grants: []*v1alpha1.WsGrant{grant("a", withHosts("*.example.com"), withIssuers("letsencrypt"))},
			routes: []*v1alpha1.WsRoute{
				newRoute("a", "granted", 0, hosts("g.example.com"), withIssuer("ClusterIssuer", "letsencrypt", "")),
				newRoute("a", "other", 1, hosts("o.example.com"), withIssuer("ClusterIssuer", "internal-ca", "")),
				newRoute("a", "own", 2, hosts("n.example.com"), withIssuer("Issuer", "mine", "")),
				newRoute("a", "foreign-group", 3, hosts("f.example.com"), withIssuer("Issuer", "pca", "awspca.cert-manager.io")),
			},
			want: map[routing.RouteKey]want{
				key("a", "granted"):       {reason: v1alpha1.ReasonAccepted},
				key("a", "other"):         {reason: v1alpha1.ReasonIssuerNotAllowed, message: `no WsGrant lets namespace "a" use issuer "internal-ca" (ClusterIssuer) in tls.issuerRef; use an Issuer of the namespace, or ask the cluster admin for a grant (kubectl get wsgrants)`},
				key("a", "own"):           {reason: v1alpha1.ReasonAccepted},
				key("a", "foreign-group"): {reason: v1alpha1.ReasonIssuerNotAllowed},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pods := []*corev1.Pod{}
			for i, r := range tc.routes {
				pods = append(pods, newPod(r.Namespace, "pod-"+r.Name, fmt.Sprintf("10.1.0.%d", i+1), map[string]string{"app": r.Name}))
			}
			grants := grantAll
			if tc.grants != nil {
				grants = tc.grants
			}
			res := Build(Input{Grants: grants, Routes: tc.routes, Pods: compact(pods...)}, Options{DefaultHost: tc.defaultHost})
			if len(res.Routes) != len(tc.want) {
				t.Errorf("%d statuses, want %d", len(res.Routes), len(tc.want))
			}
			for k, w := range tc.want {
				st, ok := res.Routes[k]
				if !ok {
					t.Errorf("%s: no status", k)
					continue
				}
				if st.Reason != w.reason || st.Accepted != (w.reason == v1alpha1.ReasonAccepted) {
					t.Errorf("%s: reason %q accepted %v (%s), want %q", k, st.Reason, st.Accepted, st.Message, w.reason)
				}
				if w.message != "" && st.Message != w.message {
					t.Errorf("%s: message\n  %s\nwant\n  %s", k, st.Message, w.message)
				}
				_, inTable := res.Table.Route(k)
				if inTable != st.Accepted {
					t.Errorf("%s: in table = %v, accepted = %v", k, inTable, st.Accepted)
				}
				if st.Accepted && st.Endpoints.Count != 1 {
					t.Errorf("%s: accepted with %d endpoints, want its one pod", k, st.Endpoints.Count)
				}
				if !st.Accepted && !reflect.DeepEqual(st.Endpoints, v1alpha1.RouteEndpoints{}) {
					t.Errorf("%s: not accepted but endpoints %+v, want zero", k, st.Endpoints)
				}
			}
		})
	}
}

func TestDefaultHost(t *testing.T) {
	routes := func() []*v1alpha1.WsRoute {
		return []*v1alpha1.WsRoute{
			newRoute("a", "plain", 0),
			newRoute("a", "named", 1, hosts("other.example.com"), prefix("/named")),
		}
	}
	pods := []*corev1.Pod{
		newPod("a", "p1", "10.0.0.1", map[string]string{"app": "plain"}),
		newPod("a", "p2", "10.0.0.2", map[string]string{"app": "named"}),
	}

	t.Run("an empty hostnames list takes the default host, lower-cased", func(t *testing.T) {
		res := Build(Input{Grants: grantAll, Routes: routes(), Pods: compact(pods...)}, Options{DefaultHost: "WS.Example.com"})
		r, ok := res.Table.Route(key("a", "plain"))
		if !ok {
			t.Fatal("route a/plain is not in the table")
		}
		if !slices.Equal(r.Hosts, []string{"ws.example.com"}) {
			t.Errorf("hosts = %v, want [ws.example.com]", r.Hosts)
		}
		if got, _, ok := res.Table.Match("ws.example.com", "/10.0.0.1/x"); !ok || got.Key != key("a", "plain") {
			t.Errorf("the default host does not reach a/plain")
		}
		if _, _, ok := res.Table.Match("unknown.example.com", "/10.0.0.1/x"); ok {
			t.Errorf("an unknown host reaches a route although no route is the catch-all")
		}
		if got, _, ok := res.Table.Match("other.example.com", "/named/10.0.0.2"); !ok || got.Key != key("a", "named") {
			t.Errorf("a named host does not reach its route")
		}
		if r, _ := res.Table.Route(key("a", "named")); !slices.Equal(r.Hosts, []string{"other.example.com"}) {
			t.Errorf("a route with hostnames got hosts %v: the default host must only replace an empty list", r.Hosts)
		}
	})

	t.Run("without a default host an empty hostnames list is the catch-all", func(t *testing.T) {
		res := Build(Input{Grants: grantAll, Routes: routes(), Pods: compact(pods...)}, Options{})
		r, ok := res.Table.Route(key("a", "plain"))
		if !ok {
			t.Fatal("route a/plain is not in the table")
		}
		if len(r.Hosts) != 0 {
			t.Errorf("hosts = %v, want none (catch-all)", r.Hosts)
		}
		for _, h := range []string{"ws.example.com", "anything.test"} {
			if got, _, ok := res.Table.Match(h, "/10.0.0.1/x"); !ok || got.Key != key("a", "plain") {
				t.Errorf("host %q does not reach the catch-all route", h)
			}
		}
		if st := res.Routes[key("a", "plain")]; st.Message != `the route is valid and owns pathPrefix "/" on the catch-all host` {
			t.Errorf("message = %q", st.Message)
		}
	})
}

func TestInvalidRoutes(t *testing.T) {
	expr := func(k string, op metav1.LabelSelectorOperator, vs ...string) routeOpt {
		return selector(metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: k, Operator: op, Values: vs}}})
	}
	tests := []struct {
		name    string
		opt     routeOpt
		message string // a part of the message
	}{
		{"an empty selector is refused", selector(metav1.LabelSelector{}), "spec.selector is empty"},
		{"an empty matchLabels map is refused", selector(metav1.LabelSelector{MatchLabels: map[string]string{}}), "spec.selector is empty"},
		{"a label key with a space is refused", matchLabels("bad key", "x"), "spec.selector is invalid"},
		{"a label value that is too long is refused", matchLabels("app", strings.Repeat("x", 64)), "spec.selector is invalid"},
		{"In without values is refused", expr("app", metav1.LabelSelectorOpIn), "spec.selector is invalid"},
		{"Exists with values is refused", expr("app", metav1.LabelSelectorOpExists, "x"), "spec.selector is invalid"},
		{"an unknown operator is refused", expr("app", "Near", "x"), `"Near" is not a valid label selector operator`},
		{"port 0 is refused", port(intstr.FromInt32(0)), "spec.port 0 is not in 1-65535"},
		{"an empty port name is refused", port(intstr.FromString("")), "spec.port is an empty name"},
		{"a pathPrefix with a trailing slash is refused", prefix("/chat/"), `spec.pathPrefix "/chat/" ends with "/"`},
		{"a pathPrefix without a leading slash is refused", prefix("chat"), `does not start with "/"`},
		{"a pathPrefix with a dot-dot segment is refused", prefix("/a/../b"), `contains ".."`},
		{"a pathPrefix with a dot segment is refused", prefix("/a/./b"), `spec.pathPrefix "/a/./b" contains a "." segment`},
		{"a backendPath ending in a dot segment is refused", func(r *v1alpha1.WsRoute) { r.Spec.BackendPath = "/a/." }, `spec.backendPath "/a/." contains a "." segment`},
		{"a backendPath with a double slash is refused", func(r *v1alpha1.WsRoute) { r.Spec.BackendPath = "/a//b" }, `spec.backendPath "/a//b" contains "//"`},
		{"a hostname with a port is refused", hosts("ws.example.com:443"), `spec.hostnames entry "ws.example.com:443"`},
		{"a hostname with a wildcard in the middle is refused", hosts("a.*.example.com"), `spec.hostnames entry "a.*.example.com"`},
		{"an unknown revokePolicy is refused", func(r *v1alpha1.WsRoute) { r.Spec.RevokePolicy = "Linger" }, `spec.revokePolicy "Linger" is neither Close nor Drain`},
		{"a maxConnectionsPerPod of 0 is refused", func(r *v1alpha1.WsRoute) { r.Spec.MaxConnectionsPerPod = new(int32) }, "spec.maxConnectionsPerPod 0 is not positive"},
		{"a negative timeout is refused", func(r *v1alpha1.WsRoute) {
			r.Spec.Timeouts = &v1alpha1.Timeouts{Idle: &metav1.Duration{Duration: -time.Second}}
		}, "spec.timeouts.idle -1s is negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad := newRoute("a", "bad", 0, hosts("h1"), tc.opt, generation(7))
			good := newRoute("a", "good", 1, hosts("h1"))
			res := Build(Input{Grants: grantAll,
				Routes: []*v1alpha1.WsRoute{bad, good},
				Pods: compact(
					newPod("a", "p-bad", "10.0.0.1", map[string]string{"app": "bad"}),
					newPod("a", "p-good", "10.0.0.2", map[string]string{"app": "good"}),
				),
			}, Options{})
			st := res.Routes[key("a", "bad")]
			if st.Accepted || st.Reason != v1alpha1.ReasonInvalid {
				t.Errorf("accepted %v reason %q, want Invalid", st.Accepted, st.Reason)
			}
			if !strings.Contains(st.Message, tc.message) {
				t.Errorf("message %q does not contain %q", st.Message, tc.message)
			}
			if st.Generation != 7 {
				t.Errorf("generation = %d, want 7", st.Generation)
			}
			if !reflect.DeepEqual(st.Endpoints, v1alpha1.RouteEndpoints{}) {
				t.Errorf("endpoints = %+v, want zero", st.Endpoints)
			}
			if _, ok := res.Table.Route(key("a", "bad")); ok {
				t.Errorf("an invalid route is in the table")
			}
			if !res.Routes[key("a", "good")].Accepted {
				t.Errorf("the younger valid route on the same host is not accepted: %s", res.Routes[key("a", "good")].Message)
			}
		})
	}
}

func TestRouteFields(t *testing.T) {
	dur := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	maxConns := int32(25)
	full := newRoute("a", "full", 0, generation(4), func(r *v1alpha1.WsRoute) {
		r.Spec.Hostnames = []v1alpha1.Hostname{"B.example.com", "a.example.com", "b.example.com"}
		r.Spec.PathPrefix = "/chat"
		r.Spec.BackendPath = "/ws/v1"
		r.Spec.AllowedOrigins = []v1alpha1.Origin{"https://b.example.com", "https://a.example.com"}
		r.Spec.Timeouts = &v1alpha1.Timeouts{Handshake: dur(5 * time.Second), Idle: dur(time.Minute), MaxLifetime: dur(time.Hour)}
		r.Spec.MaxConnectionsPerPod = &maxConns
		r.Spec.RevokePolicy = v1alpha1.RevokeDrain
	})
	bare := newRoute("a", "bare", 1, hosts("c.example.com"), func(r *v1alpha1.WsRoute) {
		r.Spec.Timeouts = &v1alpha1.Timeouts{Idle: dur(time.Minute)}
		r.Spec.RevokePolicy = v1alpha1.RevokeClose
	})
	res := Build(Input{Grants: grantAll, Routes: []*v1alpha1.WsRoute{full, bare}}, Options{})

	got, ok := res.Table.Route(key("a", "full"))
	if !ok {
		t.Fatalf("a/full is not in the table: %s", res.Routes[key("a", "full")].Message)
	}
	want := routing.Route{
		Key:                  key("a", "full"),
		Generation:           4,
		Hosts:                []string{"a.example.com", "b.example.com"},
		PathPrefix:           "/chat",
		BackendPath:          "/ws/v1",
		AllowedOrigins:       []string{"https://a.example.com", "https://b.example.com"},
		Timeouts:             routing.Timeouts{Handshake: 5 * time.Second, Idle: time.Minute, MaxLifetime: time.Hour},
		MaxConnectionsPerPod: 25,
		DrainOnRevoke:        true,
	}
	checkRoute(t, got, want)

	got, ok = res.Table.Route(key("a", "bare"))
	if !ok {
		t.Fatalf("a/bare is not in the table: %s", res.Routes[key("a", "bare")].Message)
	}
	checkRoute(t, got, routing.Route{
		Key:         key("a", "bare"),
		Generation:  1,
		Hosts:       []string{"c.example.com"},
		PathPrefix:  "/",
		BackendPath: "/",
		Timeouts:    routing.Timeouts{Idle: time.Minute},
	})
	if st := res.Routes[key("a", "full")]; st.Message != `the route is valid and owns pathPrefix "/chat" on hosts "a.example.com", "b.example.com"` {
		t.Errorf("message = %q", st.Message)
	}
}

// checkRoute compares the exported fields of a route, ignoring backends.
func checkRoute(t *testing.T, got *routing.Route, want routing.Route) {
	t.Helper()
	g := *got
	g.Backends = nil
	want.Backends = nil
	gv, wv := reflect.ValueOf(g), reflect.ValueOf(want)
	for i := range gv.NumField() {
		f := gv.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
			t.Errorf("%s: %s = %#v, want %#v", want.Key, f.Name, gv.Field(i).Interface(), wv.Field(i).Interface())
		}
	}
}

func TestDuplicateRouteKeys(t *testing.T) {
	// A cache never holds two objects with one key, but a build must stay
	// deterministic if it is handed them: the older one is used.
	older := newRoute("a", "chat", 0, hosts("h1"), generation(1))
	newer := newRoute("a", "chat", 5, hosts("h2"), generation(2))
	newer.UID = "other"
	for _, routes := range [][]*v1alpha1.WsRoute{{older, newer}, {newer, older}} {
		res := Build(Input{Grants: grantAll, Routes: routes}, Options{})
		st := res.Routes[key("a", "chat")]
		r, ok := res.Table.Route(key("a", "chat"))
		if len(res.Routes) != 1 || !ok || st.Generation != 1 || !slices.Equal(r.Hosts, []string{"h1"}) {
			t.Errorf("status %+v, route %+v: want the older object's", st, r)
		}
	}
}

func TestAcceptedRoutesReportTheNamesTheyServe(t *testing.T) {
	res := Build(Input{Grants: grantAll, Routes: []*v1alpha1.WsRoute{
		newRoute("a", "named", 0, hosts("B.example.com", "a.example.com", "*.w.example.com")),
		newRoute("b", "default", 1),
		newRoute("c", "refused", 2, hosts("a.example.com")),
	}}, Options{DefaultHost: "ws.example.com"})
	for k, want := range map[routing.RouteKey][]string{
		key("a", "named"):   {"*.w.example.com", "a.example.com", "b.example.com"},
		key("b", "default"): {"ws.example.com"},
		key("c", "refused"): nil,
	} {
		if got := res.Routes[k].Hostnames; !slices.Equal(got, want) {
			t.Errorf("%s: Hostnames = %q, want %q", k, got, want)
		}
	}
	catchAll := Build(Input{Grants: grantAll, Routes: []*v1alpha1.WsRoute{newRoute("a", "all", 0)}}, Options{})
	if got := catchAll.Routes[key("a", "all")].Hostnames; !slices.Equal(got, []string{v1alpha1.CatchAllHostname}) {
		t.Errorf("catch-all route: Hostnames = %q, want [%q]", got, v1alpha1.CatchAllHostname)
	}
}
