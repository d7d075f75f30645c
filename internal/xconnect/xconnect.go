// Package xconnect runs a test binary with websockets over HTTP/2 on in
// Go's HTTP/2 server: net/http reads GODEBUG=http2xconnect=1 from the
// environment once, at init, so a test process that lacks it runs itself
// again with it.
package xconnect

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// Setting is what GODEBUG must hold.
const Setting = "http2xconnect=1"

// On reports whether this process started with Setting in GODEBUG.
func On() bool { return strings.Contains(os.Getenv("GODEBUG"), Setting) }

// Rerun returns when the process has Setting; otherwise it replaces the
// process with itself, the same arguments, and Setting added to GODEBUG
// (call it first in TestMain).
func Rerun() {
	if On() {
		return
	}
	exe, err := os.Executable()
	if err == nil {
		err = syscall.Exec(exe, os.Args, Env(os.Environ()))
	}
	fmt.Fprintf(os.Stderr, "cannot run again with %s in GODEBUG: %v\n", Setting, err)
	os.Exit(2)
}

// Env is environ with Setting added to its GODEBUG (made if absent), for
// a process to start with websockets over HTTP/2 on.
func Env(environ []string) []string {
	godebug := Setting
	var env []string
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			if v != "" {
				godebug = v + "," + godebug
			}
			continue
		}
		env = append(env, kv)
	}
	return append(env, "GODEBUG="+godebug)
}
