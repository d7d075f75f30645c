package proxy

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
)

// TLSOptions tune the TLS listener's configuration.
type TLSOptions struct {
	// Fallback, if not nil, serves names that the table has no
	// certificate for (not even a default).
	Fallback *tls.Certificate
	// Groups are the key-exchange groups offered, in order of preference;
	// nil keeps Go's default, which puts the post-quantum hybrid
	// X25519MLKEM768 first, as current browsers do (see ParseGroups).
	Groups []tls.CurveID
}

// TLSConfig returns a server TLS configuration that picks the certificate
// by SNI from the current routing table at each handshake, so a renewed
// Secret serves new handshakes at once while open tunnels keep theirs.
// fallback, if not nil, serves names that the table has no certificate
// for (not even a default).
func (s *Server) TLSConfig(fallback *tls.Certificate) *tls.Config {
	return s.TLSConfigWith(TLSOptions{Fallback: fallback})
}

// TLSConfigWith is TLSConfig with opts. Session resumption is on: TLS
// 1.3 tickets under keys that crypto/tls makes and rotates itself (a new
// key every day, accepted for a week), in each process; to share them
// between replicas, call SetSessionTicketKeys on the result.
func (s *Server) TLSConfigWith(opts TLSOptions) *tls.Config {
	fallback := opts.Fallback
	return &tls.Config{
		MinVersion:       tls.VersionTLS12,
		NextProtos:       s.alpn(),
		CurvePreferences: slices.Clone(opts.Groups),
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := s.tables.Load().Certificate(hello.ServerName); c != nil {
				return c, nil
			}
			if fallback != nil {
				return fallback, nil
			}
			return nil, fmt.Errorf("no certificate for server name %q", hello.ServerName)
		},
	}
}

// groups are the key-exchange groups TLSOptions.Groups may name, as
// crypto/tls names them.
var groups = []tls.CurveID{tls.X25519MLKEM768, tls.SecP256r1MLKEM768, tls.SecP384r1MLKEM1024, tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}

// ParseGroups reads a comma-separated list of key-exchange groups by
// their crypto/tls names (X25519MLKEM768, SecP256r1MLKEM768,
// SecP384r1MLKEM1024, X25519, CurveP256, CurveP384, CurveP521; case does
// not matter, and P-256, P-384 and P-521 are accepted too). "" is nil:
// Go's default.
func ParseGroups(list string) ([]tls.CurveID, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var out []tls.CurveID
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(groups, func(g tls.CurveID) bool {
			return strings.EqualFold(g.String(), name) || strings.EqualFold("Curve"+strings.ReplaceAll(name, "-", ""), g.String())
		})
		if i < 0 {
			names := make([]string, len(groups))
			for j, g := range groups {
				names[j] = g.String()
			}
			return nil, fmt.Errorf("unknown key-exchange group %q (known: %s)", name, strings.Join(names, ", "))
		}
		if slices.Contains(out, groups[i]) {
			return nil, fmt.Errorf("key-exchange group %s listed twice", groups[i])
		}
		out = append(out, groups[i])
	}
	return out, nil
}
