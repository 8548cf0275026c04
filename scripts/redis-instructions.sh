#!/usr/bin/env bash
# Instructions Redis executes per processed job in the throughput bench: a repeatable measure
# of the Redis store's cost (wall-clock rates on a shared 2-core machine vary by ±30%).
#
# Runs redis-server under callgrind on a spare port, runs the throughput bench against it with
# BENCH_CALLGRIND set (the bench zeroes the counters when processing starts and dumps them when
# it ends) and prints the instructions of the dump divided by the jobs.
#
#   scripts/redis-instructions.sh [jobs]        (default 10000)
set -euo pipefail
jobs=${1:-10000}
port=${REDIS_INSTRUCTIONS_PORT:-6391}
dir=$(mktemp -d)
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; [ -n "${KEEP_DUMP:-}" ] && cp "$dir"/cg.out.* /tmp/ 2>/dev/null; rm -rf "$dir"' EXIT
cd "$dir"
valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out.%p" \
  redis-server --port "$port" --save '' --appendonly no >"$dir/redis.log" 2>&1 &
for _ in $(seq 100); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.2
done
cd - >/dev/null
BENCH_CALLGRIND=1 BENCH_STORES=redis BENCH_JOBS="$jobs" BENCH_REDIS="redis://127.0.0.1:$port" \
  cargo bench -p raindrop --bench throughput 2>&1 | grep 'redis:'
dump=$(ls -t "$dir"/cg.out.*.* 2>/dev/null | head -1)
total=$(grep -m1 '^summary:' "$dump" | awk '{print $2}')
echo "redis under callgrind: $total instructions while processing $jobs jobs = $((total / jobs)) per job"
