package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
)

// maxTicketKeys bounds the session ticket keys a file may hold.
const maxTicketKeys = 8

// readTicketKeys reads TLS session ticket keys from a file: one key a
// line, 32 random bytes in base64 (head -c 32 /dev/urandom | base64),
// the first line the key that seals new tickets, the others still
// accepted (keep the previous key there for as long as tickets live, a
// week at most). Blank lines and lines starting with # are skipped.
func readTicketKeys(path string) ([][32]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys [][32]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil || len(b) != 32 {
			return nil, fmt.Errorf("%s:%d: not 32 bytes in base64", path, n)
		}
		keys = append(keys, [32]byte(b))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	switch {
	case len(keys) == 0:
		return nil, fmt.Errorf("%s holds no session ticket key", path)
	case len(keys) > maxTicketKeys:
		return nil, fmt.Errorf("%s holds %d session ticket keys, more than %d", path, len(keys), maxTicketKeys)
	}
	return keys, nil
}

// ticketKeys keeps the session ticket keys of a TLS configuration those
// of a file, which every replica mounts from one Secret, so a client
// resumes with whichever replica it reaches.
type ticketKeys struct {
	path string
	cfg  *tls.Config
	log  logr.Logger
	last [][32]byte
}

// load reads the file and, when its keys changed, gives them to cfg.
func (k *ticketKeys) load() error {
	keys, err := readTicketKeys(k.path)
	if err != nil {
		return err
	}
	if !slices.Equal(keys, k.last) {
		k.cfg.SetSessionTicketKeys(keys)
		k.last = keys
		k.log.Info("TLS session ticket keys loaded", "file", k.path, "keys", len(keys))
	}
	return nil
}

// Start reloads the file every minute until ctx ends (a Secret's mounted
// file changes within about a minute of the Secret); a file that breaks
// keeps the keys it held last.
func (k *ticketKeys) Start(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := k.load(); err != nil {
				k.log.Error(err, "TLS session ticket keys not reloaded; the last good ones stay in use", "file", k.path)
			}
		}
	}
}

// NeedLeaderElection is false: every replica serves TLS.
func (k *ticketKeys) NeedLeaderElection() bool { return false }

// errNoTLSListener is the error of TLS flags given without a TLS listener.
var errNoTLSListener = errors.New("needs --tls-listen-address")
