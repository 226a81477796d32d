#!/usr/bin/env bash
# The benchmark: our server and the Node.js socket.io peer, measured by the same generator in the
# same run, one after the other on loopback; then a side-by-side table of every figure.
#
# Sizes come from the environment (defaults: moderate sizes that fit a 2-core machine):
#   STORM=2000 FANOUT_VIEWERS=200 FANOUT_MESSAGES=2000 IDLE=5000 IDLE_SECS=30 CHURN=500 CHURN_SECS=15
#   TREE=2000 TREE_REPARENTS=5  (relay tree; ours only: the Node peer has no relay tree)
#   RELAY_DIRECT= RELAY_FANOUT=  (our server's D and F for `tree`; empty = the server's defaults)
#   FANOUT_RATES=  (comma list of messages/s; empty = automatic doubling sweep)
#   FANOUT_START=20000  (first step of the automatic sweep, in deliveries/s)
#   SERVERS="ours peer cluster"  (which to run; `cluster`: see below)
#   SKIP_BUILD=1         (use the release binaries already in target/release)
#   SERVER_BIN=path      (our server binary; default target/release/broadcast-server)
#   CLUSTER_MODES="memory redis-1 redis-2"  REDIS_URL=redis://127.0.0.1:6379
# `cluster` runs our server's storm (also with 20 viewers at a time) and fanout (same sizes),
# plus two light probes of the latency per message (storm one negotiation at a time, a slow
# fanout), three ways: one node in memory (`memory`), one node on Redis (`redis-1`), two nodes
# on Redis (`redis-2`: the broadcaster on the first node, viewers round-robin over both). Each
# run has a fresh server and a fresh Redis prefix, and Redis must hold nothing of it once the
# nodes stopped.
# Results (JSON lines and the tables) go to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/cluster.sh
source bench/cluster.sh

STORM=${STORM:-2000}
FANOUT_VIEWERS=${FANOUT_VIEWERS:-200}
FANOUT_MESSAGES=${FANOUT_MESSAGES:-2000}
FANOUT_RATES=${FANOUT_RATES:-}
FANOUT_START=${FANOUT_START:-20000}
IDLE=${IDLE:-5000}
IDLE_SECS=${IDLE_SECS:-30}
CHURN=${CHURN:-500}
CHURN_SECS=${CHURN_SECS:-15}
TREE=${TREE:-2000}
TREE_REPARENTS=${TREE_REPARENTS:-5}
RELAY_DIRECT=${RELAY_DIRECT:-}
RELAY_FANOUT=${RELAY_FANOUT:-}
SERVERS=${SERVERS:-ours peer cluster}
CLUSTER_MODES=${CLUSTER_MODES:-memory redis-1 redis-2}
case " $SERVERS " in *" cluster "*) cluster=1 ;; *) cluster=0 ;; esac
# Before any build or run: a cluster run without Redis would fail only at the end.
if ((cluster)); then redis_check; fi

# SKIP_BUILD=1 uses the binaries already built (e.g. while the tree does not build).
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release -p bench --bin bench
    cargo build --release --bin broadcast-server
fi
case " $SERVERS " in *" peer "*) (cd bench/peers/node && npm ci --no-audit --no-fund --silent) ;; esac

# Every socket is a file descriptor on both sides.
ulimit -n "$(ulimit -Hn)"

out=target/bench
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)

server_pid=
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap 'stop_server; stop_nodes' EXIT

# start_server LOG CMD...: starts CMD, waits for its `listening on http://IP:PORT` line.
start_server() {
    local log=$1
    shift
    # A stale log would name the previous server's port: start from none.
    rm -f "$log"
    "$@" >"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 300); do
        if port=$(grep -oE 'listening on https?://[0-9.]+:[0-9]+' "$log" 2>/dev/null | grep -oE '[0-9]+$'); then
            return 0
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "server exited:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "server did not report its address" >&2
    exit 1
}

