#!/usr/bin/env bash
# The whole test suite: unit and integration tests of every crate in the workspace, the README's
# run command as written, the redis-cli smoke test against a freshly built server, then the real
# client libraries and the examples/ recipes, and a short smoke of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo build --release --bins
scripts/readme-run.sh
cargo test --release --workspace
scripts/smoke.sh
scripts/client-tests.sh
scripts/bench-smoke.sh
