package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// connect is the `wsgate connect` command: a small websocket client that
// sends each line of standard input as a text message and prints every
// message it receives, so a gateway can be tried with nothing else
// installed.
func connect(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wsgate connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		caFile      = fs.String("ca", "", "PEM file of the CA to trust for wss:// (default: the system's roots).")
		host        = fs.String("host", "", "Host header and TLS server name to send, when the URL names the gateway by address.")
		origin      = fs.String("origin", "", "Origin header to send, as a browser would.")
		subprotocol = fs.String("subprotocol", "", "Comma-separated subprotocols to offer.")
		timeout     = fs.Duration("timeout", 10*time.Second, "Bound on the handshake.")
		linger      = fs.Duration("linger", time.Second, "After the end of input, how long to wait for more replies (after the last one) before closing.")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: wsgate connect [flags] ws[s]://host[:port]/<prefix>/<podIP>/...\n\n"+
			"Opens a websocket, sends each line of standard input as a text message and prints the replies.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("one URL is required")
	}
	u, err := url.Parse(fs.Arg(0))
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") {
		return fmt.Errorf("%q is not a ws:// or wss:// URL", fs.Arg(0))
	}

	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: *host}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("read --ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--ca %s holds no PEM certificate", *caFile)
		}
		tlsConfig.RootCAs = pool
	}
	opts := &websocket.DialOptions{
		Host:       *host,
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, DialContext: (&net.Dialer{}).DialContext}},
		HTTPHeader: http.Header{},
	}
	if *origin != "" {
		opts.HTTPHeader.Set("Origin", *origin)
	}
	if *subprotocol != "" {
		opts.Subprotocols = strings.Split(*subprotocol, ",")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	hctx, cancel := context.WithTimeout(ctx, *timeout)
	c, resp, err := websocket.Dial(hctx, u.String(), opts)
	cancel()
	if resp != nil && resp.Body != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			return fmt.Errorf("gateway answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		return fmt.Errorf("connect: %w", err)
	}
	defer func() { _ = c.CloseNow() }()
	c.SetReadLimit(16 << 20)
	fmt.Fprintf(stderr, "connected to %s", u)
	if p := c.Subprotocol(); p != "" {
		fmt.Fprintf(stderr, " (subprotocol %s)", p)
	}
	fmt.Fprintln(stderr, "; type a line to send it, Ctrl-D to close")

	readErr := make(chan error, 1)
	received := make(chan struct{}, 1)
	go func() {
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				readErr <- err
				return
			}
			if typ == websocket.MessageBinary {
				fmt.Fprintf(stdout, "< [binary, %d bytes]\n", len(msg))
			} else {
				fmt.Fprintf(stdout, "< %s\n", msg)
			}
			select {
			case received <- struct{}{}:
			default:
			}
		}
	}()
	lines := make(chan string)
	go func() {
		s := bufio.NewScanner(stdin)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	var lingering <-chan time.Time // after the end of input
	closing := false
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				// End of input: wait for replies still on their way.
				lines, lingering = nil, time.After(*linger)
				continue
			}
			if err := c.Write(ctx, websocket.MessageText, []byte(line)); err != nil {
				return fmt.Errorf("send: %w", err)
			}
		case <-received:
			if lingering != nil {
				lingering = time.After(*linger)
			}
		case <-lingering:
			lingering, closing = nil, true
			go func() { _ = c.Close(websocket.StatusNormalClosure, "") }()
		case err := <-readErr:
			if closing {
				// We closed: the read loop ends with the close handshake.
				return nil
			}
			if s := websocket.CloseStatus(err); s != -1 {
				var ce websocket.CloseError
				errors.As(err, &ce)
				if s == websocket.StatusNormalClosure {
					return nil
				}
				fmt.Fprintf(stderr, "closed by the other side: %d %s\n", s, ce.Reason)
				return fmt.Errorf("closed with status %d", s)
			}
			return fmt.Errorf("read: %w", err)
		case <-ctx.Done():
			_ = c.Close(websocket.StatusNormalClosure, "")
			return nil
		}
	}
}