# Our server, without --port. Per-connection logs off (the peer logs nothing, so both do the
# same work per event); the start-up line that names the port stays. Rate and per-client
# limits are off: the generator is one client doing the work of thousands, and the peer has none.
ours_node=(env RUST_LOG="${RUST_LOG:-warn,broadcast_server=info,broadcast_server::signaling=warn}"
    "${SERVER_BIN:-target/release/broadcast-server}" --host 127.0.0.1 --max-channels 100000 --rate-sdp 0 --rate-ice 0 --rate-chat 0 --rate-join 0 --rate-strikes 0 --max-channels-per-socket 10000 --max-channels-per-ip 10000000 --max-connections-per-ip 0)

# Each scenario gets a freshly started server, so no scenario measures another's leftovers
# (memory figures especially: a process's RSS rarely shrinks back).
scenarios=(
    "storm $STORM"
    "fanout $FANOUT_VIEWERS $FANOUT_MESSAGES --start-deliveries $FANOUT_START${FANOUT_RATES:+ --rates $FANOUT_RATES}"
    "idle $IDLE --hold-secs $IDLE_SECS"
    "churn $CHURN --secs $CHURN_SECS"
    "tree $TREE --reparents $TREE_REPARENTS"
)
# The tree's shape is set on the server: D and F only when given.
tree_flags=(${RELAY_DIRECT:+--relay-direct "$RELAY_DIRECT"} ${RELAY_FANOUT:+--relay-fanout "$RELAY_FANOUT"})

# The machine may be shared: the load average says how quiet it was.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
status=0
for label in $SERVERS; do
    case $label in
        ours) cmd=("${ours_node[@]}" --port 0) ;;
        peer) cmd=(node bench/peers/node/server.js --host 127.0.0.1 --port 0 --max-channels 100000) ;;
        cluster) continue ;; # below, after ours and peer
        *) echo "unknown server $label (ours|peer|cluster)" >&2; exit 2 ;;
    esac
    rm -f "$out/$label.jsonl"
    for scenario in "${scenarios[@]}"; do
        extra=()
        if [[ ${scenario%% *} == tree ]]; then
            if [[ $label == peer ]]; then
                echo "== peer: tree skipped (the Node peer has no relay tree; the table shows ours alone)"
                continue
            fi
            extra=("${tree_flags[@]}")
        fi
        start_server "$out/$label-${scenario%% *}.log" "${cmd[@]}" "${extra[@]}"
        echo "== $label: ${cmd[*]} ${extra[*]} (pid $server_pid, port $port): bench $scenario"
        sleep 1
        # shellcheck disable=SC2086 # the scenario is a word list on purpose
        target/release/bench $scenario --url "http://127.0.0.1:$port" --pid "$server_pid" \
            --label "$label" --json-out "$out/$label.jsonl" || status=1
        stop_server
        sleep 2
    done
done

if [[ " $SERVERS " == *" ours "* && " $SERVERS " == *" peer "* && -f "$out/ours.jsonl" && -f "$out/peer.jsonl" ]]; then
    {
        echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        if [[ -n "${SERVER_BIN:-}" ]]; then
            echo "- Server: the binary given in SERVER_BIN"
        else
            echo "- Server: release build of commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ' with local changes')"
        fi
        echo "- Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
        echo "- Load average before the run: $load_before"
        echo "- Node: $(node --version), socket.io $(node -p 'require("./bench/peers/node/node_modules/socket.io/package.json").version')"
        echo "- Command: SERVERS=\"$SERVERS\" STORM=$STORM FANOUT_VIEWERS=$FANOUT_VIEWERS FANOUT_MESSAGES=$FANOUT_MESSAGES FANOUT_START=$FANOUT_START IDLE=$IDLE IDLE_SECS=$IDLE_SECS CHURN=$CHURN CHURN_SECS=$CHURN_SECS TREE=$TREE TREE_REPARENTS=$TREE_REPARENTS${RELAY_DIRECT:+ RELAY_DIRECT=$RELAY_DIRECT}${RELAY_FANOUT:+ RELAY_FANOUT=$RELAY_FANOUT}${FANOUT_RATES:+ FANOUT_RATES=$FANOUT_RATES} bench/run.sh"
        echo
        target/release/bench compare "$out/ours.jsonl" "$out/peer.jsonl"
    } | tee "$out/table-$stamp.md"
