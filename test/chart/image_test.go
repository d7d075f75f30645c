package chart

import (
	"bufio"
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/yaml"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testenv"
)

// dockerfile is the Dockerfile, parsed just enough: each stage's
// instructions with continuation lines joined.
type dockerfile struct {
	stages []stage
}

type stage struct {
	from, name string
	// instructions are "KEYWORD arguments", one per instruction.
	instructions []string
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	var df dockerfile
	var cur strings.Builder
	flush := func() {
		ins := strings.TrimSpace(cur.String())
		cur.Reset()
		if ins == "" {
			return
		}
		kw, rest, _ := strings.Cut(ins, " ")
		if strings.EqualFold(kw, "FROM") {
			f := strings.Fields(rest)
			s := stage{from: ins}
			for i, w := range f {
				if strings.EqualFold(w, "AS") && i+1 < len(f) {
					s.name = f[i+1]
				}
			}
			df.stages = append(df.stages, s)
			return
		}
		if len(df.stages) == 0 {
			t.Fatalf("Dockerfile: %q before FROM", ins)
		}
		df.stages[len(df.stages)-1].instructions = append(df.stages[len(df.stages)-1].instructions, ins)
	}
	sc := bufio.NewScanner(bytes.NewReader(readRepoFile(t, "Dockerfile")))
	for sc.Scan() {
		line := sc.Text()
		if trimmed := strings.TrimSpace(line); cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\"))
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	return df
}

func (df dockerfile) stage(t *testing.T, name string) stage {
	t.Helper()
	for _, s := range df.stages {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("Dockerfile has no stage %q", name)
	return stage{}
}

// buildCommand returns the shell command of the build stage's RUN that
// runs go build, without RUN's own flags (--mount=...).
func (s stage) buildCommand(t *testing.T) string {
	t.Helper()
	for _, ins := range s.instructions {
		kw, rest, _ := strings.Cut(ins, " ")
		if !strings.EqualFold(kw, "RUN") || !strings.Contains(rest, "go build") {
			continue
		}
		f := strings.Fields(rest)
		for len(f) > 0 && strings.HasPrefix(f[0], "--") {
			f = f[1:]
		}
		return strings.Join(f, " ")
	}
	t.Fatalf("the Dockerfile's build stage has no RUN ... go build")
	return ""
}

// The Dockerfile's go build command, run here as the build stage runs it
// (CGO_ENABLED=0, its ldflags), makes a static binary (the final stage is
// scratch: no libc, no loader) that prints the stamped version,
// and that accepts every set of flags the chart renders.
func TestDockerfileBuild(t *testing.T) {
	t.Parallel()
	df := parseDockerfile(t)
	cmdline := df.stage(t, "build").buildCommand(t)
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-ldflags", "main.version=${VERSION}", "./cmd/wsgate"} {
		if !strings.Contains(cmdline, want) {
			t.Errorf("the build command lacks %s: %s", want, cmdline)
		}
	}
	outFlag := regexp.MustCompile(`(^|\s)-o\s+(\S+)`)
	if !outFlag.MatchString(cmdline) {
		t.Fatalf("the build command has no -o: %s", cmdline)
	}
	bin := filepath.Join(t.TempDir(), "wsgate")
	cmdline = outFlag.ReplaceAllString(cmdline, "${1}-o "+bin)
	const version = "v0.0.0-chart-test"

	start := time.Now()
	cmd := exec.Command("bash", "-euc", cmdline)
	cmd.Dir = testenv.RepoRoot() // the stage's WORKDIR holds the repository (COPY . .)
	cmd.Env = append(os.Environ(), "TARGETOS="+runtime.GOOS, "TARGETARCH="+runtime.GOARCH, "VERSION="+version)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmdline, err, out)
	}
	t.Logf("built %s in %s with: %s", bin, time.Since(start).Round(time.Second), cmdline)

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary has a %s program header: it is not static", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs %v", libs)
	}
	if file, err := exec.LookPath("file"); err == nil {
		out, err := exec.Command(file, bin).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "statically linked") {
			t.Errorf("file %s: %v %s", bin, err, out)
		}
	} else {
		t.Log("no file command; the ELF checks stand alone")
	}

	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || string(out) != version+"\n" {
		t.Errorf("wsgate --version = %q, %v; want %q", out, err, version+"\n")
	}

	// The binary parses every variant's rendered arguments (--version makes
	// it exit right after parsing).
	for _, v := range variants {
		m := template(t, v.release, "gateway", v.values(site{NS: "gateway", Watch: [2]string{"team-a", "team-b"}}))
		args := append(containerArgs(t, m), "--version")
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil || string(out) != version+"\n" {
			t.Errorf("%s: wsgate %s: %v\n%s", v.name, strings.Join(args, " "), err, out)
		}
	}

	// The image's user is the chart's.
	var user string
	for _, ins := range df.stages[len(df.stages)-1].instructions {
		if kw, rest, _ := strings.Cut(ins, " "); strings.EqualFold(kw, "USER") {
			user = strings.TrimSpace(rest)
		}
	}
	var values struct {
		PodSecurityContext struct {
			RunAsUser  int64 `json:"runAsUser"`
			RunAsGroup int64 `json:"runAsGroup"`
		} `json:"podSecurityContext"`
	}
	if err := yaml.Unmarshal(readRepoFile(t, "charts/wsgate/values.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	if want := strconv.FormatInt(values.PodSecurityContext.RunAsUser, 10) + ":" + strconv.FormatInt(values.PodSecurityContext.RunAsGroup, 10); user != want {
		t.Errorf("the image runs as USER %q, the chart as %s", user, want)
	}
}

// readRouteSample reads config/samples' WsRoute.
func readRouteSample(r *wsgatev1alpha1.WsRoute) error {
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "samples", "wsgate_v1alpha1_wsroute.yaml"))
	if err != nil {
		return err
	}
	return yaml.Unmarshal(b, r)
}
