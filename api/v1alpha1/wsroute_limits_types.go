package v1alpha1

// ClientLimits bound one client on one route, per gateway replica. A
// client is its address (an IPv6 address counts as its /64) or, on a
// route with spec.auth.jwt, its token's subject (the issuer's sub), so
// that people behind one NAT address do not share a limit.
//
// +kubebuilder:validation:XValidation:rule="has(self.handshakesPerMinute) || has(self.maxTunnelsPerClient)",message="set handshakesPerMinute, maxTunnelsPerClient or both"
// +kubebuilder:validation:XValidation:rule="!has(self.handshakeBurst) || has(self.handshakesPerMinute)",message="handshakeBurst needs handshakesPerMinute"
type ClientLimits struct {
	// HandshakesPerMinute is how many handshakes a client may make on
	// this route a minute, on average (a token bucket).
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=600000
	HandshakesPerMinute *int32 `json:"handshakesPerMinute,omitempty"`

	// HandshakeBurst is how many handshakes a client may make at once
	// under handshakesPerMinute. Default: ten seconds' worth, at least 1.
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	HandshakeBurst *int32 `json:"handshakeBurst,omitempty"`

	// MaxTunnelsPerClient caps a client's open tunnels on this route.
	//
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	MaxTunnelsPerClient *int32 `json:"maxTunnelsPerClient,omitempty"`
}
