package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// proxied opens websockets through the gateway as a load balancer in
// front of it would: a PROXY v1 header naming the client, then the
// client's bytes.
func (g *authGateway) proxied(ctx context.Context, client, path string) (*websocket.Conn, int, http.Header, error) {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if _, err := fmt.Fprintf(c, "PROXY TCP4 %s 10.0.0.1 40000 80\r\n", client); err != nil {
				_ = c.Close()
				return nil, err
			}
			return c, nil
		},
	}
	return harness.Dial(ctx, "ws://"+g.addr+path, &websocket.DialOptions{Host: host, HTTPClient: &http.Client{Transport: tr}})
}

// TestEdgeBehindALoadBalancer runs the wsgate binary as it runs behind a
// cloud network load balancer that sends PROXY headers
// (--trusted-proxies, --proxy-protocol), with a refusal budget, and a
// route with spec.limits applied to the API server: the pod sees each
// client's own address, the route's cap counts per client, a scanner is
// blocked, and a connection without the header from the balancer's
// address is refused.
func TestEdgeBehindALoadBalancer(t *testing.T) {
	ns := env.Namespace(t)
	ip := authIP(60)
	port, pod := ownedPod(t, ns, "room", ip, 0, "room", "")
	one := int32(1)
	createRouteObject(t, &wsgatev1alpha1.WsRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "rooms"},
		Spec: wsgatev1alpha1.WsRouteSpec{
			Hostnames:  []wsgatev1alpha1.Hostname{host},
			PathPrefix: "/" + ns,
			Selector:   metav1.LabelSelector{MatchLabels: map[string]string{"app": "room"}},
			Port:       intstr.FromInt32(port),
			Limits:     &wsgatev1alpha1.ClientLimits{MaxTunnelsPerClient: &one},
		},
	})
	g := startAuthGateway(t, "--trusted-proxies=127.0.0.0/8", "--proxy-protocol",
		"--client-refusal-budget=5", "--client-refusal-block=1m")
	waitRouteServes(t, ns, "rooms", "room")
	toRoom := harness.PodPath("/"+ns, ip, "/")

	open := func(client string) (*websocket.Conn, int, http.Header) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		c, status, header, err := g.proxied(ctx, client, toRoom)
		if err != nil {
			return nil, status, header
		}
		t.Cleanup(func() { _ = c.CloseNow() })
		return c, http.StatusSwitchingProtocols, header
	}
	// A client of its own waits for this replica's table: its 404s
	// meanwhile count against its own refusal budget only.
	harness.Eventually(t, waitTimeout, "the room opens through the load balancer", func() error {
		c, status, _ := open("203.0.113.250")
		if status != http.StatusSwitchingProtocols {
			return fmt.Errorf("status %d", status)
		}
		return c.Close(websocket.StatusNormalClosure, "")
	})
	first, status, _ := open("203.0.113.5")
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("the first client: %d", status)
	}
	if seen := seenBy(t, first); seen.Header.Get("X-Forwarded-For") != "203.0.113.5" {
		t.Errorf("the pod saw X-Forwarded-For %q, want the PROXY header's client 203.0.113.5", seen.Header.Values("X-Forwarded-For"))
	}

	_, status, header := open("203.0.113.5")
	if secs, err := strconv.Atoi(header.Get("Retry-After")); status != http.StatusTooManyRequests || err != nil || secs < 1 {
		t.Errorf("a second tunnel of the same client on a route with maxTunnelsPerClient 1: %d, Retry-After %q; want 429 with one", status, header.Get("Retry-After"))
	}
	if _, status, _ := open("203.0.113.6"); status != http.StatusSwitchingProtocols {
		t.Errorf("another client behind the same load balancer: %d, want 101", status)
	}
	mustEcho(t, first, "the first tunnel after the others")

	// A scanner behind the balancer: five 404s, then blocked; the others
	// are not.
	for i := range 6 {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		_, status, _, _ := g.proxied(ctx, "198.51.100.9", harness.PodPath("/"+ns, authIP(200+i), "/"))
		cancel()
		if status != http.StatusNotFound {
			t.Fatalf("scan step %d: %d, want 404", i, status)
		}
	}
	if _, status, _ := open("198.51.100.9"); status != http.StatusTooManyRequests {
		t.Errorf("the scanner past its budget, to a pod that exists: %d, want 429", status)
	}
	if _, status, _ := open("203.0.113.7"); status != http.StatusSwitchingProtocols {
		t.Errorf("a third client while the scanner is blocked: %d, want 101", status)
	}

	// Straight from the balancer's address, without a header: refused
	// without an answer.
	c, err := net.DialTimeout("tcp", g.addr, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := io.WriteString(c, "GET "+toRoom+" HTTP/1.1\r\nHost: "+host+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 64)); n != 0 || err == nil {
		t.Errorf("a connection from a trusted proxy without a PROXY header was answered (%d bytes, %v)", n, err)
	}

	for _, m := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"wsgate_proxy_protocol_refused_total", map[string]string{"reason": "missing"}, 1},
		{"wsgate_client_limited_total", map[string]string{"reason": "route_open_tunnels"}, 1},
		{"wsgate_client_limited_total", map[string]string{"reason": "refusals"}, 1},
		{"wsgate_client_blocks_total", nil, 1},
	} {
		if got := g.metric(t, m.name, m.labels); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
	if n := pod.Accepted(); n != 4 {
		t.Errorf("the pod accepted %d websockets, want 4", n)
	}
}
