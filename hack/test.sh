#!/usr/bin/env bash
# Runs every Go test suite once, verbosely into a log, and prints what a
# reviewer needs: failures, skipped tests with their reasons, the privileged
# suites that ran, csi-sanity's counts and one closing count line.
set -uo pipefail

cd "$(dirname "$0")/.."
log=$(mktemp /tmp/phantom-test.XXXXXX.log)
start=$(date +%s)

if [ "$(id -u)" != 0 ]; then
	echo "warning: not root: tmpfs, eBPF and csi-sanity suites will skip" >&2
fi

echo "go vet ./..."
go vet ./... || exit 1

echo "go test -count=1 -v ./... (log: $log)"
go test -count=1 -v -timeout 30m ./... >"$log" 2>&1
status=$?

echo
echo "== packages"
grep -E '^(ok|FAIL|---)\s' "$log" | grep -vE '^--- (PASS|SKIP)' || true

echo
echo "== failures"
grep -E -- '--- FAIL' "$log" || echo "none"

echo
echo "== skipped tests and why"
# go test -v prints a skip's reason on the line before the --- SKIP line
# (top-level tests) or after it (subtests), indented with its file:line.
awk '/--- SKIP/ { print; if (prev ~ /^ +[a-z_]+\.go:[0-9]+:/) print prev; getline; if ($0 ~ /^ +[a-z_]+\.go:[0-9]+:/) print; next } { prev = $0 }' "$log" | grep . || echo "none"

echo
echo "== privileged and kernel suites"
grep -hE '^(sanity|monitor suites|privileged):' "$log" || echo "no suite reported"

passed=$(grep -cE -- '--- PASS' "$log")
failed=$(grep -cE -- '--- FAIL' "$log")
skipped=$(grep -cE -- '--- SKIP' "$log")
echo
echo "took $(( $(date +%s) - start ))s"
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then
	# A build failure or panic has no --- FAIL line: show the end of the log.
	tail -n 60 "$log"
	failed=1
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
