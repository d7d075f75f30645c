package proxy

import (
	"crypto/tls"
	"fmt"
)

// TLSConfig returns a server TLS configuration that picks the certificate
// by SNI from the current routing table at each handshake, so a renewed
// Secret serves new handshakes at once while open tunnels keep theirs.
// fallback, if not nil, serves names that the table has no certificate
// for (not even a default).
func (s *Server) TLSConfig(fallback *tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
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
