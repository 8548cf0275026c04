#!/usr/bin/env bash
# The whole test suite, from a fresh checkout. Installs and starts what the tests need, then runs
# every test of every crate (unit, integration, snapshot, property, CLI and doc tests).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed; install Rust from https://rustup.rs" >&2
  exit 1
fi

cargo test --workspace --locked "$@"
# OpenTelemetry is a feature; its test runs with it on.
cargo test -p raindrop --locked --features otel --test otel "$@"
