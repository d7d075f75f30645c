package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// redteamIP returns the n-th address of the red-team tests' loopback
// range (127.0.5.150-199), apart from the other tenant tests' addresses.
func redteamIP(n int) string {
	return fmt.Sprintf("127.0.5.%d", 150+n)
}

// TestTenantHeaderSpoofingByOtherSeparators: forwarding headers spelled
// with a dot instead of a dash or underscore never reach the pod. PHP
// registers $_SERVER variables with "." (and " ") turned into "_", so
// "X.Forwarded.For" reaches a PHP application (FrankenPHP, php -S, ...)
// as HTTP_X_FORWARDED_FOR, and it sorts after the gateway's own
// X-Forwarded-For, so it is registered last and wins. nginx
// (ignore_invalid_headers on) drops every field whose name has anything
// but letters, digits and "-": the gateway, the edge, must not pass what
// it would drop.
func TestTenantHeaderSpoofingByOtherSeparators(t *testing.T) {
	ns := env.Namespace(t)
	g := startTenantGateway(t, gatewayConfig{})
	const hostname = "dots.example.com"
	grant(t, ns, []string{hostname})
	ip := redteamIP(1)
	port, _ := echoPod(t, ns, "echo", ip, "echo")
	createTenantRoute(t, ns, tenantRoute{name: "dots", hostnames: []string{hostname}, app: "echo", port: port})
	waitRouteServes(t, ns, "dots", "echo")

	spoofed := http.Header{
		"X.Forwarded.For":   {"6.6.6.6"},
		"X.Real.Ip":         {"6.6.6.6"},
		"X.Forwarded.Host":  {"victim.example.com"},
		"X.Forwarded.Proto": {"https"},
		"Client.Ip":         {"6.6.6.6"},
	}
	c := g.openAs(t, dialSpec{host: hostname, path: harness.PodPath("/", ip, "/"), header: spoofed})
	seen := podSees(t, c.Conn)
	for k, vs := range seen.Header {
		if rest := strings.TrimLeft(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"); rest != "" {
			t.Errorf("the pod got %s: %q; a name with %q maps to a CGI variable next to the gateway's own", k, vs, rest[0])
		}
	}
	if got := seen.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
		t.Errorf("the pod got X-Forwarded-For %q, want only the gateway's", got)
	}
}
