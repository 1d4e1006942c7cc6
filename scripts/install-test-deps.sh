#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, skipping what is already there:
# - redis-cli and redis-benchmark (redis-tools), tmux for the interactive redis-cli test;
# - redis-server, which the unit tests ask for Redis's own answers (CLUSTER KEYSLOT);
# - redis-py 8, valkey-py (pinned), pytest and pytest-asyncio for tests/clients/*.py;
# - ioredis and node-redis for tests/clients/node (npm ci from its package-lock.json, pinned);
# - Go and redigo from Debian (golang-go, golang-github-gomodule-redigo-dev) for examples/once.go,
#   built in GOPATH mode from /usr/share/gocode, without the module proxy;
# - systemd-analyze (systemd) to check deploy/baton.service;
# - protoc (protobuf-compiler), which the etcd-client crate's build script needs to build bench/.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

REDIGO=/usr/share/gocode/src/github.com/gomodule/redigo/redis
VALKEY_PY=6.2.0
packages=()
{ command -v redis-cli && command -v redis-benchmark; } >/dev/null 2>&1 || packages+=(redis-tools)
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
command -v tmux >/dev/null 2>&1 || packages+=(tmux)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
{ command -v node && command -v npm; } >/dev/null 2>&1 || packages+=(nodejs npm)
command -v go >/dev/null 2>&1 || packages+=(golang-go)
[ -d "$REDIGO" ] || packages+=(golang-github-gomodule-redigo-dev)
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
command -v protoc >/dev/null 2>&1 || packages+=(protobuf-compiler)
if [ ${#packages[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi

python_ok() {
    python3 - "$VALKEY_PY" <<'EOF' 2>/dev/null
import sys, pytest, pytest_asyncio, redis, valkey
assert int(redis.__version__.split(".")[0]) == 8
assert valkey.__version__ == sys.argv[1]
EOF
}
if ! python_ok; then
    pip_flags=(--quiet --disable-pip-version-check --root-user-action=ignore)
    # A system Python under Debian's PEP 668 marker refuses plain pip installs.
    if python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        pip_flags+=(--break-system-packages)
    fi
    python3 -m pip install "${pip_flags[@]}" 'redis>=8,<9' "valkey==$VALKEY_PY" 'pytest>=8' 'pytest-asyncio>=0.24'
    python_ok
fi

node_dir=tests/clients/node
if [ ! -d "$node_dir/node_modules/ioredis" ] || [ ! -d "$node_dir/node_modules/redis" ] || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

redis-cli --version
redis-benchmark --version
tmux -V
python3 -c 'import redis, valkey, pytest; print("redis-py", redis.__version__, "/ valkey-py", valkey.__version__, "/ pytest", pytest.__version__)'
node_version() { node -p 'require("./'"$node_dir"'/node_modules/'"$1"'/package.json").version'; }
echo "node $(node --version) / ioredis $(node_version ioredis) / node-redis $(node_version redis)"
echo "$(go version) / redigo $(dpkg-query -W -f='${Version}' golang-github-gomodule-redigo-dev 2>/dev/null || echo "in $REDIGO")"
systemd-analyze --version | head -1
protoc --version
