package browser

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/proxy"
)

// reportingPage is h2Page's scenario for a browser that nothing drives:
// it reports each step to its own origin (/report?<step>) and waits there
// (/continue) for the test to revoke the second pod.
const reportingPage = `<!doctype html>
<html><head><title>wsgate HTTP/2 test</title></head><body>
<script>
const urls = JSON.parse(decodeURIComponent(location.hash.slice(1)));
const report = (s) => fetch("/report?" + encodeURIComponent(s));
const closes = {};
const sockets = [];
(async () => {
  try { await fetch(new URL(urls[0]).origin.replace("wss:", "https:") + "/warm-up", {mode: "no-cors", credentials: "include"}); } catch (e) {}
  let echoed = 0;
  await new Promise((done) => urls.forEach((u, i) => {
    const ws = new WebSocket(u, ["chat"]);
    sockets.push(ws);
    ws.onopen = () => ws.send("hello " + i);
    ws.onmessage = () => { if (++echoed === urls.length) done(); };
    ws.onclose = (e) => { closes[i] = e.code; if (echoed < urls.length) report("closed:" + i + ":" + e.code); };
  }));
  await report("open");
  await fetch("/continue");
  await new Promise((done) => { const t = setInterval(() => { if (closes[2] !== undefined) { clearInterval(t); done(); } }, 20); });
  await report("closes:" + JSON.stringify(closes));
  const open = sockets.filter((ws) => ws.readyState === WebSocket.OPEN);
  let n = 0;
  await new Promise((done) => open.forEach((ws) => { ws.onmessage = () => { if (++n === open.length) done(); }; ws.send("again"); }));
  await report("again:" + n);
  sockets.forEach((ws) => ws.close(1000));
  await report("done");
})();
</script></body></html>`

func firefox(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"firefox-esr", "firefox"} {
		if p, err := exec.LookPath(name); err == nil {
			if _, err := exec.LookPath("certutil"); err == nil {
				return p
			}
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Firefox or certutil on this machine: .ci/run installs Debian's firefox-esr and libnss3-tools")
	}
	t.Skip("no Firefox or certutil on this machine (apt-get install firefox-esr libnss3-tools)")
	return ""
}

// firefoxProfile makes a profile that trusts caPEM, resolves every name
// to 127.0.0.1 (so that nothing it tries to reach on its own leaves the
// machine), and turns off the background services it would start.
func firefoxProfile(t *testing.T, caPEM []byte) string {
	t.Helper()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-N", "-d", "sql:" + dir, "--empty-password"},
		{"-A", "-n", "wsgate browser test CA", "-t", "C,,", "-i", ca, "-d", "sql:" + dir},
	} {
		if out, err := exec.Command("certutil", args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %v: %v: %s", args, err, out)
		}
	}
	prefs := map[string]any{
		"network.dns.forceResolve":                                    "127.0.0.1",
		"network.proxy.type":                                          0,
		"network.trr.mode":                                            5,
		"network.http.http2.websockets":                               true,
		"network.captive-portal-service.enabled":                      false,
		"network.connectivity-service.enabled":                        false,
		"app.update.enabled":                                          false,
		"app.normandy.enabled":                                        false,
		"browser.safebrowsing.malware.enabled":                        false,
		"browser.safebrowsing.phishing.enabled":                       false,
		"browser.safebrowsing.downloads.enabled":                      false,
		"browser.shell.checkDefaultBrowser":                           false,
		"browser.startup.homepage_override.mstone":                    "ignore",
		"browser.aboutwelcome.enabled":                                false,
		"datareporting.policy.dataSubmissionEnabled":                  false,
		"datareporting.healthreport.uploadEnabled":                    false,
		"toolkit.telemetry.enabled":                                   false,
		"extensions.update.enabled":                                   false,
		"extensions.getAddons.cache.enabled":                          false,
		"services.settings.server":                                    "http://127.0.0.1:9/",
		"browser.region.network.url":                                  "",
		"media.gmp-manager.url":                                       "",
		"security.OCSP.enabled":                                       0,
		"security.remote_settings.crlite_filters.enabled":             false,
		"browser.newtabpage.enabled":                                  false,
		"network.http.speculative-parallel-limit":                     0,
		"browser.topsites.contile.enabled":                            false,
		"browser.newtabpage.activity-stream.feeds.section.topstories": false,
	}
	var b strings.Builder
	for k, v := range prefs {
		switch v := v.(type) {
		case string:
			fmt.Fprintf(&b, "user_pref(%q, %q);\n", k, v)
		default:
			fmt.Fprintf(&b, "user_pref(%q, %v);\n", k, v)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "user.js"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestFirefoxWebsocketsOverHTTP2: headless Firefox ESR runs the HTTP/2
// scenario of TestBrowserWebsocketsOverHTTP2 (Firefox fails outright on a
// server that advertises websockets over HTTP/2 and mishandles them).
func TestFirefoxWebsocketsOverHTTP2(t *testing.T) {
	bin := firefox(t)
	if !proxy.ExtendedConnect() {
		t.Fatal("this system has no websockets over HTTP/2 (the gateway's own HTTP/2 runs on Linux)")
	}
	reports := make(chan string, 16)
	proceed := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/", htmlPage(reportingPage))
	mux.HandleFunc("/report", func(w http.ResponseWriter, r *http.Request) {
		reports <- r.URL.RawQuery
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/continue", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-proceed:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusNoContent)
	})
	f, appOrigin := newH2Fixture(t, mux)
	profile := firefoxProfile(t, f.ca.PEM)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-remote", "--profile", profile, appOrigin+"/#"+string(f.urls))
	cmd.Env = append(os.Environ(), "MOZ_DISABLE_AUTO_SAFE_MODE=1", "HOME="+profile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	next := func(what string) string {
		t.Helper()
		select {
		case r := <-reports:
			s := strings.ReplaceAll(r, "%3A", ":")
			s = strings.ReplaceAll(s, "%7B", "{")
			s = strings.ReplaceAll(s, "%7D", "}")
			s = strings.ReplaceAll(s, "%22", "\"")
			s = strings.ReplaceAll(s, "%2C", ",")
			return s
		case <-ctx.Done():
			t.Fatalf("%s: Firefox reported nothing in time; its output:\n%s", what, out.String())
		}
		return ""
	}
	if got := next("three websockets echo"); got != "open" {
		t.Fatalf("the page reported %q, want open", got)
	}
	if a, b := f.pods[0].Accepted(), f.pods[1].Accepted(); a != 2 || b != 1 {
		t.Fatalf("the pods accepted %d and %d websockets, want 2 and 1", a, b)
	}
	f.checkOpen(t)
	f.revokeSecond()
	close(proceed)
	if got := next("the revoked pod's socket closes"); got != `closes:{"2":1008}` {
		t.Fatalf("the page reported %q, want only socket 2 closed, with 1008", got)
	}
	if got := next("the other two sockets echo again"); got != "again:2" {
		t.Fatalf("the page reported %q, want again:2", got)
	}
	if got := next("the page closes its sockets"); got != "done" {
		t.Fatalf("the page reported %q, want done", got)
	}
	f.checkStreams(t)
}
