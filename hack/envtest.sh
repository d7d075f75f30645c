#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, etcd, kubectl; and
# kube-controller-manager when named, which the tests run for garbage
# collection only) from the Go module proxy into a cache folder and prints
# that folder. A cached build is reused; a cold one takes minutes.
#
#   hack/envtest.sh [binary ...]
#
#   WSGATE_ENVTEST_DIR   where the binaries go
#                        (default: ~/.cache/wsgate/envtest/<version>-<os>-<arch>)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mod="$here/tools/envtest"
# The control plane's version is the k8s.io/kubernetes version that the
# module building it requires (hack/versions.env names the pins kept in
# go.mod files), without its "v".
version=$(awk '$1 == "k8s.io/kubernetes" { sub(/^v/, "", $2); print $2; exit }' "$mod/go.mod")
[[ -n $version ]] || { echo "envtest.sh: no k8s.io/kubernetes in $mod/go.mod" >&2; exit 1; }
goos=$(go env GOOS)
goarch=$(go env GOARCH)
dir=${WSGATE_ENVTEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wsgate/envtest/$version-$goos-$goarch}
stamp=$(cat "$mod/go.mod" "$mod/go.sum" "$mod/tools.go" "$mod/etcd/main.go" | sha256sum | cut -c1-16)

# The binaries to make sure of: the arguments, or the control plane and
# kubectl. kube-controller-manager (garbage collection) is built only when
# asked for, by the tests that run it.
bins=("$@")
if [[ ${#bins[@]} -eq 0 ]]; then
	bins=(kube-apiserver etcd kubectl)
fi

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$version -X k8s.io/component-base/version.gitMajor=${version%%.*} -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$version")"
mkdir -p "$dir"
for b in "${bins[@]}"; do
	if [[ -x "$dir/$b" && "$(cat "$dir/.$b.stamp" 2>/dev/null)" == "$stamp" ]]; then
		continue
	fi
	case "$b" in
	etcd) pkg=./etcd ;;
	kube-apiserver | kube-controller-manager | kubectl) pkg=k8s.io/kubernetes/cmd/$b ;;
	*)
		echo "envtest.sh: unknown binary $b" >&2
		exit 2
		;;
	esac
	echo "building $b v$version into $dir (minutes when cold)" >&2
	(cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/$b.tmp" "$pkg") >&2
	mv "$dir/$b.tmp" "$dir/$b"
	echo "$stamp" >"$dir/.$b.stamp"
done
echo "$dir"
