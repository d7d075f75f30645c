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
# The commit built, and its time in seconds since 1970: the image's
# revision label and its creation time (SOURCE_DATE_EPOCH, when set, wins).
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)
# Expanded once, so that every recipe of a run (the image's build and its
# test) sees the same values even if a commit lands meanwhile.
VERSION := $(VERSION)
REVISION := $(REVISION)
SOURCE_DATE_EPOCH := $(SOURCE_DATE_EPOCH)
# How the binary is built (make build, make image; the Dockerfile's build
# stage runs the same command).
GO_BUILD = CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)"

LOCALBIN ?= $(CURDIR)/bin
# CONTROLLER_TOOLS_VERSION, GOLANGCI_LINT_VERSION, HELM_VERSION, ...
include $(CURDIR)/hack/versions.env
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
CYCLONEDX_GOMOD ?= $(LOCALBIN)/cyclonedx-gomod-$(CYCLONEDX_GOMOD_VERSION)
# h2spec, pinned with its dependencies in hack/tools/h2spec/go.mod: the
# proxy's TestH2Spec runs it against the gateway's HTTP/2.
H2SPEC ?= $(LOCALBIN)/h2spec

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
vet: ## Run go vet (and on the image builder's module, hack/tools/image).
	go vet ./...
	cd hack/tools/image && go vet ./...

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
	cd hack/tools/image && go mod tidy -diff
	cd hack/tools/h2spec && go mod tidy -diff

.PHONY: envtest
envtest: ## Build (or reuse) the local control plane binaries and print their folder.
	@hack/envtest.sh

.PHONY: test
test: verify vet lint $(H2SPEC) ## Run every check and test, as CI does (envtest suites, a short fuzz run, a benchmark smoke run and the image build and its test included).
	$(MAKE) image-test
	$(MAKE) fuzz
	$(MAKE) race
	$(MAKE) bench-smoke
	WSGATE_ENVTEST_ASSETS="$$(hack/envtest.sh)" WSGATE_H2SPEC=$(H2SPEC) go test $(GO_TEST_FLAGS) ./...

# The packages whose tests start a control plane (kube-apiserver and etcd,
# through internal/testenv), helm or a browser: the API types' CRD
# validation, the controllers, testenv itself, the end-to-end, fault, chart
# and browser suites, and the demo. make unit leaves them out (and fails a
# package not listed here that starts a control plane); make test runs them.
UNIT_EXCLUDE := api/v1alpha1 controllers internal/testenv test/e2e test/faults test/chart test/browser hack/demo

.PHONY: unit
unit: $(H2SPEC) ## Run the unit tests, which start no control plane, helm or browser: proxy, routing, tablebuild, cmd/wsgate, test helpers. Leaves out (UNIT_EXCLUDE) api/v1alpha1, controllers and internal/testenv, whose tests run on kube-apiserver, and test/e2e, test/faults, test/chart, test/browser, hack/demo; make test runs every test.
	WSGATE_NO_CONTROL_PLANE=1 WSGATE_H2SPEC=$(H2SPEC) go test $(GO_TEST_FLAGS) $$(go list ./... | grep -vxF "$$(printf "$$(go list -m)/%s\n" $(UNIT_EXCLUDE))")

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
bench-browser: ## New connections as browsers make them, beside nginx on Debian's OpenSSL and on OpenSSL 3.5 (nginx-pq, which offers the post-quantum hybrid as wsgate does; hack/openssl.sh builds its libraries, 8 to 10 minutes the first time): raw and browser-like clients, Go's default TLS groups and X25519 only, full and resumed TLS handshakes (about 6 minutes; prints the report, writes no file).
	go run ./test/bench -rows rate,ratetls,ratebrowser,ratetlsbrowser,ratetlsbrowserx25519,ratetlsresume -peers nginx,nginx-pq -nginx-openssl "$$(hack/openssl.sh)" -out -

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
	$(GO_BUILD) -o $(LOCALBIN)/wsgate ./cmd/wsgate

.PHONY: run
run: ## Run the gateway against the cluster of the current kubeconfig.
	go run ./cmd/wsgate

