package main

import (
	"encoding/json"
	"net/http"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/wsgate/wsgate/routing"
)

// The metrics endpoint authenticates callers with TokenReviews and
// authorizes them with SubjectAccessReviews when served securely.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// metricsOptions serves metrics on addr ("0": off), over HTTPS with
// authentication and authorization when secure (as kubebuilder
// scaffolds), else over plain HTTP. HTTP/2 stays off.
func metricsOptions(addr string, secure bool) metricsserver.Options {
	opts := metricsserver.Options{BindAddress: addr, SecureServing: secure}
	if secure {
		opts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return opts
}

// adminServer serves /debug/table, the current routing table as JSON, on
// a local address.
func adminServer(addr string, tables *routing.Publisher, addresses bool) manager.Runnable {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/table", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(tables.Load().Describe(addresses))
	})
	return &manager.Server{
		Name:   "admin",
		Server: &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second},
	}
}