fi

if ((cluster)); then
    cluster_scenarios=(
        "storm $STORM"
        # The same crowd arriving 20 at a time instead of 200.
        "storm $STORM --concurrency 20"
        "fanout $FANOUT_VIEWERS $FANOUT_MESSAGES --start-deliveries $FANOUT_START${FANOUT_RATES:+ --rates $FANOUT_RATES}"
        # Light probes of the time a message takes: one negotiation at a time, and a slow chat.
        "storm 200 --concurrency 1"
        "fanout 50 100 --rates 50 --min-step-secs 0"
    )
    redis_cpu=()
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    for mode in $CLUSTER_MODES; do
        case $mode in
            memory) count=0 ;;
            redis-1) count=1 ;;
            redis-2) count=2 ;;
            *) echo "unknown cluster mode $mode (memory|redis-1|redis-2)" >&2; exit 2 ;;
        esac
        rm -f "$out/$mode.jsonl"
        for i in "${!cluster_scenarios[@]}"; do
            scenario=${cluster_scenarios[$i]}
            start_nodes "$out/$mode-$((i + 1))-${scenario%% *}" "$count" "${ours_node[@]}"
            echo "== $mode: ${#node_urls[@]} node(s) ${node_urls[*]} (pids ${node_pids[*]}${node_prefix:+, Redis prefix $node_prefix}): bench $scenario"
            sleep 1
            cpu_before=$(redis_cpu_secs)
            # shellcheck disable=SC2086 # the scenario is a word list on purpose
            target/release/bench $scenario --nodes "$(join_by , "${node_urls[@]}")" \
                --pid "$(join_by , "${node_pids[@]}")" --label "$mode" --json-out "$out/$mode.jsonl" || status=1
            cpu_after=$(redis_cpu_secs)
            stop_nodes
            redis_leftovers || status=1
            if ((count > 0)); then
                redis_cpu+=("$mode $scenario: $(awk -v a="$cpu_before" -v b="$cpu_after" 'BEGIN { printf "%.2f", b - a }') s")
            fi
            sleep 2
        done
    done

    modes=($CLUSTER_MODES)
    if ((${#modes[@]} > 1)); then
        {
            echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
            if [[ -n "${SERVER_BIN:-}" ]]; then
                echo "- Server: the binary given in SERVER_BIN"
            else
                echo "- Server: release build of commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ' with local changes')"
            fi
            echo "- Machine: $(nproc) cores (generator, every node and Redis share them), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
            echo "- Load average before the run: $load_before"
            echo "- Redis: $(redis-cli -u "$REDIS_URL" info server | tr -d '\r' | awk -F: '$1 == "redis_version" { print $2 }') at $REDIS_URL (heartbeat and other settings: the server's defaults)"
            echo "- Command: SERVERS=cluster CLUSTER_MODES=\"$CLUSTER_MODES\" STORM=$STORM FANOUT_VIEWERS=$FANOUT_VIEWERS FANOUT_MESSAGES=$FANOUT_MESSAGES FANOUT_START=$FANOUT_START${FANOUT_RATES:+ FANOUT_RATES=$FANOUT_RATES} bench/run.sh"
            echo "- Redis CPU (INFO used_cpu_user + used_cpu_sys) during each run on Redis: $(join_by ';' "${redis_cpu[@]}" | sed 's/;/; /g')"
            echo
            "target/release/bench" ratios $(printf "$out/%s.jsonl " "${modes[@]}")
        } | tee "$out/cluster-table-$stamp.md"
    fi
fi
exit $status
