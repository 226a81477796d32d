#!/usr/bin/env bash
# Compatibility suites: the real server driven by the official Socket.IO clients.
#   node/    socket.io-client 4.5.4 (what legacy pages pin) and the newest 4.x, `node --test`
#   python/  python-socketio's `socketio.Client`, pytest
#
# Usage: tests/compat/run.sh            (from anywhere)
# Env:   SERVER_BIN   server binary (default: target/release/broadcast-server of this repo,
#                     built with `cargo build --release` when absent)
#        SIO_CLIENTS  restrict the Node suite to `sio454` or `siolatest`
#        PYTHON       Python interpreter (default python3)
# Installs what is missing (`npm ci`, `pip install -r requirements.txt`), runs both suites and
# fails if either fails.
set -uo pipefail

COMPAT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$COMPAT_DIR/../.." && pwd)"
PYTHON="${PYTHON:-python3}"

if [[ -n "${SERVER_BIN:-}" ]]; then
  SERVER_BIN="$(cd "$(dirname "$SERVER_BIN")" && pwd)/$(basename "$SERVER_BIN")" || exit 2
else
  SERVER_BIN="$REPO_DIR/target/release/broadcast-server"
  if [[ ! -x "$SERVER_BIN" ]]; then
    echo "== building the server (cargo build --release)"
    (cd "$REPO_DIR" && cargo build --release --bin broadcast-server) || exit 2
  fi
fi
if [[ ! -x "$SERVER_BIN" ]]; then
  echo "server binary not found or not executable: $SERVER_BIN" >&2
  exit 2
fi
export SERVER_BIN

echo "== node: dependencies"
cd "$COMPAT_DIR/node" || exit 2
if ! node -e '
  const lock = require("./package-lock.json").packages;
  for (const name of ["sio454", "siolatest"]) {
    const want = lock[`node_modules/${name}`].version;
    const have = require(`./node_modules/${name}/package.json`).version;
    if (have !== want) process.exit(1);
  }' 2>/dev/null; then
  npm ci --no-audit --no-fund || exit 2
fi

echo "== python: dependencies"
cd "$COMPAT_DIR/python" || exit 2
if ! "$PYTHON" - <<'EOF' 2>/dev/null
import re, sys
from importlib.metadata import version
for line in open("requirements.txt"):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, pinned = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line).groups()
    if version(name) != pinned:
        sys.exit(1)
EOF
then
  "$PYTHON" -m pip install -r requirements.txt || exit 2
fi

echo "== node suite (server: $SERVER_BIN)"
cd "$COMPAT_DIR/node" || exit 2
node --test test/*.test.js
node_status=$?

echo "== python suite (server: $SERVER_BIN)"
cd "$COMPAT_DIR/python" || exit 2
"$PYTHON" -m pytest -v
python_status=$?

echo "== compat: node $([[ $node_status == 0 ]] && echo passed || echo "FAILED ($node_status)"), python $([[ $python_status == 0 ]] && echo passed || echo "FAILED ($python_status)")"
[[ $node_status == 0 && $python_status == 0 ]]
