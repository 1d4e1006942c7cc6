#!/usr/bin/env bash
# The whole test suite: unit and integration tests, then the redis-cli smoke test against a
# freshly built server.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo build --release --bins
cargo test --release
scripts/smoke.sh
