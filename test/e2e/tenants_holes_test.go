package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	wsgatev1alpha1 "github.com/wsgate/wsgate/api/v1alpha1"
	"github.com/wsgate/wsgate/internal/testenv/harness"
)

// Attacks on who owns a name over time: a name stays with the namespace
// whose route serves it (status.hostnames), whatever the age of the
// routes that claim it later. Each test is the attack, and asserts what
// the victim keeps.

// TestTenantOlderRouteCannotTakeAServedNameByEditingIt: an attacker who
// keeps an old route claiming some name of its own, and is granted the
// victim's name (say by a wildcard), edits the old route to add the
// victim's name; or a new grant makes an old refused route acceptable.
// The old route is older than the victim's, but the victim's route
// serves the name: it keeps the name, its traffic, its cookies and its
// certificate, and its open tunnels stay open.
func TestTenantOlderRouteCannotTakeAServedNameByEditingIt(t *testing.T) {
	victim, attacker := env.Namespace(t), env.Namespace(t)
	g := startTenantGateway(t, gatewayConfig{})
	grant(t, victim, []string{"victim.example.com", "victim.example.org"})
	ag := grant(t, attacker, []string{"*.example.com"})
	victimIP, attackerIP := tenantIP(11), tenantIP(12)
	vport, vsrv := echoPod(t, victim, "victim", victimIP, "victim")
	aport, asrv := echoPod(t, attacker, "attacker", attackerIP, "attacker")

	// The attacker's routes come first: one on a name of its own, one on
	// a name it is not granted (refused for now).
	createTenantRoute(t, attacker, tenantRoute{name: "parked", hostnames: []string{"parked.example.com"}, app: "attacker", port: aport})
	old := createTenantRoute(t, attacker, tenantRoute{name: "old", hostnames: []string{"victim.example.org"}, app: "attacker", port: aport})
	waitAccepted(t, attacker, "parked", "True/"+wsgatev1alpha1.ReasonAccepted)
	waitAccepted(t, attacker, "old", "False/"+wsgatev1alpha1.ReasonHostnameNotAllowed)
	afterCreationSecond(old)

	// The victim's routes, served, with open tunnels.
	for _, host := range []string{"victim.example.com", "victim.example.org"} {
		name := "rooms-" + host[len(host)-3:]
		createTenantRoute(t, victim, tenantRoute{name: name, hostnames: []string{host}, prefix: "/rooms", app: "victim", port: vport})
		waitRouteServes(t, victim, name, "victim")
	}

	// keeps checks that the victim still has host: its route accepted,
	// its tunnel open, new handshakes with its cookies on its pod.
	keeps := func(t *testing.T, host, route, attackerRoute string, tunnel *tenantConn, ch *chatter) {
		t.Helper()
		r := waitObserved(t, attacker, attackerRoute)
		if got := harness.Condition(r, wsgatev1alpha1.ConditionAccepted); got != "False/"+wsgatev1alpha1.ReasonHostnameConflict {
			t.Errorf("the attacker's route %s: %s; want HostnameConflict naming the victim", attackerRoute, accepted(r))
		}
		if err := ch.finish(); err != nil {
			t.Errorf("the victim's tunnel on %s: %v", host, err)
		}
		v := waitObserved(t, victim, route)
		if got := harness.Condition(v, wsgatev1alpha1.ConditionAccepted); got != "True/"+wsgatev1alpha1.ReasonAccepted {
			t.Errorf("the victim's route on %s: %s", host, accepted(v))
		}
		before, attacked := vsrv.Accepted(), asrv.Accepted()
		status := g.statusAs(t, dialSpec{host: host, path: harness.PodPath("/rooms", victimIP, "/"), header: victimSecrets})
		if status != http.StatusSwitchingProtocols || vsrv.Accepted() != before+1 {
			t.Errorf("a new handshake on %s with the victim's cookies: %d, the victim's pod accepted %d", host, status, vsrv.Accepted()-before)
		}
		status = g.statusAs(t, dialSpec{host: host, path: harness.PodPath("/", attackerIP, "/"), header: victimSecrets})
		if status != http.StatusNotFound || asrv.Accepted() != attacked {
			t.Errorf("the attacker's pod on %s with the victim's cookies: %d, the attacker's pod accepted %d", host, status, asrv.Accepted()-attacked)
		}
	}
	// open opens a busy tunnel of the victim's on host.
	open := func(t *testing.T, host string) (*tenantConn, *chatter) {
		t.Helper()
		c := g.openAs(t, dialSpec{host: host, path: harness.PodPath("/rooms", victimIP, "/"), header: victimSecrets})
		mustEcho(t, c.Conn, "the victim on "+host)
		return c, startChatter(c.Conn)
	}

	t.Run("the attacker adds the victim's name to its older route", func(t *testing.T) {
		tunnel, ch := open(t, "victim.example.com")
		setHostnames(t, attacker, "parked", "parked.example.com", "victim.example.com")
		time.Sleep(300 * time.Millisecond)
		keeps(t, "victim.example.com", "rooms-com", "parked", tunnel, ch)
	})
	t.Run("a new grant makes the attacker's older refused route acceptable", func(t *testing.T) {
		tunnel, ch := open(t, "victim.example.org")
		updateGrant(t, ag, func(s *wsgatev1alpha1.WsGrantSpec) {
			// Granted for its own names under example.org.
			s.Hostnames = append(s.Hostnames, "*.example.org")
		})
		time.Sleep(300 * time.Millisecond)
		keeps(t, "victim.example.org", "rooms-org", "old", tunnel, ch)
	})
}

