package chart

import (
	"bytes"
	"regexp"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/yaml"
)

// The chart carries copies of generated files (make manifests runs make
// chart-sync); they must be byte-identical to the originals.
func TestGeneratedCopiesAreCurrent(t *testing.T) {
	for orig, copied := range map[string]string{
		"config/crd/bases/wsgate.io_wsroutes.yaml": "charts/wsgate/crds/wsgate.io_wsroutes.yaml",
		"config/crd/bases/wsgate.io_wsgrants.yaml": "charts/wsgate/crds/wsgate.io_wsgrants.yaml",
		"config/rbac/role.yaml":                    "charts/wsgate/files/rbac/role.yaml",
		"config/rbac/leader_election_role.yaml":    "charts/wsgate/files/rbac/leader_election_role.yaml",
	} {
		if !bytes.Equal(readRepoFile(t, orig), readRepoFile(t, copied)) {
			t.Errorf("%s differs from %s: run make manifests (or make chart-sync)", copied, orig)
		}
	}
}

// Every value of values.yaml has a row in the README's table, and every
// row names a value that exists. A row for an object (resources,
// securityContext...) documents the whole object.
func TestReadmeDocumentsEveryValue(t *testing.T) {
	var values map[string]any
	if err := yaml.Unmarshal(readRepoFile(t, "charts/wsgate/values.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	row := regexp.MustCompile("(?m)^\\| `([A-Za-z0-9_.]+)` \\|")
	for _, m := range row.FindAllStringSubmatch(string(readRepoFile(t, "charts/wsgate/README.md")), -1) {
		rows[m[1]] = true
	}
	if len(rows) == 0 {
		t.Fatal("no value rows (| `key` | ... |) in charts/wsgate/README.md")
	}

	var missing []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if rows[prefix] {
			return
		}
		if m, ok := v.(map[string]any); ok && len(m) > 0 {
			for k, c := range m {
				walk(strings.TrimPrefix(prefix+"."+k, "."), c)
			}
			return
		}
		missing = append(missing, prefix)
	}
	for k, v := range values {
		walk(k, v)
	}
	sort.Strings(missing)
	for _, k := range missing {
		t.Errorf("value %s has no row in the values table of charts/wsgate/README.md", k)
	}

	for r := range rows {
		if !hasPath(values, r) {
			t.Errorf("README row %s names no value of values.yaml", r)
		}
	}

	// Every top-level key, in particular, is in the table.
	for k := range values {
		found := rows[k]
		for r := range rows {
			found = found || strings.HasPrefix(r, k+".")
		}
		if !found {
			t.Errorf("top-level value %s is not in the README table", k)
		}
	}
}

func hasPath(values map[string]any, path string) bool {
	var cur any = values
	for _, p := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[p]; !ok {
			return false
		}
	}
	return true
}
