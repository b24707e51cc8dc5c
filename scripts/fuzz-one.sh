#!/usr/bin/env bash
# fuzz-one.sh GO PKG FN TIME: fuzz one target for TIME (make fuzz).
#
# Go's fuzz coordinator (go1.26 and earlier: golang/go#75804, fixed in
# go1.27) can end a -fuzztime run that found nothing with a bare "context
# deadline exceeded" failure when a worker is slow to stop — on a loaded
# 2-core machine it does. A real finding always writes its input under
# testdata/fuzz ("Failing input written to …"). So: a failure that wrote an
# input, or any other failure, fails; a bare deadline failure is run again,
# up to twice, and fails if it keeps coming.
set -uo pipefail
go=$1 pkg=$2 fn=$3 time=$4
for try in 1 2 3; do
	out=$(mktemp)
	"$go" test -run '^$' -fuzz "^$fn\$" -fuzztime "$time" -fuzzminimizetime 0 "$pkg" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	if [ "$rc" -eq 0 ]; then
		rm -f "$out"
		exit 0
	fi
	if grep -q 'Failing input written to' "$out" || ! grep -q 'context deadline exceeded' "$out" ||
		grep -qE '^\s+[a-z_]+_test\.go:[0-9]+:|panic:' "$out"; then
		rm -f "$out"
		exit "$rc"
	fi
	rm -f "$out"
	echo "--- $fn: the fuzz coordinator's deadline race (golang/go#75804), nothing found; again ($try of 3)"
done
exit 1
