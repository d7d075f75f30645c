#!/usr/bin/env bash
# make demo: compiles the demo and the gateway into bin/ while
# hack/envtest.sh builds (or finds cached) the local control plane, then
# runs the demo with both. Where a build leaves cores idle, the other uses
# them; on 2 cores each build alone keeps both busy, and a cold first run
# costs about as much as one build after the other (go run ./hack/demo).
#
#   hack/demo.sh [demo flags ...]
#
# If either build fails, the other is stopped and the script says which
# one failed (its output is above). Ctrl-C or SIGTERM during the builds
# stops both, and exits 0. Once running, the demo stops cleanly on Ctrl-C
# or SIGTERM and exits 0.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bin=${LOCALBIN:-$root/bin}
mkdir -p "$bin"
work=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-demo-build-XXXXXX")

pids=()
stop_builds() {
	local p
	for p in "${pids[@]}"; do
		# Each build runs in a process group of its own (set -m below):
		# this stops its go command and compilers too.
		kill -TERM -- "-$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	pids=()
}
cleanup() {
	stop_builds
	rm -rf "$work"
}
trap cleanup EXIT
# A stop asked for is not a failure: like the demo, exit 0 once the builds
# are stopped.
trap 'echo "make demo: stopped while building" >&2; exit 0' INT TERM

echo "make demo: compiling the demo and the gateway into $bin while hack/envtest.sh builds the control plane (10 to 20 minutes on 2 cores when nothing is cached, seconds when it is)" >&2
set -m
(
	rc=0
	go build -o "$bin/demo" ./hack/demo && go build -o "$bin/wsgate-demo" ./cmd/wsgate || rc=$?
	echo "$rc" >"$work/compile.rc"
) </dev/null &
pids+=($!)
(
	rc=0
	hack/envtest.sh >"$work/assets" || rc=$?
	echo "$rc" >"$work/envtest.rc"
) </dev/null &
pids+=($!)
set +m

rc() { cat "$work/$1.rc" 2>/dev/null || true; }
while :; do
	waited=0
	wait -n || waited=$?
	compile=$(rc compile) envtest=$(rc envtest)
	if [[ -n $compile && $compile != 0 ]]; then
		echo "make demo: compiling the demo failed (go build ./hack/demo ./cmd/wsgate exited $compile, output above); stopping the control plane's build" >&2
		exit 1
	fi
	if [[ -n $envtest && $envtest != 0 ]]; then
		echo "make demo: building the control plane failed (hack/envtest.sh exited $envtest, output above); stopping the demo's compilation" >&2
		exit 1
	fi
	if [[ $compile == 0 && $envtest == 0 ]]; then
		break
	fi
	if [[ $waited == 127 ]]; then
		echo "make demo: a build ended without an exit status (killed?)" >&2
		exit 1
	fi
done
pids=()

assets=$(cat "$work/assets")
rm -rf "$work"
trap - EXIT INT TERM
WSGATE_ENVTEST_ASSETS=$assets exec "$bin/demo" -gateway "$bin/wsgate-demo" "$@"