.PHONY: docker-build
docker-build: ## Build the container image with a Docker engine, from the Dockerfile: the same build, files, user and labels as make image.
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		--build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
		--build-arg CREATED=$$(date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r $(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ) \
		-t $(IMG) .

##@ Image and release

IMAGE_REPOSITORY ?= ghcr.io/wsgate/wsgate
# OS/ARCH pairs.
IMAGE_PLATFORMS ?= linux/amd64 linux/arm64
IMAGE_DIR ?= $(LOCALBIN)/image
# The image builder, a Go module of its own so that go.mod does not
# require go-containerregistry; it runs in its folder, so paths given to it
# are absolute.
IMAGE_TOOL = cd hack/tools/image && go run .
IMAGE_ABS_DIR = $(abspath $(IMAGE_DIR))

.PHONY: image
image: ## Build the image for IMAGE_PLATFORMS without a container engine (hack/tools/image): the OCI layout bin/image/oci, the same as an OCI archive (bin/image/wsgate.oci.tar, for ctr images import), and the binaries in bin/image/<os>-<arch>/.
	@for p in $(IMAGE_PLATFORMS); do \
		(set -x; GOOS=$${p%%/*} GOARCH=$${p#*/} $(GO_BUILD) -o $(IMAGE_DIR)/$${p/\//-}/wsgate ./cmd/wsgate); \
	done
	$(IMAGE_TOOL) build -layout $(IMAGE_ABS_DIR)/oci -archive $(IMAGE_ABS_DIR)/wsgate.oci.tar \
		-version $(VERSION) -revision $(REVISION) -source-date-epoch $(SOURCE_DATE_EPOCH) -repository $(IMAGE_REPOSITORY) \
		$(foreach p,$(IMAGE_PLATFORMS),-binary $(p)=$(IMAGE_ABS_DIR)/$(subst /,-,$(p))/wsgate)

.PHONY: image-test
image-test: image ## Build the image, then read it back (hack/tools/image's tests): index and platforms, configs, every file of the layers, the binary's --version, a push to an in-memory registry, a rebuild to the same digests; logs the sizes.
	cd hack/tools/image && WSGATE_IMAGE_LAYOUT=$(IMAGE_ABS_DIR)/oci WSGATE_IMAGE_ARCHIVE=$(IMAGE_ABS_DIR)/wsgate.oci.tar \
		WSGATE_IMAGE_VERSION=$(VERSION) WSGATE_IMAGE_REVISION=$(REVISION) WSGATE_IMAGE_REPOSITORY=$(IMAGE_REPOSITORY) \
		SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
		go test $(GO_TEST_FLAGS) -v ./...

.PHONY: sbom
sbom: image $(CYCLONEDX_GOMOD) ## Build the image, then write a CycloneDX SBOM of each of its binaries (modules from the binary's build information) into bin/image/sbom/.
	@mkdir -p $(IMAGE_DIR)/sbom
	@for p in $(IMAGE_PLATFORMS); do \
		out=$(IMAGE_DIR)/sbom/wsgate-$${p/\//-}.cdx.json; \
		GOOS=$${p%%/*} GOARCH=$${p#*/} $(CYCLONEDX_GOMOD) bin -json -std -noserial -notimestamp -version $(VERSION) -output $$out $(IMAGE_DIR)/$${p/\//-}/wsgate; \
		echo "SBOM of $$p: $$out"; \
	done

# A release's version: VERSION when it is a release tag (vMAJOR.MINOR.PATCH,
# or with a pre-release suffix), else v0.0.0-g<VERSION> (an untagged
# commit). The chart's version and appVersion are it without the v, so
# that the chart's default image tag (v + appVersion) is the image's tag.
RELEASE_VERSION ?= $(shell v='$(VERSION)'; if [[ $$v =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$$ ]]; then echo "$$v"; else echo "v0.0.0-g$$v"; fi)
RELEASE_VERSION := $(RELEASE_VERSION)
RELEASE_CHART_VERSION = $(patsubst v%,%,$(RELEASE_VERSION))
CHART_REPOSITORY ?= oci://ghcr.io/wsgate/charts

.PHONY: release-dry-run
release-dry-run: ## Do what the release workflow (.github/workflows/release.yml) does on a tag, at RELEASE_VERSION, but with a registry of its own: build and test the image, write its SBOMs, package the chart, push them to a registry served on loopback for the run (hack/release.sh --loopback); print the digests and the signing commands, which need the workflow's identity.
	$(MAKE) --no-print-directory image-test sbom chart-package VERSION=$(RELEASE_VERSION) CHART_VERSION=$(RELEASE_CHART_VERSION) \
		REVISION=$(REVISION) SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH)
	IMAGE_REPOSITORY=$(IMAGE_REPOSITORY) CHART_REPOSITORY=$(CHART_REPOSITORY) IMAGE_PLATFORMS="$(IMAGE_PLATFORMS)" \
		hack/release.sh --loopback $(RELEASE_VERSION)
	@echo
	@echo "release $(RELEASE_VERSION): the release workflow pushes"
	@$(IMAGE_TOOL) describe $(IMAGE_ABS_DIR)/oci
	@echo "  to $(IMAGE_REPOSITORY):$(RELEASE_VERSION)"
	@chart=$(LOCALBIN)/wsgate-$(RELEASE_CHART_VERSION).tgz; \
	echo "chart $$chart sha256:$$(sha256sum $$chart | cut -d' ' -f1)"; \
	echo "  to $(CHART_REPOSITORY)/wsgate:$(RELEASE_CHART_VERSION)"; \
	for p in $(IMAGE_PLATFORMS); do \
		f=$(IMAGE_DIR)/sbom/wsgate-$${p/\//-}.cdx.json; \
		echo "SBOM $$f sha256:$$(sha256sum $$f | cut -d' ' -f1)"; \
		echo "  attested to the $$p image"; \
	done
	@echo "Pushed here to loopback only; nothing was pushed to $(firstword $(subst /, ,$(IMAGE_REPOSITORY))) or signed."

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

# When set, the packaged chart's version and appVersion (make
# release-dry-run sets it); else the chart's own.
CHART_VERSION ?=

.PHONY: chart-package
chart-package: | $(LOCALBIN) ## Package the chart into bin/ (wsgate-<version>.tgz); CHART_VERSION=X.Y.Z sets its version and appVersion.
	"$$(hack/helm.sh)" package $(CHART) --destination $(LOCALBIN) $(if $(CHART_VERSION),--version $(CHART_VERSION) --app-version $(CHART_VERSION))

##@ Tools

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

$(CONTROLLER_GEN): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $@

$(GOLANGCI_LINT): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(LOCALBIN)/golangci-lint $@

$(H2SPEC): hack/tools/h2spec/go.mod hack/tools/h2spec/go.sum | $(LOCALBIN)
	cd hack/tools/h2spec && go build -o $@ github.com/summerwind/h2spec/cmd/h2spec

$(CYCLONEDX_GOMOD): | $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@$(CYCLONEDX_GOMOD_VERSION)
	mv $(LOCALBIN)/cyclonedx-gomod $@
