package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/wsgate/wsgate/auth"
)

// issuerHTTPClient is the client that fetches token issuers' keys: the
// system roots, plus the PEM certificates in caFile when it is not "".
func issuerHTTPClient(caFile string) (*http.Client, error) {
	client := auth.NewHTTPClient()
	if caFile == "" {
		return client, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	tr, ok := client.Transport.(*http.Transport)
	if !ok || tr.TLSClientConfig == nil {
		return nil, errors.New("the issuer HTTP client has no TLS configuration to extend")
	}
	tr.TLSClientConfig.RootCAs = pool
	return client, nil
}
