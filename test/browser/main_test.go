package browser

import (
	"os"
	"testing"

	"github.com/wsgate/wsgate/internal/xconnect"
)

// TestMain runs the tests with websockets over HTTP/2 on in Go's HTTP/2
// server (GODEBUG=http2xconnect=1 at start).
func TestMain(m *testing.M) {
	xconnect.Rerun()
	os.Exit(m.Run())
}
