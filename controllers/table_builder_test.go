package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
)

func TestRouteUpdatesThatRebuildTheTable(t *testing.T) {
	base := func() *wsgatev1alpha1.WsRoute {
		return &wsgatev1alpha1.WsRoute{
			ObjectMeta: metav1.ObjectMeta{Name: "r", Generation: 2},
			Status:     wsgatev1alpha1.WsRouteStatus{ObservedGeneration: 2, Hostnames: []string{"a.example.com"}},
		}
	}
	for _, tc := range []struct {
		name   string
		change func(*wsgatev1alpha1.WsRoute)
		want   bool
	}{
		{"a spec change (new generation)", func(r *wsgatev1alpha1.WsRoute) { r.Generation = 3 }, true},
		{"the names it serves change", func(r *wsgatev1alpha1.WsRoute) { r.Status.Hostnames = nil }, true},
		{"conditions and endpoints change", func(r *wsgatev1alpha1.WsRoute) {
			r.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue}}
			r.Status.Endpoints.Count = 3
		}, false},
		{"only the resourceVersion changes", func(r *wsgatev1alpha1.WsRoute) { r.ResourceVersion = "9" }, false},
	} {
		n := base()
		tc.change(n)
		if got := routeSpecChanged(base(), n); got != tc.want {
			t.Errorf("%s: rebuild = %v, want %v", tc.name, got, tc.want)
		}
	}
}
