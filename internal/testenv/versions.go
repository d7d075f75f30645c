package testenv

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// PinnedVersion returns the value of key in hack/versions.env, the file
// that pins the versions of the tools (and of the other downloads that go.mod
// does not pin) for the Makefile, the scripts and the tests.
func PinnedVersion(key string) (string, error) {
	path := filepath.Join(RepoRoot(), "hack", "versions.env")
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") && k == key {
			return v, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return "", fmt.Errorf("%s: no %s", path, key)
}
