#!/usr/bin/env bash
# Builds OpenSSL's shared libraries (libssl.so.3, libcrypto.so.3), pinned
# by OPENSSL_VERSION and OPENSSL_SHA256 in hack/versions.env, from the
# source archive of Debian's package into a cache folder, and prints that
# folder. A cached build is reused; a cold one takes 8 to 10 minutes on two
# cores.
#
# make bench-browser runs Debian's nginx on these libraries (as the peer
# nginx-pq, with LD_LIBRARY_PATH): OpenSSL keeps one ABI across 3.x, so
# the nginx built against Debian 12's OpenSSL 3.0 runs on 3.5, whose
# default groups put the post-quantum hybrid X25519MLKEM768 first, as
# Go's do. Nothing of wsgate links against it.
#
#   WSGATE_OPENSSL_DIR   where the libraries go
#                        (default: ~/.cache/wsgate/openssl/<version>-<arch>)
set -euo pipefail

# shellcheck source=hack/versions.env
source "$(dirname "${BASH_SOURCE[0]}")/versions.env"
version=$OPENSSL_VERSION
arch=$(uname -m)
dir=${WSGATE_OPENSSL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wsgate/openssl/$version-$arch}
stamp=$({ cat "${BASH_SOURCE[0]}"; echo "OPENSSL_VERSION=$version $OPENSSL_SHA256"; } | sha256sum | cut -c1-16)

if [[ -f "$dir/libssl.so.3" && "$(cat "$dir/.stamp" 2>/dev/null)" == "$stamp" ]]; then
	echo "$dir"
	exit 0
fi
for tool in curl gcc make perl; do
	command -v "$tool" >/dev/null || { echo "hack/openssl.sh: $tool is needed (apt-get install $tool)" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
archive=openssl_$version.orig.tar.gz
echo "building OpenSSL $version's libraries into $dir (8 to 10 minutes when cold)" >&2
curl -fsSL --retry 3 -o "$tmp/$archive" "https://deb.debian.org/debian/pool/main/o/openssl/$archive" ||
	curl -fsSL --retry 3 -o "$tmp/$archive" "http://deb.debian.org/debian/pool/main/o/openssl/$archive"
echo "$OPENSSL_SHA256  $tmp/$archive" | sha256sum -c --quiet - >&2
mkdir "$tmp/src"
tar -xzf "$tmp/$archive" -C "$tmp/src" --strip-components=1
# Only the libraries: no tests, docs, command-line tool or install step.
# Its configuration folder is one that does not exist, so the defaults apply.
(
	cd "$tmp/src"
	./Configure --prefix="$tmp/none" --openssldir="$tmp/none" shared no-tests no-docs >&2
	make -j"$(nproc)" build_libs >"$tmp/make.log" 2>&1 || { tail -20 "$tmp/make.log" >&2; exit 1; }
)
mkdir -p "$dir"
cp "$tmp/src/libssl.so.3" "$tmp/src/libcrypto.so.3" "$dir/"
echo "$stamp" >"$dir/.stamp"
echo "$dir"
