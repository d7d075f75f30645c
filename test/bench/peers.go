package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// env is what every peer is started with.
type env struct {
	dir  string // temp folder of the run
	pods int
	echo *echoProcess
	tls  *tlsFiles
	// ident is the identity rows' key, token and forward-auth service.
	ident *identityEnv
}

// instance is one running peer, started fresh for one row.
type instance struct {
	// dial says where to connect for pod (index) and with which path.
	dial func(pod int, useTLS bool) (addr, path string)
	// pids are the processes whose CPU time and memory are the peer's.
	pids func() []int
	stop func()
	// snapshot, if not nil, writes a heap profile and memory figures of
	// the running instance (wsgate, when asked for with startOpts.heap).
	snapshot func() error
}

// startOpts are how a peer starts for one row: which profiles wsgate
// writes (a CPU profile of its whole life, written when it stops, and a
// heap profile when snapshot is called; empty paths: none), and whether
// the TLS listener issues session tickets, so that clients may resume.
type startOpts struct {
	cpu, heap string
	// tickets: session resumption on, as each peer has it by default
	// (wsgate: TLS 1.3 tickets under keys crypto/tls makes; nginx:
	// ssl_session_tickets on; HAProxy: tickets and its session cache).
	// Off, the listeners make every handshake a full one.
	tickets bool
	// limits are wsgate's per-client limits for the whole gateway
	// (formatLimits; "": none). The other peers have none.
	limits string
	// http2: wsgate's TLS listener offers h2 and takes websockets over
	// HTTP/2 (proxy.Options.HTTP2). The other peers ignore it.
	http2 bool
}

// peer is one way of reaching the pods.
type peer struct {
	name    string
	version string // what `<binary> -v` printed
	// tlsLib names the TLS library its handshakes run on.
	tlsLib string
	skip   string // why it does not run, if it does not
	// start runs a fresh instance; only wsgate heeds the profiles.
	start func(ctx context.Context, e *env, opts startOpts) (*instance, error)
}

func directPeer() *peer {
	return &peer{name: "direct", tlsLib: goTLS(), start: func(_ context.Context, e *env, opts startOpts) (*instance, error) {
		port := strconv.Itoa(e.echo.port)
		tlsAddr := e.echo.tlsAddr
		if opts.tickets {
			tlsAddr = e.echo.ticketsAddr
		}
		return &instance{
			dial: func(pod int, useTLS bool) (string, string) {
				if useTLS {
					return tlsAddr, "/"
				}
				return podIP(pod) + ":" + port, "/"
			},
			pids: func() []int { return []int{e.echo.pid()} },
			stop: func() {},
		}, nil
	}}
}

func wsgatePeer() *peer {
	return &peer{name: "wsgate", version: runtime.Version(), tlsLib: goTLS(), start: startWsgate}
}

// tlsFiles is the run's ECDSA P-256 certificate, in PEM files.
type tlsFiles struct {
	cert, key string
	both      string // certificate then key, for haproxy's crt
}

