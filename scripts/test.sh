#!/usr/bin/env bash
# The whole test suite: unit and integration tests, the redis-cli smoke test against a freshly
# built server, then the real client libraries and the examples/ recipes.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo build --release --bins
cargo test --release
scripts/smoke.sh
scripts/client-tests.sh
