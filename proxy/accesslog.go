package proxy

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/wsgate/wsgate/routing"
)

// sampler lets at most rate events through each second and counts the
// ones it holds back, so that a flood of refused handshakes costs a
// bounded number of log lines.
type sampler struct {
	mu         sync.Mutex
	rate       int
	window     time.Time
	inWindow   int
	suppressed int
}

func newSampler(rate int) *sampler { return &sampler{rate: rate} }

// allow reports whether this event may be logged, and how many were held
// back since the last one that was.
func (s *sampler) allow(now time.Time) (ok bool, suppressed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.window) >= time.Second {
		s.window, s.inWindow = now, 0
	}
	if s.inWindow >= s.rate {
		s.suppressed++
		return false, 0
	}
	s.inWindow++
	suppressed, s.suppressed = s.suppressed, 0
	return true, suppressed
}

// logRefusal writes the access log line of a refused handshake, sampled.
func (s *Server) logRefusal(r *http.Request, route *routing.Route, status int, reason string) {
	if s.opts.AccessLog.GetSink() == nil {
		return
	}
	ok, suppressed := s.refusals.allow(time.Now())
	if !ok {
		return
	}
	ns, name := routeLabels(route)
	s.opts.AccessLog.Info("handshake refused",
		"namespace", ns, "route", name, "client", r.RemoteAddr, "host", r.Host, "method", r.Method,
		"path", logPath(r.RequestURI), "status", status, "reason", reason, "protocol", protocolName(r.Proto == "HTTP/2.0"),
		"suppressedSinceLast", suppressed)
}

// logPath is the path of a request-target for a log line: without the
// query, which may carry a token, and bounded.
func logPath(uri string) string {
	path, _, _ := strings.Cut(uri, "?")
	return truncatePath(path)
}

// truncatePath bounds what a client can put into a log line.
func truncatePath(p string) string {
	if len(p) > 256 {
		return p[:256] + "..."
	}
	return p
}