// makeCert generates a self-signed ECDSA P-256 certificate for benchHost.
func makeCert(dir string) (*tlsFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: benchHost},
		DNSNames:              []string{benchHost},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	t := &tlsFiles{cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem"), both: filepath.Join(dir, "cert+key.pem")}
	for path, data := range map[string][]byte{t.cert: certPEM, t.key: keyPEM, t.both: append(append([]byte(nil), certPEM...), keyPEM...)} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// findBinary looks for name on PATH and in /usr/sbin (not on every PATH).
func findBinary(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := "/usr/sbin/" + name; isExecutable(p) {
		return p
	}
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// versionOf runs bin with flag in env (nil: the benchmark's) and returns
// the first line it printed.
func versionOf(env []string, bin, flag string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(outputOf(env, bin, flag)), "\n")
	return strings.TrimSpace(line)
}

func outputOf(env []string, bin string, args ...string) string {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	out, _ := cmd.CombinedOutput()
	return string(out)
}

// goTLS names the TLS library of Go's peers.
func goTLS() string { return "Go " + runtime.Version() + " crypto/tls" }

// openSSLRunning is the OpenSSL that bin, run with flag in env, says it
// runs on: nginx's -V ("running with ...") or HAProxy's -vv.
func openSSLRunning(env []string, bin, flag string) string {
	for line := range strings.SplitSeq(outputOf(env, bin, flag), "\n") {
		if _, v, ok := strings.Cut(line, "running with "); ok {
			return strings.TrimSuffix(strings.TrimSpace(v), ")")
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Running on OpenSSL version : "); ok {
			return v
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "built with "); ok && !strings.Contains(line, "running with") {
			return v
		}
	}
	return "unknown"
}

// workerCount is how many workers (nginx) or threads (haproxy) the
// proxies get: one per core, as Go's GOMAXPROCS gives wsgate.
func workerCount() int { return runtime.NumCPU() }

// nginx ---------------------------------------------------------------

// nginxConf is the README's recipe, in a complete configuration that
// runs in the foreground from a temp folder and listens on 127.0.0.1 only.
const nginxConf = `# Generated by test/bench for one round of a row.
daemon off;
worker_processes {{workers}};      # = cores, as GOMAXPROCS for wsgate and nbthread for haproxy
worker_rlimit_nofile 19500;  # two descriptors per tunnel; the hard limit here is 20000
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log warn;
events {
    worker_connections 19000;
}
http {
    access_log off;
    client_body_temp_path {{dir}}/client_body;
    proxy_temp_path {{dir}}/proxy;
    fastcgi_temp_path {{dir}}/fastcgi;
    uwsgi_temp_path {{dir}}/uwsgi;
    scgi_temp_path {{dir}}/scgi;
    server {
        listen 127.0.0.1:{{port}};
        listen 127.0.0.1:{{tlsport}} ssl;
        ssl_certificate {{cert}};
        ssl_certificate_key {{key}};
        ssl_protocols TLSv1.2 TLSv1.3;{{resumption}}
        location ~ ^/(\d+\.\d+\.\d+\.\d+)/ {
            proxy_pass http://$1:{{podport}};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }
    }
}
`

// nginxResumption is the configuration's session lines: off, or nginx's
// defaults (ssl_session_tickets on, under a key OpenSSL makes when the
// master reads the configuration, which the workers inherit;
// ssl_session_cache none).
func nginxResumption(tickets bool) string {
	if tickets {
		return "\n        # session resumption: nginx's defaults (ssl_session_tickets on; ssl_session_cache none)"
	}
	return "\n        ssl_session_cache off;     # no session resumption\n        ssl_session_tickets off;"
}

// nginxPQ is the peer that runs Debian's nginx on the OpenSSL libraries
// in -nginx-openssl, which offer the post-quantum hybrid as wsgate does.
const nginxPQ = "nginx-pq"

// nginxPeer is nginx as Debian builds it, on the system's OpenSSL; with
// libDir, nginxPQ: the same binary and configuration on the libssl and
// libcrypto in libDir (LD_LIBRARY_PATH: OpenSSL keeps one ABI across 3.x).
func nginxPeer(bin, libDir string) *peer {
	p := &peer{name: "nginx"}
	var procEnv []string
	if libDir != "" {
		p.name = nginxPQ
		procEnv = append(os.Environ(), "LD_LIBRARY_PATH="+libDir)
	}
	if bin == "" {
		p.skip = "nginx is not installed"
		return p
	}
	p.version = versionOf(procEnv, bin, "-v")
	p.tlsLib = openSSLRunning(procEnv, bin, "-V")
	if libDir != "" {
		p.version += ", on " + p.tlsLib
	}
	p.start = func(ctx context.Context, e *env, opts startOpts) (*instance, error) {
		dir, err := os.MkdirTemp(e.dir, "nginx-")
		if err != nil {
			return nil, err
		}
		// Workers run as an unprivileged user: they must reach the folder.
		_ = os.Chmod(dir, 0o755)
		port, tlsPort, err := peerPorts()
		if err != nil {
			return nil, err
		}
		conf := expand(nginxConf, map[string]string{
			"workers": strconv.Itoa(workerCount()), "dir": dir, "port": strconv.Itoa(port), "tlsport": strconv.Itoa(tlsPort),
			"cert": e.tls.cert, "key": e.tls.key, "podport": strconv.Itoa(e.echo.port),
			"resumption": nginxResumption(opts.tickets),
		})
		confPath := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			return nil, err
		}
		x, err := startExternal(filepath.Join(dir, "output.log"), procEnv, bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confPath)
		if err != nil {
			return nil, err
		}
		if err := waitPeer(ctx, x, port, tlsPort); err != nil {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return nil, fmt.Errorf("nginx: %w %s", err, strings.TrimSpace(string(b)))
		}
		var workers []int
		for range 100 {
			if workers = childPIDs(x.pid()); len(workers) >= workerCount() {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(workers) < workerCount() {
			x.stop()
			return nil, fmt.Errorf("nginx started %d workers, not %d", len(workers), workerCount())
		}
		return peerInstance(x, port, tlsPort, append([]int{x.pid()}, workers...)), nil
	}
	return p
}

// nginxPQPeer is nginxPQ, on the OpenSSL libraries in libDir; it is
// skipped without them or when they are older than 3.5 (no hybrid).
func nginxPQPeer(libDir string) *peer {
	if libDir == "" {
		return &peer{name: nginxPQ, skip: "no OpenSSL libraries given (-nginx-openssl; make bench-browser builds them with hack/openssl.sh)"}
	}
	p := nginxPeer(findBinary("nginx"), libDir)
	var major, minor int
	if _, err := fmt.Sscanf(p.tlsLib, "OpenSSL %d.%d", &major, &minor); p.skip == "" && (err != nil || major < 3 || major == 3 && minor < 5) {
		p.skip = fmt.Sprintf("nginx does not run on OpenSSL 3.5 or later with the libraries in %s (it says: %s)", libDir, p.tlsLib)
	}
	return p
}

// haproxy -------------------------------------------------------------

// haproxyConf routes by path with a map from the first path segment (the
// pod address) to a backend per pod: an allowlist, like wsgate's table,
// rather than nginx's open regex. Unknown addresses get a 503.
const haproxyConf = `# Generated by test/bench for one round of a row.
global
    maxconn 9000              # under 10000: two descriptors per connection, hard limit 20000
    nbthread {{workers}}           # = cores, as GOMAXPROCS for wsgate and worker_processes for nginx{{resumption}}

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h         # upgraded (websocket) connections

frontend ws
    bind 127.0.0.1:{{port}}
    bind 127.0.0.1:{{tlsport}} ssl crt {{certkey}} alpn http/1.1
    maxconn 9000
    use_backend %[path,field(2,/),map({{map}})]
    default_backend unknown

backend unknown
{{backends}}`

// haproxyResumption is the configuration's session lines: off, or
// HAProxy's defaults (tickets on, session cache of 20000 entries).
func haproxyResumption(tickets bool) string {
	if tickets {
		return "\n    # session resumption: HAProxy's defaults (tickets on, tune.ssl.cachesize 20000)"
	}
	return "\n    tune.ssl.cachesize 0      # no session resumption\n    ssl-default-bind-options no-tls-tickets"
}

func haproxyPeer(bin string) *peer {
	p := &peer{name: "haproxy"}
	if bin == "" {
		p.skip = "haproxy is not installed"
		return p
	}
	p.version = versionOf(nil, bin, "-v")
	p.tlsLib = openSSLRunning(nil, bin, "-vv")
	p.start = func(ctx context.Context, e *env, opts startOpts) (*instance, error) {
		dir, err := os.MkdirTemp(e.dir, "haproxy-")
		if err != nil {
			return nil, err
		}
		port, tlsPort, err := peerPorts()
		if err != nil {
			return nil, err
		}
		var mapLines, backends strings.Builder
		for i := range e.pods {
			name := "pod" + strconv.Itoa(i)
			fmt.Fprintf(&mapLines, "%s %s\n", podIP(i), name)
			fmt.Fprintf(&backends, "\nbackend %s\n    server %s %s:%d\n", name, name, podIP(i), e.echo.port)
		}
		mapPath := filepath.Join(dir, "pods.map")
		if err := os.WriteFile(mapPath, []byte(mapLines.String()), 0o644); err != nil {
			return nil, err
		}
		conf := expand(haproxyConf, map[string]string{
			"workers": strconv.Itoa(workerCount()), "port": strconv.Itoa(port), "tlsport": strconv.Itoa(tlsPort),
			"certkey": e.tls.both, "map": mapPath, "backends": backends.String(),
			"resumption": haproxyResumption(opts.tickets),
		})
		confPath := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			return nil, err
		}
		x, err := startExternal(filepath.Join(dir, "output.log"), nil, bin, "-db", "-f", confPath)
		if err != nil {
			return nil, err
		}
		if err := waitPeer(ctx, x, port, tlsPort); err != nil {
			return nil, fmt.Errorf("haproxy: %w", err)
		}
		return peerInstance(x, port, tlsPort, []int{x.pid()}), nil
	}
	return p
}

// peerPorts picks the ports of an external peer's plain and TLS
// listeners.
func peerPorts() (port, tlsPort int, err error) {
	if port, err = freePort(); err != nil {
		return 0, 0, err
	}
	tlsPort, err = freePort()
	return port, tlsPort, err
}

// waitPeer waits until an external peer listens on both ports of
// 127.0.0.1, and stops it if it does not.
func waitPeer(ctx context.Context, x *external, port, tlsPort int) error {
	alive := func() bool { return !x.exited() }
	for _, p := range []int{port, tlsPort} {
		if err := waitListening(ctx, "127.0.0.1:"+strconv.Itoa(p), alive); err != nil {
			x.stop()
			return fmt.Errorf("%w: %s", err, x.logTail())
		}
	}
	return nil
}

// peerInstance is an external peer that serves /<pod ip>/ on both ports
// of 127.0.0.1 with processes pids.
func peerInstance(x *external, port, tlsPort int, pids []int) *instance {
	plain, secure := "127.0.0.1:"+strconv.Itoa(port), "127.0.0.1:"+strconv.Itoa(tlsPort)
	return &instance{
		dial: func(pod int, useTLS bool) (string, string) {
			if useTLS {
				return secure, "/" + podIP(pod) + "/"
			}
			return plain, "/" + podIP(pod) + "/"
		},
		pids: func() []int { return pids },
		stop: x.stop,
	}
}

// expand replaces each {{key}} in s.
func expand(s string, vars map[string]string) string {
	for k, v := range vars {
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	return s
}

// install ---------------------------------------------------------------

// installPeers installs nginx and haproxy from Debian when either is
// missing (root only), and returns a note on what happened.
func installPeers(ctx context.Context) string {
	if findBinary("nginx") != "" && findBinary("haproxy") != "" {
		return ""
	}
	if os.Geteuid() != 0 {
		return "nginx or haproxy missing and not root: not installed"
	}
	if findBinary("apt-get") == "" {
		return "nginx or haproxy missing and no apt-get: not installed"
	}
	// Installing must not start the packaged services (listening on
	// every interface): a policy-rc.d that forbids it, if none is there.
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); os.IsNotExist(err) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\n# test/bench: no service starts while it installs\nexit 101\n"), 0o755); err == nil {
			defer os.Remove(policy)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	run := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			return fmt.Errorf("apt-get %s: %w: %s", strings.Join(args, " "), err, lines[len(lines)-1])
		}
		return nil
	}
	fmt.Println("installing nginx and haproxy from Debian (apt-get)...")
	var notes []string
	if err := run("update"); err != nil {
		notes = append(notes, err.Error())
	}
	if findBinary("nginx") == "" {
		if err := run("install", "-y", "--no-install-recommends", "nginx-light"); err != nil {
			if err2 := run("install", "-y", "--no-install-recommends", "nginx"); err2 != nil {
				notes = append(notes, err.Error(), err2.Error())
			}
		}
	}
	if findBinary("haproxy") == "" {
		if err := run("install", "-y", "--no-install-recommends", "haproxy"); err != nil {
			notes = append(notes, err.Error())
		}
	}
	return strings.Join(notes, "; ")
}
