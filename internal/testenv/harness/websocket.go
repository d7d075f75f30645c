package harness

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// Dial opens a websocket to url and returns the handshake's status (0
// when no answer came) and headers, whether it succeeded or not; the
// connection reads messages of up to 64 MiB.
func Dial(ctx context.Context, url string, opts *websocket.DialOptions) (*websocket.Conn, int, http.Header, error) {
	// The websocket library owns the response body: it is never closed
	// here (see websocket.Dial).
	conn, resp, err := websocket.Dial(ctx, url, opts) //nolint:bodyclose // see above
	status, header := 0, http.Header{}
	if resp != nil {
		status, header = resp.StatusCode, resp.Header
	}
	if err != nil {
		return nil, status, header, err
	}
	conn.SetReadLimit(64 << 20)
	return conn, status, header, nil
}

// PodPath is the gateway path of the pod at ip under a route's path
// prefix, followed by rest.
func PodPath(prefix, ip, rest string) string {
	return strings.TrimSuffix(prefix, "/") + "/" + ip + rest
}

// Closed is how a tunnel ended, as its client saw it.
type Closed struct {
	Code   websocket.StatusCode // -1: no Close frame
	Reason string
	At     time.Time
}

// ClosedBy is how the tunnel ended that a read or write failed with err:
// the Close frame's code and reason, or -1 and the error.
func ClosedBy(err error) Closed {
	at := time.Now()
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return Closed{ce.Code, ce.Reason, at}
	}
	return Closed{-1, err.Error(), at}
}

// AwaitClose reads c until it is closed (by the gateway, or by ctx ending).
func AwaitClose(ctx context.Context, c *websocket.Conn) Closed {
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return ClosedBy(err)
		}
	}
}
