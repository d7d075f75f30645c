# wsgate — build, generate and test.
#
# Every tool's version is pinned in hack/versions.env, which this file
# includes and the scripts in hack/ read; the tools are built from the Go
# module proxy into bin/ (helm into a cache folder, by hack/helm.sh).
# The local control plane (kube-apiserver, etcd, kubectl, and
# kube-controller-manager for garbage collection) that the tests use
# is built from source by hack/envtest.sh into a cache folder on first use.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMG ?= wsgate:$(VERSION)

LOCALBIN ?= $(CURDIR)/bin
# CONTROLLER_TOOLS_VERSION, GOLANGCI_LINT_VERSION, HELM_VERSION, ...
include $(CURDIR)/hack/versions.env
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)

GO_TEST_FLAGS ?= -count=1
FUZZTIME ?= 10s

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRDs and RBAC into config/ from the markers in api/ and controllers/.
	$(CONTROLLER_GEN) rbac:roleName=wsgate crd paths="./..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@$(MAKE) --no-print-directory chart-sync

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate the DeepCopy methods of the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Format the Go code.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: generate manifests ## Fail when generated files or formatting are stale.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed on:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	@git diff --exit-code -- api config charts/wsgate/crds charts/wsgate/files || { echo "generated files are stale: run 'make generate manifests' and commit the result"; exit 1; }
	@test -z "$$(git status --porcelain -- api config charts/wsgate/crds charts/wsgate/files)" || { echo "untracked generated files:"; git status --porcelain -- api config charts/wsgate/crds charts/wsgate/files; exit 1; }
	go mod tidy -diff
	cd hack/tools/envtest && go mod tidy -diff

.PHONY: envtest
envtest: ## Build (or reuse) the local control plane binaries and print their folder.
	@hack/envtest.sh

.PHONY: test
test: verify vet lint ## Run every check and test, as CI does (envtest suites, a short fuzz run and a benchmark smoke run included).
	$(MAKE) fuzz
	$(MAKE) race
	$(MAKE) bench-smoke
	WSGATE_ENVTEST_ASSETS="$$(hack/envtest.sh)" go test $(GO_TEST_FLAGS) ./...

# The packages whose tests start a control plane (kube-apiserver and etcd,
# through internal/testenv), helm or a browser: the API types' CRD
# validation, the controllers, testenv itself, the end-to-end, fault, chart
# and browser suites, and the demo. make unit leaves them out (and fails a
# package not listed here that starts a control plane); make test runs them.
UNIT_EXCLUDE := api/v1alpha1 controllers internal/testenv test/e2e test/faults test/chart test/browser hack/demo

.PHONY: unit
unit: ## Run the unit tests, which start no control plane, helm or browser: proxy, routing, tablebuild, cmd/wsgate, test helpers. Leaves out (UNIT_EXCLUDE) api/v1alpha1, controllers and internal/testenv, whose tests run on kube-apiserver, and test/e2e, test/faults, test/chart, test/browser, hack/demo; make test runs every test.
	WSGATE_NO_CONTROL_PLANE=1 go test $(GO_TEST_FLAGS) $$(go list ./... | grep -vxF "$$(printf "$$(go list -m)/%s\n" $(UNIT_EXCLUDE))")

.PHONY: race
race: ## Run the tests of the data plane (proxy, routing) and of the table build (tablebuild) under the race detector.
	go test -race -count=1 ./proxy/... ./routing/... ./tablebuild/...

.PHONY: fuzz
fuzz: ## Run each fuzz test (func FuzzXxx) for FUZZTIME (default 10s), through hack/fuzz.sh (which runs a test again once after Go's end-of-fuzztime deadline race, and never after a failing input).
	@for file in $$(git grep -l '^func Fuzz' -- '*_test.go'); do \
		for fn in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$file | cut -d' ' -f2); do \
			echo "fuzz $$fn in ./$$(dirname $$file) for $(FUZZTIME)"; \
			hack/fuzz.sh ./$$(dirname $$file) $$fn $(FUZZTIME) || exit 1; \
		done; \
	done

SOAK_DURATION ?= 15m
SOAK_TIMEOUT ?= 60m

.PHONY: soak
soak: ## Soak the wsgate binary under steady load and churn for SOAK_DURATION (default 15m; not in CI): fails if RSS, goroutines or fds grow after a 3-minute warm-up (slopes judged on runs of 13m or more) or do not come back to idle after the load.
	WSGATE_ENVTEST_ASSETS="$$(hack/envtest.sh)" WSGATE_SOAK_DURATION=$(SOAK_DURATION) go test -count=1 -v -timeout $(SOAK_TIMEOUT) -run '^TestSoak' ./test/faults/

.PHONY: bench-build
bench-build: ## Benchmark the routing table build (10,000 pods over 1,000 routes).
	go test -run '^$$' -bench BenchmarkBuild -benchmem ./tablebuild/