// TestTenantSameSecondClaimCannotTakeAServedName: creationTimestamp has
// one-second resolution, and routes of the same second are ordered by
// namespace name. A route created in the same second as the victim's,
// after the victim's is accepted and serving, from a namespace that sorts
// first, does not take the victim's name: the victim's route serves it.
func TestTenantSameSecondClaimCannotTakeAServedName(t *testing.T) {
	n1, n2 := env.Namespace(t), env.Namespace(t)
	// Same-second routes are ordered by namespace name: the attacker's
	// sorts first.
	victim, attacker := max(n1, n2), min(n1, n2)
	g := startTenantGateway(t, gatewayConfig{})
	grant(t, victim, []string{"victim.example.com"})
	grant(t, attacker, []string{"*.example.com"})
	victimIP, attackerIP := tenantIP(9), tenantIP(10)
	vport, vsrv := echoPod(t, victim, "victim", victimIP, "victim")
	aport, asrv := echoPod(t, attacker, "attacker", attackerIP, "attacker")
	toVictim := dialSpec{host: "victim.example.com", path: harness.PodPath("/rooms", victimIP, "/"), header: victimSecrets}

	var (
		rooms, shadow string
		tunnel        *tenantConn
		served        time.Duration
	)
	for attempt := 1; rooms == ""; attempt++ {
		if attempt > 5 {
			t.Fatal("could not create the victim's route, have it serve and create the attacker's in one second")
		}
		// At the start of a second.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 10*time.Millisecond)))
		name := fmt.Sprintf("rooms-%d", attempt)
		r := createTenantRoute(t, victim, tenantRoute{name: name, hostnames: []string{"victim.example.com"}, prefix: "/rooms", app: "victim", port: vport})
		g.waitStatusAs(t, toVictim, http.StatusSwitchingProtocols)
		c := g.openAs(t, toVictim)
		mustEcho(t, c.Conn, "served")
		served = time.Since(r.CreationTimestamp.Time)
		s := createTenantRoute(t, attacker, tenantRoute{name: fmt.Sprintf("shadow-%d", attempt), hostnames: []string{"victim.example.com"}, app: "attacker", port: aport})
		if s.CreationTimestamp.Equal(&r.CreationTimestamp) {
			rooms, shadow, tunnel = name, s.Name, c
			break
		}
		harness.DeleteIgnoringNotFound(env.Client, waitTimeout, s)
		harness.DeleteIgnoringNotFound(env.Client, waitTimeout, r)
		_ = c.CloseNow()
	}
	t.Logf("the victim's route served %v after its creation second began; the attacker's route was created in the same second", served.Round(time.Millisecond))
	ch := startChatter(tunnel.Conn)
	time.Sleep(300 * time.Millisecond)

	a := waitObserved(t, attacker, shadow)
	if got := harness.Condition(a, wsgatev1alpha1.ConditionAccepted); got != "False/"+wsgatev1alpha1.ReasonHostnameConflict {
		t.Errorf("the attacker's route created after the victim's was serving: %s", accepted(a))
	}
	v := waitObserved(t, victim, rooms)
	if got := harness.Condition(v, wsgatev1alpha1.ConditionAccepted); got != "True/"+wsgatev1alpha1.ReasonAccepted {
		t.Errorf("the victim's route: %s", accepted(v))
	}
	if err := ch.finish(); err != nil {
		t.Errorf("the victim's tunnel: %v", err)
	}
	before, attacked := vsrv.Accepted(), asrv.Accepted()
	if got := g.statusAs(t, toVictim); got != http.StatusSwitchingProtocols || vsrv.Accepted() != before+1 {
		t.Errorf("a new handshake to the victim's pod: %d", got)
	}
	if got := g.statusAs(t, dialSpec{host: "victim.example.com", path: harness.PodPath("/", attackerIP, "/"), header: victimSecrets}); got != http.StatusNotFound || asrv.Accepted() != attacked {
		t.Errorf("the attacker's pod on the victim's host, with the victim's cookies: %d", got)
	}
}
