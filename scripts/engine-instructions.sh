#!/usr/bin/env bash
# Instructions the engine executes per processed job in the throughput bench on the memory store:
# a repeatable measure of the engine's own cost (claim, spawn, timeout, heartbeat, outcome
# batching), where wall-clock rates on a shared 2-core machine vary by ±30%.
#
# Runs the throughput bench itself under callgrind with BENCH_STORES=memory and
# BENCH_CALLGRIND=self (the bench zeroes its own counters when processing starts and dumps them
# when it ends) and prints the instructions of that dump divided by the jobs. Enqueueing, the
# runtime's start-up and the final listing are outside the dump.
#
#   scripts/engine-instructions.sh [jobs]        (default 10000)
#
# BINARY=path runs that bench binary; otherwise the throughput bench is built first (cargo bench
# --no-run, in CARGO_TARGET_DIR if set) and its executable taken from cargo's JSON messages.
# KEEP_DUMP=1 copies the dumps to /tmp for callgrind_annotate.
set -euo pipefail
jobs=${1:-10000}
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${BINARY:-}" ]; then
  BINARY=$(cd "$root" && cargo bench -p raindrop --bench throughput --no-run --message-format=json 2>/dev/null |
    grep '"executable":"[^"]*"' | grep '"name":"throughput"' |
    sed 's/.*"executable":"\([^"]*\)".*/\1/' | tail -1)
  [ -n "$BINARY" ] || { echo "could not build the throughput bench (try BINARY=...)" >&2; exit 1; }
fi
dir=$(mktemp -d)
trap '[ -n "${KEEP_DUMP:-}" ] && cp "$dir"/cg.out* /tmp/ 2>/dev/null; rm -rf "$dir"' EXIT
# From runtime/, as cargo runs benches.
(cd "$root/runtime" &&
  BENCH_CALLGRIND=self BENCH_STORES=memory BENCH_JOBS="$jobs" \
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$BINARY" --bench 2>"$dir/valgrind.log") |
  grep 'memory:' || { cat "$dir/valgrind.log" >&2; exit 1; }
# callgrind_control -d writes the part since the -z as cg.out.1; the rest goes to cg.out at exit.
dump="$dir/cg.out.1"
[ -f "$dump" ] || { echo "no dump $dump (did the bench call callgrind_control?)" >&2; cat "$dir/valgrind.log" >&2; exit 1; }
total=$(grep -m1 '^summary:' "$dump" | awk '{print $2}')
echo "engine (memory store) under callgrind: $total instructions while processing $jobs jobs = $((total / jobs)) per job"
