#!/usr/bin/env bash
# Smoke test of the benchmark for CI: each scenario once, at a tiny size, against our server
# (`tree` only against ours); then storm and fanout against two nodes of ours sharing the Redis
# at REDIS_URL (default redis://127.0.0.1:6379, which CI starts; without it the run fails).
# Exits non-zero if any scenario reports an error. Set SERVER=peer to run it against the Node peer.
# SKIP_BUILD=1 uses the binaries already built (e.g. while the tree does not build);
# SERVER_BIN=path runs that server binary instead of target/$PROFILE/broadcast-server.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/cluster.sh
source bench/cluster.sh

SERVER=${SERVER:-ours}
# PROFILE=debug reuses the artifacts of a debug `cargo build`/`cargo test` (faster in CI).
PROFILE=${PROFILE:-release}
case $PROFILE in
    release) flags=(--release) ;;
    debug) flags=() ;;
    *) echo "PROFILE must be release or debug" >&2; exit 2 ;;
esac
[[ "${SKIP_BUILD:-0}" == 1 ]] || cargo build "${flags[@]}" -p bench --bin bench
case $SERVER in
    ours)
        [[ "${SKIP_BUILD:-0}" == 1 ]] || cargo build "${flags[@]}" --bin broadcast-server
        # The start-up line that names the port is an info log.
        # Rate and per-client limits off, as in run.sh (one generator plays thousands of clients).
        node_cmd=(env RUST_LOG=info "${SERVER_BIN:-target/$PROFILE/broadcast-server}" --host 127.0.0.1 --max-channels 1000 --rate-sdp 0 --rate-ice 0 --rate-chat 0 --rate-join 0 --rate-strikes 0 --max-channels-per-socket 10000 --max-channels-per-ip 10000000 --max-connections-per-ip 0)
        cmd=("${node_cmd[@]}" --port 0)
        redis_check ;;
    peer)
        (cd bench/peers/node && npm ci --no-audit --no-fund --silent)
        cmd=(node bench/peers/node/server.js --host 127.0.0.1 --port 0 --max-channels 1000) ;;
    *) echo "SERVER must be ours or peer" >&2; exit 2 ;;
esac

log=$(mktemp)
"${cmd[@]}" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$log"; stop_nodes' EXIT
port=
for _ in $(seq 1 300); do
    port=$(grep -oE 'listening on https?://[0-9.]+:[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
    [[ -n "$port" ]] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done
[[ -n "$port" ]] || { echo "server did not report its address" >&2; exit 1; }

bench=("target/$PROFILE/bench" --url "http://127.0.0.1:$port" --pid "$pid" --label "$SERVER")
passed=0
failed=0
run() {
    if "${bench[@]}" "$@"; then
        passed=$((passed + 1))
    else
        echo "FAILED: bench $*" >&2
        failed=$((failed + 1))
    fi
}
run storm 20
run fanout 10 50 --rates 100,500 --min-step-secs 0
run idle 50 --hold-secs 2
# A generous memory tolerance: two-second phases are too short to tell a leak from noise.
run churn 20 --secs 2 --tolerance-kib 65536
# The relay tree is ours alone: the Node peer has none.
if [[ $SERVER == ours ]]; then
    run tree 50 --reparents 2
else
    echo "tree skipped: the Node peer has no relay tree"
fi

# Cluster mode: the broadcaster on the first node, viewers round-robin over both.
if [[ $SERVER == ours ]]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    logs=$(mktemp -d)
    if start_nodes "$logs/node" 2 "${node_cmd[@]}"; then
        echo "== 2 nodes on Redis (prefix $node_prefix): ${node_urls[*]}"
        bench=("target/$PROFILE/bench" --nodes "$(join_by , "${node_urls[@]}")" --pid "$(join_by , "${node_pids[@]}")" --label cluster-2)
        run storm 20
        run fanout 10 50 --rates 100,500 --min-step-secs 0
    else
        echo "FAILED: the two cluster nodes did not start" >&2
        failed=$((failed + 1))
    fi
    stop_nodes
    if ! redis_leftovers; then
        echo "FAILED: keys left in Redis" >&2
        failed=$((failed + 1))
    fi
    rm -rf "$logs"
else
    echo "cluster skipped: the Node peer has no cluster mode"
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
