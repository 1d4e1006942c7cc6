#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: redis-cli (redis-tools).
# Safe to run again; skips what is already there.
set -euo pipefail

if ! command -v redis-cli >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-tools >/dev/null
fi
redis-cli --version
