#!/usr/bin/env bash
# Runs the throughput bench over worker concurrencies (and, against Redis, both thread counts)
# and writes one CSV row per store and run: the figures behind docs/throughput.svg
# (scripts/plot-throughput.py draws it).
#
#   scripts/throughput-matrix.sh [out.csv]      (default docs/throughput.csv; ~4 minutes)
#
# RUNS (default 3) and CONCURRENCIES (default "16 64 256 1024") change the grid.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/throughput.csv}
runs=${RUNS:-3}
concurrencies=${CONCURRENCIES:-16 64 256 1024}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# One CSV row per store in the bench output `$log`.
rows() {
  python3 - "$1" "$2" "$log" <<'PY'
import re, sys
concurrency, run, path = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path, encoding="utf-8").read()
for store in ("memory", "sqlite", "redis"):
    threads = re.search(rf"{store}: the bench process runs (\d+)", text)
    if not threads:
        continue
    rate = re.search(rf"{store}: \d+ jobs .*processed\s+(\d+)", text).group(1)
    client = re.search(rf"{store}: while processing, this process used ([\d.]+)", text).group(1)
    redis_us = redis_busy = ""
    if store == "redis":
        m = re.search(r"redis: while processing, ([\d.]+) µs of Redis CPU per job.*Redis (\d+)% of a core", text)
        redis_us, redis_busy = m.group(1), m.group(2)
    print(f"{store},{concurrency},{threads.group(1)},{run},{rate},{redis_us},{redis_busy},{client}")
PY
}

echo "store,concurrency,threads,run,jobs_per_s,redis_us_per_job,redis_busy_pct,bench_us_per_job" >"$out"
for concurrency in $concurrencies; do
  for run in $(seq "$runs"); do
    BENCH_CONCURRENCY=$concurrency BENCH_STORES=memory,sqlite,redis \
      cargo bench -q -p raindrop --bench throughput >"$log" 2>/dev/null
    rows "$concurrency" "$run" >>"$out"
  done
done
# Against Redis, the bench leaves Redis a core by default; this is the run that does not.
for run in $(seq "$runs"); do
  BENCH_THREADS=$(nproc) BENCH_CONCURRENCY=256 BENCH_STORES=redis \
    cargo bench -q -p raindrop --bench throughput >"$log" 2>/dev/null
  rows 256 "$run" >>"$out"
done
echo "wrote $out ($(($(wc -l <"$out") - 1)) rows)"
