#!/usr/bin/env bash
# Runs one fuzz test for a duration: hack/fuzz.sh <package dir> <FuzzName> <fuzztime>.
#
# Go 1.26's fuzzing coordinator can report "context deadline exceeded" as
# a failure at the end of a duration-based -fuzztime on a busy machine,
# with no failing input (golang/go#75804, fixed in Go 1.27). Such a run is
# tried once more; any other failure, and any run that writes a failing
# input, fails.
set -uo pipefail
dir=$1 fn=$2 fuzztime=$3
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for attempt in 1 2; do
	if go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" "$dir" 2>&1 | tee "$log"; then
		exit 0
	fi
	if grep -q 'context deadline exceeded' "$log" && ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$log" && [ "$attempt" = 1 ]; then
		echo "fuzz $fn: the coordinator's deadline race (golang/go#75804), no failing input: running it again"
		continue
	fi
	exit 1
done
exit 1
