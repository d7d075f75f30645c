package tablebuild

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/routing"
)

func withLimits(l *v1alpha1.ClientLimits) routeOpt {
	return func(r *v1alpha1.WsRoute) { r.Spec.Limits = l }
}

func i32(v int32) *int32 { return &v }

// TestLimits: spec.limits becomes the table route's Limits: a rate a
// second from handshakesPerMinute, the burst given or ten seconds' worth
// (rounded up, at least 1), the tunnel cap as given; no limits, nil.
func TestLimits(t *testing.T) {
	cases := []struct {
		name   string
		limits *v1alpha1.ClientLimits
		want   *routing.ClientLimits
	}{
		{"no limits", nil, nil},
		{"60 a minute: one a second, ten at once",
			&v1alpha1.ClientLimits{HandshakesPerMinute: i32(60)},
			&routing.ClientLimits{HandshakeRate: 1, HandshakeBurst: 10}},
		{"1 a minute: a burst of 1",
			&v1alpha1.ClientLimits{HandshakesPerMinute: i32(1)},
			&routing.ClientLimits{HandshakeRate: 1.0 / 60, HandshakeBurst: 1}},
		{"6 a minute: one in ten seconds",
			&v1alpha1.ClientLimits{HandshakesPerMinute: i32(6)},
			&routing.ClientLimits{HandshakeRate: 0.1, HandshakeBurst: 1}},
		{"7 a minute: ten seconds' worth rounded up",
			&v1alpha1.ClientLimits{HandshakesPerMinute: i32(7)},
			&routing.ClientLimits{HandshakeRate: 7.0 / 60, HandshakeBurst: 2}},
		{"120 a minute",
			&v1alpha1.ClientLimits{HandshakesPerMinute: i32(120)},
			&routing.ClientLimits{HandshakeRate: 2, HandshakeBurst: 20}},
		{"the CRD's highest rate: the CRD's highest burst",
			&v1alpha1.ClientLimits{HandshakesPerMinute: i32(600000)},
			&routing.ClientLimits{HandshakeRate: 10000, HandshakeBurst: 100000}},
		{"a rate beyond the CRD's, stored before it",
			&v1alpha1.ClientLimits{HandshakesPerMinute: i32(math.MaxInt32)},
			&routing.ClientLimits{HandshakeRate: math.MaxInt32 / 60.0, HandshakeBurst: (math.MaxInt32 + 5) / 6}},
		{"an explicit burst is kept",
			&v1alpha1.ClientLimits{HandshakesPerMinute: i32(60), HandshakeBurst: i32(3)},
			&routing.ClientLimits{HandshakeRate: 1, HandshakeBurst: 3}},
		{"an explicit burst above ten seconds' worth is kept",
			&v1alpha1.ClientLimits{HandshakesPerMinute: i32(1), HandshakeBurst: i32(100)},
			&routing.ClientLimits{HandshakeRate: 1.0 / 60, HandshakeBurst: 100}},
		{"an explicit burst of 1 is kept",
			&v1alpha1.ClientLimits{HandshakesPerMinute: i32(600), HandshakeBurst: i32(1)},
			&routing.ClientLimits{HandshakeRate: 10, HandshakeBurst: 1}},
		{"a tunnel cap alone",
			&v1alpha1.ClientLimits{MaxTunnelsPerClient: i32(5)},
			&routing.ClientLimits{MaxTunnels: 5}},
		{"all three",
			&v1alpha1.ClientLimits{HandshakesPerMinute: i32(30), HandshakeBurst: i32(4), MaxTunnelsPerClient: i32(2)},
			&routing.ClientLimits{HandshakeRate: 0.5, HandshakeBurst: 4, MaxTunnels: 2}},
		{"a rate and a tunnel cap",
			&v1alpha1.ClientLimits{HandshakesPerMinute: i32(90), MaxTunnelsPerClient: i32(1000000)},
			&routing.ClientLimits{HandshakeRate: 1.5, HandshakeBurst: 15, MaxTunnels: 1000000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := Build(Input{Grants: grantAll, Routes: []*v1alpha1.WsRoute{newRoute("a", "limited", 0, hosts("h1"), withLimits(tc.limits))}}, Options{})
			r, ok := res.Table.Route(key("a", "limited"))
			if !ok {
				t.Fatalf("the route is not in the table: %s", res.Routes[key("a", "limited")].Message)
			}
			if !reflect.DeepEqual(r.Limits, tc.want) {
				t.Errorf("Limits = %s, want %s", fmtLimits(r.Limits), fmtLimits(tc.want))
			}
		})
	}
}

func fmtLimits(l *routing.ClientLimits) string {
	if l == nil {
		return "nil"
	}
	return fmt.Sprintf("%+v", *l)
}

// TestInvalidLimits: limits the CRD refuses, in an object stored before
// it, make the route invalid, saying which.
func TestInvalidLimits(t *testing.T) {
	cases := []struct {
		name    string
		limits  *v1alpha1.ClientLimits
		message string
	}{
		{"zero handshakes a minute", &v1alpha1.ClientLimits{HandshakesPerMinute: i32(0)}, "spec.limits.handshakesPerMinute 0 is not positive"},
		{"a negative rate", &v1alpha1.ClientLimits{HandshakesPerMinute: i32(-60)}, "spec.limits.handshakesPerMinute -60 is not positive"},
		{"a burst of zero", &v1alpha1.ClientLimits{HandshakesPerMinute: i32(60), HandshakeBurst: i32(0)}, "spec.limits.handshakeBurst 0 is not positive"},
		{"a negative burst", &v1alpha1.ClientLimits{HandshakesPerMinute: i32(60), HandshakeBurst: i32(-1)}, "spec.limits.handshakeBurst -1 is not positive"},
		{"a tunnel cap of zero", &v1alpha1.ClientLimits{MaxTunnelsPerClient: i32(0)}, "spec.limits.maxTunnelsPerClient 0 is not positive"},
		{"a negative tunnel cap", &v1alpha1.ClientLimits{HandshakesPerMinute: i32(60), MaxTunnelsPerClient: i32(-3)}, "spec.limits.maxTunnelsPerClient -3 is not positive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := Build(Input{Grants: grantAll, Routes: []*v1alpha1.WsRoute{newRoute("a", "bad", 0, hosts("h1"), withLimits(tc.limits))}}, Options{})
			st := res.Routes[key("a", "bad")]
			if st.Accepted || st.Reason != v1alpha1.ReasonInvalid {
				t.Errorf("accepted %v reason %q, want Invalid", st.Accepted, st.Reason)
			}
			if !strings.Contains(st.Message, tc.message) {
				t.Errorf("message %q does not contain %q", st.Message, tc.message)
			}
			if _, ok := res.Table.Route(key("a", "bad")); ok {
				t.Error("an invalid route is in the table")
			}
		})
	}
}
