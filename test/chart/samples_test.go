package chart

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testenv"
	"github.com/wsgate/wsgate/routing"
	"github.com/wsgate/wsgate/tablebuild"
)

// The samples' kustomization applies the sample WsGrant and WsRoute on the
// chart's CRDs, strictly; and the grant is what the route needs: with it,
// the route is accepted in namespace games, without it (or without its
// ClusterIssuer, or in another namespace) it is not.
func TestSamples(t *testing.T) {
	t.Parallel()
	installChartCRDs(t)
	ns := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	samples := filepath.Join(testenv.RepoRoot(), "config", "samples")
	out, err := env.Kubectl(ctx, "", "apply", "--validate=strict", "-n", ns, "-k", samples)
	if err != nil {
		t.Fatalf("kubectl apply -k %s: %v\n%s", samples, err, out)
	}
	for _, want := range []string{"wsgrant.wsgate.io/games", "wsroute.wsgate.io/game-server"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply -k output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(strings.ToLower(out), "warning") {
		t.Errorf("kubectl apply -k warned:\n%s", out)
	}

	var grant wsgatev1alpha1.WsGrant
	if err := env.Client.Get(ctx, types.NamespacedName{Name: "games"}, &grant); err != nil {
		t.Fatalf("the sample WsGrant after apply: %v", err)
	}
	var route wsgatev1alpha1.WsRoute
	if err := readRouteSample(&route); err != nil {
		t.Fatal(err)
	}
	var stored wsgatev1alpha1.WsRoute
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: route.Name}, &stored); err != nil {
		t.Fatalf("the sample WsRoute after apply: %v", err)
	}
	// The chart's CRD keeps the sample route's spec.limits (not pruned).
	if route.Spec.Limits == nil || !equalJSON(t, stored.Spec.Limits, route.Spec.Limits) {
		t.Errorf("stored WsRoute spec.limits = %+v, the file's %+v", stored.Spec.Limits, route.Spec.Limits)
	}
	var fromFile wsgatev1alpha1.WsGrant
	if err := yaml.UnmarshalStrict(readRepoFile(t, "config/samples/wsgate_v1alpha1_wsgrant.yaml"), &fromFile); err != nil {
		t.Fatal(err)
	}
	if !equalJSON(t, grant.Spec, fromFile.Spec) {
		t.Errorf("stored WsGrant spec = %+v, the file's %+v", grant.Spec, fromFile.Spec)
	}

	noIssuer := grant.DeepCopy()
	noIssuer.Spec.ClusterIssuers = nil
	for _, tc := range []struct {
		name, ns string
		grants   []*wsgatev1alpha1.WsGrant
		reason   string
	}{
		{"granted", "games", []*wsgatev1alpha1.WsGrant{&grant}, wsgatev1alpha1.ReasonAccepted},
		{"no grant", "games", nil, wsgatev1alpha1.ReasonHostnameNotAllowed},
		{"grant without the ClusterIssuer", "games", []*wsgatev1alpha1.WsGrant{noIssuer}, wsgatev1alpha1.ReasonIssuerNotAllowed},
		{"another namespace", ns, []*wsgatev1alpha1.WsGrant{&grant}, wsgatev1alpha1.ReasonHostnameNotAllowed},
	} {
		if got := buildReason(t, &route, tc.ns, tc.grants, ""); got != tc.reason {
			t.Errorf("%s: the sample route in namespace %s is %s, want %s", tc.name, tc.ns, got, tc.reason)
		}
	}
}

// buildReason builds the table from one route, put in namespace ns, and
// the grants, and returns the route's Accepted reason.
func buildReason(t *testing.T, r *wsgatev1alpha1.WsRoute, ns string, grants []*wsgatev1alpha1.WsGrant, defaultHost string) string {
	t.Helper()
	r = r.DeepCopy()
	r.Namespace = ns
	r.CreationTimestamp = metav1.NewTime(time.Unix(1_700_000_000, 0))
	res := tablebuild.Build(tablebuild.Input{Routes: []*wsgatev1alpha1.WsRoute{r}, Grants: grants}, tablebuild.Options{DefaultHost: defaultHost, Now: time.Unix(1_700_000_100, 0)})
	st, ok := res.Routes[routing.RouteKey{Namespace: ns, Name: r.Name}]
	if !ok {
		t.Fatalf("no status for route %s/%s", ns, r.Name)
	}
	if st.Reason != wsgatev1alpha1.ReasonAccepted {
		t.Logf("route %s/%s: %s: %s", ns, r.Name, st.Reason, st.Message)
	}
	return st.Reason
}

// equalJSON compares two values by their JSON encodings (nil and empty
// lists, which the API does not tell apart, compare equal when omitted).
func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(ja) == string(jb)
}
