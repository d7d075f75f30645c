#!/usr/bin/env bash
# Builds helm, pinned by HELM_VERSION in hack/versions.env, from the Go
# module proxy into a cache folder and prints the binary's path. A cached
# build is reused; a cold one takes about a minute (up to three with an
# empty Go build cache on two cores).
# helm is a tool, not a dependency: it is not in go.mod.
#
#   WSGATE_HELM_DIR   where the binary goes
#                     (default: ~/.cache/wsgate/helm/<version>-<os>-<arch>)
set -euo pipefail

# shellcheck source=hack/versions.env
source "$(dirname "${BASH_SOURCE[0]}")/versions.env"
version=$HELM_VERSION
module=helm.sh/helm/v3
goos=$(go env GOOS)
goarch=$(go env GOARCH)
dir=${WSGATE_HELM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wsgate/helm/$version-$goos-$goarch}
bin="$dir/helm"
# A change to the version or to this script (flags) rebuilds.
stamp=$({ cat "${BASH_SOURCE[0]}"; echo "HELM_VERSION=$version"; } | sha256sum | cut -c1-16)

if [[ -x "$bin" && "$(cat "$dir/.stamp" 2>/dev/null)" == "$stamp" ]]; then
	echo "$bin"
	exit 0
fi

mkdir -p "$dir"
echo "building helm $version into $dir (a minute or more when cold)" >&2
# GOFLAGS from the caller (e.g. -mod=vendor) must not apply to a tool
# built outside this module.
export GOFLAGS= CGO_ENABLED=0
# The stamps helm's own Makefile sets: its version (`helm version`,
# .Capabilities.HelmVersion), and the Kubernetes version that `helm
# template` and `helm lint` assume (.Capabilities.KubeVersion, deprecation
# checks): 1.<minor of the client-go that helm requires>.
gomod=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
kminor=$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2]; exit }' "$gomod")
[[ -n $kminor ]] || { echo "hack/helm.sh: no k8s.io/client-go in $gomod" >&2; exit 1; }
ldflags="-s -w -X $module/internal/version.version=$version -X $module/internal/version.gitTreeState=clean"
for pkg in pkg/lint/rules pkg/chartutil; do
	ldflags+=" -X $module/$pkg.k8sVersionMajor=1 -X $module/$pkg.k8sVersionMinor=$kminor"
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# go install with a version builds the module on its own go.mod, ignoring
# the one around it.
GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "$module/cmd/helm@$version" >&2
mv "$tmp/helm" "$bin"
echo "$stamp" >"$dir/.stamp"
echo "$bin"
