#!/bin/sh
# Runs matrix-org/complement against the complement-hearth image (make
# complement; see the README's Complement section). Needs Docker and a
# checkout of https://github.com/matrix-org/complement in COMPLEMENT_DIR;
# CI has no Docker and never runs this.
#
# Each package's `go test -v` output goes to $COMPLEMENT_OUT/<package>.log,
# and the pass counts (top-level tests, then tests and subtests) are
# printed per package.
#
#   COMPLEMENT_DIR      the Complement checkout (required)
#   COMPLEMENT_PKGS     packages to run (default: ./tests ./tests/csapi)
#   COMPLEMENT_RUN      a go test -run pattern (default: every test)
#   COMPLEMENT_SKIP     a go test -skip pattern (default: none)
#   COMPLEMENT_TIMEOUT  go test -timeout per package (default: 90m)
#   COMPLEMENT_OUT      where the logs go (default: bin/complement)
#   COMPLEMENT_IMAGE    the image (default: complement-hearth)
#   COMPLEMENT_SPAWN_HS_TIMEOUT_SECS  Complement's wait for a homeserver
#                       to start (default here: 60; a busy machine needs it)
set -eu

: "${COMPLEMENT_DIR:?set COMPLEMENT_DIR to a checkout of https://github.com/matrix-org/complement}"
pkgs=${COMPLEMENT_PKGS:-./tests ./tests/csapi}
skip=${COMPLEMENT_SKIP-}
out=${COMPLEMENT_OUT:-bin/complement}
mkdir -p "$out"
out=$(cd "$out" && pwd)

export COMPLEMENT_BASE_IMAGE="${COMPLEMENT_IMAGE:-complement-hearth}"
export COMPLEMENT_SPAWN_HS_TIMEOUT_SECS="${COMPLEMENT_SPAWN_HS_TIMEOUT_SECS:-60}"
# mautrix's packages need it for Hearth; Complement does not mind it.
export GOEXPERIMENT="${GOEXPERIMENT:-jsonv2}"

status=0
for pkg in $pkgs; do
	log="$out/$(echo "$pkg" | sed 's#^\./##; s#/#_#g').log"
	echo "complement: $pkg (log: $log)"
	# -p 1: one package at a time; each test starts its own containers.
	(
		cd "$COMPLEMENT_DIR"
		go test -v -count=1 -p 1 -timeout "${COMPLEMENT_TIMEOUT:-90m}" \
			${COMPLEMENT_RUN:+-run "$COMPLEMENT_RUN"} ${skip:+-skip "$skip"} "$pkg"
	) >"$log" 2>&1 || status=1
	# go test -v prints one "--- PASS/FAIL/SKIP: Name" line per test and
	# subtest; subtests' names have a slash.
	awk '
		/^ *--- (PASS|FAIL|SKIP): / {
			name = $3; res = $2; sub(":", "", res)
			all[res]++; n++
			if (name !~ /\//) { top[res]++; t++ }
		}
		/^panic: / { panicked = 1 }
		END {
			printf "  top-level tests: %d of %d passed (%d failed, %d skipped)\n", top["PASS"], t, top["FAIL"], top["SKIP"]
			printf "  tests and subtests: %d of %d passed (%d failed, %d skipped)\n", all["PASS"], n, all["FAIL"], all["SKIP"]
			if (panicked) print "  the test binary panicked: the counts stop there (see the log)"
		}' "$log"
	grep -E '^--- FAIL: ' "$log" | sed 's/^--- FAIL: /  failed: /; s/ (.*//' || true
done
exit $status
