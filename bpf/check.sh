#!/usr/bin/env bash
# Verifies that the committed eBPF objects and Go bindings in pkg/monitor
# match what the C sources in bpf/ produce: regenerates them into a
# temporary folder and compares file by file.
set -euo pipefail

bpf_dir=$(cd "$(dirname "$0")" && pwd)
monitor_dir=$(cd "$bpf_dir/../pkg/monitor" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

make -s -C "$bpf_dir" generate OUT="$tmp"

status=0
for generated in "$tmp"/*; do
	name=$(basename "$generated")
	if ! cmp -s "$generated" "$monitor_dir/$name"; then
		echo "bpf check: pkg/monitor/$name is stale or missing; run 'make -C bpf generate' and commit the result" >&2
		status=1
	fi
done
for committed in "$monitor_dir"/*_bpfel*.go "$monitor_dir"/*_bpfel*.o; do
	[ -e "$committed" ] || continue
	name=$(basename "$committed")
	if [ ! -e "$tmp/$name" ]; then
		echo "bpf check: pkg/monitor/$name is not produced by bpf/ any more; delete it" >&2
		status=1
	fi
done
if [ "$status" -eq 0 ]; then
	echo "bpf check: generated files are current"
fi
exit "$status"
