#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, etcd, kubectl, and
# kube-controller-manager, which the tests run for garbage collection only)
# from the Go module proxy into a cache folder and prints that folder. A
# cached build is reused; a cold one takes a few minutes.
#
#   WSGATE_ENVTEST_DIR   where the binaries go
#                        (default: ~/.cache/wsgate/envtest/<version>-<os>-<arch>)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mod="$here/tools/envtest"
version=1.37.2
goos=$(go env GOOS)
goarch=$(go env GOARCH)
dir=${WSGATE_ENVTEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wsgate/envtest/$version-$goos-$goarch}
stamp=$(cat "$mod/go.mod" "$mod/go.sum" "$mod/tools.go" "$mod/etcd/main.go" | sha256sum | cut -c1-16)

bins=(kube-apiserver kube-controller-manager kubectl etcd)
cached=1
for b in "${bins[@]}"; do
	[[ -x "$dir/$b" ]] || cached=0
done
if [[ $cached == 1 && "$(cat "$dir/.stamp" 2>/dev/null)" == "$stamp" ]]; then
	echo "$dir"
	exit 0
fi

mkdir -p "$dir"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$version -X k8s.io/component-base/version.gitMajor=${version%%.*} -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$version")"
echo "building kube-apiserver, kube-controller-manager, etcd and kubectl v$version into $dir (a few minutes when cold)" >&2
(
	cd "$mod"
	CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
	CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/kube-controller-manager.tmp" k8s.io/kubernetes/cmd/kube-controller-manager
	CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/etcd.tmp" ./etcd
) >&2
for b in "${bins[@]}"; do mv "$dir/$b.tmp" "$dir/$b"; done
echo "$stamp" >"$dir/.stamp"
echo "$dir"
