#!/usr/bin/env bash
# Pushes a release that make release-dry-run built: the image (the OCI
# layout bin/image/oci) to $IMAGE_REPOSITORY:VERSION and the chart
# (bin/wsgate-<VERSION without its v>.tgz) to $CHART_REPOSITORY, checking
# first that the layout is VERSION's and that the chart deploys that image,
# and after that the registry holds the layout's digest.
#
#   hack/release.sh --sign VERSION      push, then sign keylessly with cosign
#                                       (the release workflow, logged in to
#                                       the registry, with an OIDC identity)
#   hack/release.sh --loopback VERSION  push to a registry served on loopback
#                                       for this run only (crane registry
#                                       serve), and print the cosign commands
#                                       instead of running them
#
# --sign signs the image's index and each platform's image, attests each
# platform's SBOM (bin/image/sbom/, make sbom) to its image, and signs the
# chart, all by digest.
#
#   IMAGE_REPOSITORY  default ghcr.io/wsgate/wsgate
#   CHART_REPOSITORY  default oci://ghcr.io/wsgate/charts
#   IMAGE_PLATFORMS   default "linux/amd64 linux/arm64"
#   HELM              helm (default: the one hack/helm.sh builds)
# crane is built into bin/ from the go-containerregistry release that
# hack/tools/image/go.mod pins.
set -euo pipefail

usage() {
	echo "usage: hack/release.sh (--sign | --loopback) VERSION" >&2
	exit 2
}
(($# == 2)) || usage
mode=$1 version=$2
[[ $mode == --sign || $mode == --loopback ]] || usage

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=${IMAGE_REPOSITORY:-ghcr.io/wsgate/wsgate}
charts=${CHART_REPOSITORY:-oci://ghcr.io/wsgate/charts}
platforms=${IMAGE_PLATFORMS:-linux/amd64 linux/arm64}
chart_version=${version#v}
layout=$root/bin/image/oci
chart=$root/bin/wsgate-$chart_version.tgz
fail() {
	echo "hack/release.sh: $*" >&2
	exit 1
}

for f in "$layout/index.json" "$chart"; do
	[[ -e $f ]] || fail "no $f: run make release-dry-run VERSION=$version first"
done
grep -qF "\"org.opencontainers.image.ref.name\": \"$version\"" "$layout/index.json" ||
	fail "$layout is not the image of $version: run make release-dry-run VERSION=$version"
want=$(sed -n 's/^ *"digest": *"\(sha256:[0-9a-f]\{64\}\)".*/\1/p' "$layout/index.json")
[[ $want =~ ^sha256:[0-9a-f]{64}$ ]] || fail "$layout/index.json: want one digest, found: $want"
helm=${HELM:-$("$root/hack/helm.sh")}
deploys=$("$helm" template wsgate "$chart" | sed -n 's/^ *image: *//p' | tr -d '"' | sort -u)
[[ $deploys == "$image:$version" ]] || fail "$chart deploys the image $deploys, not $image:$version"
declare -A sbom
for p in $platforms; do
	sbom[$p]=$root/bin/image/sbom/wsgate-${p//\//-}.cdx.json
	[[ -s ${sbom[$p]} ]] || fail "no SBOM ${sbom[$p]}: run make release-dry-run VERSION=$version first"
done

crane=$root/bin/crane
go -C "$root/hack/tools/image" build -o "$crane" github.com/google/go-containerregistry/cmd/crane

release_image=$image
release_charts=$charts
crane_flags=()
helm_flags=()
if [[ $mode == --loopback ]]; then
	log=$(mktemp)
	"$crane" registry serve --address 127.0.0.1:0 2>"$log" &
	registry=$!
	trap 'kill $registry 2>/dev/null; wait $registry 2>/dev/null || true; rm -f "$log"' EXIT
	port=
	for _ in $(seq 100); do
		port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$log")
		[[ -n $port ]] && break
		sleep 0.1
	done
	[[ -n $port ]] || fail "crane registry serve did not start: $(cat "$log")"
	echo "pushing to a registry on 127.0.0.1:$port (this run's only) in place of ${image%%/*}"
	image=127.0.0.1:$port/${image#*/}
	charts=oci://127.0.0.1:$port/${charts#oci://*/}
	crane_flags=(--insecure)
	helm_flags=(--plain-http)
fi

ref=$("$crane" push "${crane_flags[@]}" "$layout" "$image:$version")
digest=${ref#*@}
[[ $digest == "$want" ]] || fail "pushed $ref, but the layout's index is $want"
echo "image $image:$version $digest"
declare -A platform_digest
for p in $platforms; do
	platform_digest[$p]=$("$crane" digest "${crane_flags[@]}" --platform "$p" "$image@$digest")
	echo "  $p ${platform_digest[$p]}"
done

"$helm" push "${helm_flags[@]}" "$chart" "$charts"
chart_ref=${charts#oci://}/wsgate
chart_digest=$("$crane" digest "${crane_flags[@]}" "$chart_ref:$chart_version")
echo "chart $chart_ref:$chart_version $chart_digest"

# Signing is by digest: the same in the registry served on loopback as
# in the release's registry, whose names the commands printed use.
sign() {
	if [[ $mode == --sign ]]; then
		echo "+ $*"
		"$@"
	else
		echo "  $*"
	fi
}
[[ $mode == --sign ]] || echo "not signed: keyless signing needs the release workflow's OIDC identity (id-token: write); it runs:"
sign cosign sign --yes --recursive "$release_image@$digest"
for p in $platforms; do
	sign cosign attest --yes --type cyclonedx --predicate "${sbom[$p]}" "$release_image@${platform_digest[$p]}"
done
sign cosign sign --yes "${release_charts#oci://}/wsgate@$chart_digest"
