#!/usr/bin/env bash
# Installs what the test suites need when it is missing: Chromium and coturn (Debian packages),
# the Python Socket.IO client, a Redis (7 or later) on 127.0.0.1:6379 for the cluster-mode tests
# (Debian's package, started here when nothing answers there). Node packages are installed by each suite
# from its lock file. Safe to run again: what is already there is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# A real TURN server (coturn) for the browser scenario that relays media through it. The scenario
# starts its own instance on a free loopback port; a system service the package may set up is
# not used.
if ! command -v turnserver >/dev/null 2>&1; then
  echo "installing coturn from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null
fi
if ! command -v openssl >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
for tool in node npm python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool: install it first" >&2; exit 1; }
done
python3 -m pip install -q --disable-pip-version-check -r tests/compat/python/requirements.txt
# The fuzzer's driver (the fuzz smoke run builds the fuzz target with it).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz from crates.io"
  cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi

# Cluster mode's tests need a Redis 7+ on 127.0.0.1:6379: use the one answering there, else
# install Debian's (when missing) and start a throwaway instance (no persistence).
REDIS_PORT=6379
REDIS_MIN_MAJOR=7
redis_answers() {
  command -v redis-cli >/dev/null 2>&1 &&
    [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
}
if ! redis_answers; then
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "installing redis-server from Debian's packages"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
fi
# Installing the package may have started Debian's own service on the same port.
if ! redis_answers; then
  redis_dir="${TMPDIR:-/tmp}/broadcast-server-redis"
  mkdir -p "$redis_dir"
  echo "starting redis-server on 127.0.0.1:$REDIS_PORT (log: $redis_dir/redis.log)"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir "$redis_dir" --logfile "$redis_dir/redis.log"
  for _ in $(seq 1 50); do
    redis_answers && break
    sleep 0.2
  done
  if ! redis_answers; then
    echo "redis-server did not answer PING on 127.0.0.1:$REDIS_PORT within 10 s; its log:" >&2
    tail -n 20 "$redis_dir/redis.log" >&2 || true
    exit 1
  fi
fi
redis_version="$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server |
  sed -n 's/^redis_version:\([0-9.]*\).*/\1/p')"
redis_major="${redis_version%%.*}"
case "$redis_major" in '' | *[!0-9]*) redis_major=0 ;; esac
if [ "$redis_major" -lt "$REDIS_MIN_MAJOR" ]; then
  echo "the Redis on 127.0.0.1:$REDIS_PORT is version ${redis_version:-unknown}; cluster mode needs $REDIS_MIN_MAJOR or later" >&2
  exit 1
fi
