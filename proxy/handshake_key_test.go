package proxy

import (
	"encoding/base64"
	"strings"
	"testing"
)

// TestValidKeyIsDecodeStringOf16Bytes: validKey accepts exactly the keys
// that base64.StdEncoding.DecodeString decodes to 16 bytes.
func TestValidKeyIsDecodeStringOf16Bytes(t *testing.T) {
	keys := []string{
		"dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZQ===",
		"dGhlIHNhbXBsZSBub25jZR==", "AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAAAA", "////////////////////////",
		"dGhlIHNhbX\nBsZSBub25jZQ==", "dGhl\r\nIHNh\r\nbXBs\r\nZSBu\r\nb25j\r\nZQ==", "dGhlIHNhbXBsZSBub25jZQ==\n\n\n\n\n\n\n\n",
		"", "=", "====", "dGhlIHNhbXBsZSBub25j", "dGhlIHNhbXBsZSBub25jZQ==AAAA", "dGhlIHNhbXBsZSBub25jZQ-_", "dGhlIHNhbXBsZSBub25jZQ%%",
		strings.Repeat("A", 100), strings.Repeat("\n", 40) + "dGhlIHNhbXBsZSBub25jZQ==",
	}
	for _, k := range keys {
		d, err := base64.StdEncoding.DecodeString(k)
		if want := err == nil && len(d) == 16; validKey(k) != want {
			t.Errorf("validKey(%q) = %v, want %v", k, !want, want)
		}
	}
}