.PHONY: bench
bench: ## Benchmark the data plane beside nginx, HAProxy and direct connections on loopback (installs nginx and haproxy from Debian when missing), then the control plane on the local API server (about 12 minutes in all); writes docs/benchmarks.md.
	go run ./test/bench
	go run ./test/bench/controlplane

.PHONY: bench-controlplane
bench-controlplane: ## Measure the control plane on the local API server: memory per cached pod and rebuild time at 10,000 pods, pod Ready -> first upgrade while 1,000 pods churn (about 5 minutes); rewrites the control plane's part of docs/benchmarks.md only.
	go run ./test/bench/controlplane

.PHONY: bench-pod-ready
bench-pod-ready: ## Benchmark pod Ready -> allowlisted in the published table on the local API server, 200 pods one at a time (BenchmarkPodReadyToPublished in controllers/; reports p50/p99/max).
	WSGATE_ENVTEST_ASSETS="$$(hack/envtest.sh)" go test -run '^$$' -bench '^BenchmarkPodReadyToPublished$$' -benchtime 200x ./controllers/

.PHONY: bench-browser
bench-browser: ## New connections as browsers make them, beside nginx: raw and browser-like clients, Go's default TLS groups and X25519 only, full and resumed TLS handshakes (about 5 minutes; prints the report, writes no file).
	go run ./test/bench -rows rate,ratetls,ratebrowser,ratetlsbrowser,ratetlsbrowserx25519,ratetlsresume -peers nginx -out -

.PHONY: bench-identity
bench-identity: ## Identity at the handshake: new TLS connections with an ES256 token (reused and new), forward auth's added latency, a flood of unknown key IDs (about 3 minutes; prints the report, writes no file).
	go run ./test/bench -rows ratetls,ratetlsauth,ratetlsauthnew,fwdauth,kidflood -peers nginx -out -

.PHONY: bench-edge
bench-edge: ## The public edge: new connections on a route with per-client limits beside one without, plain and TLS, and 200 well-behaved clients' handshakes while one client floods handshakes and one walks pod addresses (about 4 minutes; prints the report, writes no file).
	go run ./test/bench -rows rate,ratelimits,ratetls,ratetlslimits,edgeflood -peers nginx -out -

.PHONY: bench-http2
bench-http2: ## Websockets over HTTP/2 beside HTTP/1.1 TLS tunnels: memory per idle websocket beyond the first of a connection, round trips, websockets opened on open connections (about 4 minutes; prints the report, writes no file).
	go run ./test/bench -rows ratetls,idletls,idleh2,rth2,rateh2 -peers nginx -out -

.PHONY: bench-smoke
bench-smoke: ## A seconds-long run of the data-plane benchmark (peers not installed are skipped; prints the report, writes no file).
	go run ./test/bench -smoke

##@ Try it

.PHONY: demo
demo: ## Run wsgate on this machine with a local control plane, cert-manager, echo pods and TLS (hack/demo.sh: compiles bin/demo while hack/envtest.sh builds the control plane, then runs it; 10-20 minutes the first time on 2 cores, seconds after).
	@hack/demo.sh

##@ Build

.PHONY: build
build: ## Build bin/wsgate.
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(LOCALBIN)/wsgate ./cmd/wsgate

.PHONY: run
run: ## Run the gateway against the cluster of the current kubeconfig.
	go run ./cmd/wsgate

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine).
	docker build --build-arg VERSION=$(VERSION) -t $(IMG) .

##@ Chart

CHART ?= charts/wsgate

.PHONY: chart-sync
chart-sync: ## Copy the generated CRD and RBAC into the chart (make manifests does it; test/chart checks it).
	cp config/crd/bases/wsgate.io_wsroutes.yaml config/crd/bases/wsgate.io_wsgrants.yaml $(CHART)/crds/
	cp config/rbac/role.yaml config/rbac/leader_election_role.yaml $(CHART)/files/rbac/

.PHONY: helm
helm: ## Build (or reuse) the pinned helm (HELM_VERSION in hack/versions.env) and print its path.
	@hack/helm.sh

.PHONY: helm-lint
helm-lint: ## Lint the chart with the pinned helm, strictly.
	"$$(hack/helm.sh)" lint --strict $(CHART)

.PHONY: chart-template
chart-template: ## Render the chart with its default values (release wsgate in wsgate-system).
	@"$$(hack/helm.sh)" template wsgate $(CHART) --namespace wsgate-system --include-crds

.PHONY: chart-test
chart-test: ## Run the chart tests: lint, render, schema, install and RBAC on a real API server, image build.
	WSGATE_ENVTEST_ASSETS="$$(hack/envtest.sh)" WSGATE_HELM="$$(hack/helm.sh)" go test $(GO_TEST_FLAGS) -timeout 20m -v ./test/chart/

.PHONY: chart-package
chart-package: | $(LOCALBIN) ## Package the chart into bin/ (wsgate-<version>.tgz).
	"$$(hack/helm.sh)" package $(CHART) --destination $(LOCALBIN)

##@ Tools

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

$(CONTROLLER_GEN): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $@

$(GOLANGCI_LINT): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(LOCALBIN)/golangci-lint $@
