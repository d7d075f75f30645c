package v1alpha1_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
)

// grantDoc returns a WsGrant document named name whose spec is the given
// fragment, written at the indentation of spec's own fields.
func grantDoc(name, spec string) string {
	var b strings.Builder
	b.WriteString("apiVersion: wsgate.io/v1alpha1\nkind: WsGrant\nmetadata:\n  name: " + name + "\nspec:\n")
	for _, line := range strings.Split(strings.TrimRight(spec, "\n"), "\n") {
		b.WriteString("  " + line + "\n")
	}
	return b.String()
}

func TestInvalidGrantsAreRefusedByKubectlApply(t *testing.T) {
	cases := []struct {
		name, spec, field, message string
	}{
		{"a grant without namespaces", "hostnames: [ws.example.com]\n",
			"spec.namespaces", "Required value"},
		{"a grant with an empty namespace list", "namespaces: []\nhostnames: [ws.example.com]\n",
			"spec.namespaces", "should have at least 1 items"},
		{"a grant that grants nothing", "namespaces: [games]\n",
			"spec", "a grant must grant something"},
		{"a namespace that is not a DNS label", "namespaces: [Games]\nhostnames: [ws.example.com]\n",
			"spec.namespaces[0]", "should match"},
		{"a namespace pattern other than *", "namespaces: [\"team-*\"]\nhostnames: [ws.example.com]\n",
			"spec.namespaces[0]", "should match"},
		{"a hostname with upper case", "namespaces: [games]\nhostnames: [WS.example.com]\n",
			"spec.hostnames[0]", "should match"},
		{"a wildcard in the middle of a hostname", "namespaces: [games]\nhostnames: [\"ws.*.example.com\"]\n",
			"spec.hostnames[0]", "should match"},
		{"a bare suffix pattern", "namespaces: [games]\nhostnames: [\"*example.com\"]\n",
			"spec.hostnames[0]", "should match"},
		{"a ClusterIssuer name with upper case", "namespaces: [games]\nclusterIssuers: [LetsEncrypt]\n",
			"spec.clusterIssuers[0]", "should match"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := "bad-" + strings.ToLower(strings.NewReplacer(" ", "-", "*", "x").Replace(tc.name))
			doc := grantDoc(name, tc.spec)
			out, err := kubectl(t, doc, "apply", "-f", "-")
			if err == nil {
				t.Fatalf("kubectl apply accepted an invalid grant:\n%s\ndocument:\n%s", out, doc)
			}
			if !strings.Contains(out, tc.field) || !strings.Contains(out, tc.message) {
				t.Errorf("kubectl output does not name %q and say %q:\n%s\ndocument:\n%s", tc.field, tc.message, out, doc)
			}
			var g wsgatev1alpha1.WsGrant
			if err := env.Client.Get(context.Background(), types.NamespacedName{Name: name}, &g); err == nil {
				t.Errorf("the invalid grant %s exists", name)
			}
		})
	}
}

func TestValidGrantsAreAcceptedAndShown(t *testing.T) {
	doc := grantDoc("games", "namespaces: [games, \"*\"]\nhostnames: [games.example.com, \"*.rooms.example.com\", \"*\"]\ncatchAll: true\nclusterIssuers: [letsencrypt, \"*\"]\n")
	if out, err := kubectl(t, doc, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply refused a valid grant: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = kubectl(t, "", "delete", "wsgrant", "games") })
	out, err := kubectl(t, "", "get", "wsg", "games", "-o", "wide")
	if err != nil {
		t.Fatalf("kubectl get wsg: %v\n%s", err, out)
	}
	for _, want := range []string{"NAMESPACES", "HOSTS", "CATCH-ALL", "CLUSTERISSUERS", `["games","*"]`, "*.rooms.example.com", "true", "letsencrypt"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get wsg -o wide does not show %q:\n%s", want, out)
		}
	}
	out, err = kubectl(t, "", "explain", "wsgrant.spec.hostnames")
	if err != nil || !strings.Contains(out, "owned by one namespace at a time") {
		t.Errorf("kubectl explain wsgrant.spec.hostnames does not explain ownership: %v\n%s", err, out)
	}
}
