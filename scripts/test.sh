#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: starts Redis if it is installed and not running,
# says which tests will skip for want of Redis or Chromium, then runs every test of every crate
# (unit, integration, snapshot, property, CLI and doc tests). It installs nothing; `.ci/run`
# installs what is missing (redis-server, chromium, node) before it calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed; install Rust from https://rustup.rs" >&2
  exit 1
fi

redis_url="${RAINDROP_TEST_REDIS:-redis://127.0.0.1:6379}"
redis_answers() { command -v redis-cli >/dev/null 2>&1 && redis-cli -u "$redis_url" ping 2>/dev/null | grep -q PONG; }
if ! redis_answers && command -v redis-server >/dev/null 2>&1 && [ -z "${RAINDROP_TEST_REDIS:-}" ]; then
  echo "test.sh: starting redis-server on 127.0.0.1:6379 (nothing saved to disk)"
  redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
  for _ in $(seq 100); do redis_answers && break; sleep 0.1; done
fi
if ! redis_answers; then
  echo "test.sh: no Redis at $redis_url: the Redis and Redis Cluster tests skip (install redis-server, or set RAINDROP_TEST_REDIS)"
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  echo "test.sh: no Chromium: the dashboard's browser test skips (install chromium, and node for its driver)"
fi
codegen_venv="${RAINDROP_CODEGEN_VENV:-$HOME/.cache/raindrop-ci/venv-codegen}"
if [ ! -x "$codegen_venv/bin/openapi-python-client" ]; then
  echo "test.sh: no openapi-python-client in $codegen_venv: the generated-client test skips (.ci/run installs it there)"
fi

cargo test --workspace --locked "$@"
# OpenTelemetry is a feature; its test runs with it on.
cargo test -p raindrop --locked --features otel --test otel "$@"
