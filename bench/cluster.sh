# Cluster mode for the benchmark scripts (sourced by run.sh and smoke.sh): N nodes of our
# server sharing one Redis under a fresh key prefix, ready once `/healthz` says so, stopped by
# PID, and Redis checked to hold nothing of theirs afterwards. Only keys under the run's own
# prefix are ever deleted.
#
#   REDIS_URL=redis://127.0.0.1:6379   the Redis the nodes share

REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
# How long keys under a stopped cluster's prefix may take to go (keys with a time to live,
# e.g. a node's heartbeat, expire on their own).
REDIS_LEFTOVER_GRACE_SECS=5

node_pids=()
node_urls=()
node_prefix=

# redis_check: fails, saying why, unless Redis answers PING.
redis_check() {
    if ! command -v redis-cli >/dev/null 2>&1; then
        echo "cluster runs need redis-cli (apt-get install redis-tools) and a Redis at $REDIS_URL" >&2
        return 1
    fi
    local answer
    answer=$(redis-cli -u "$REDIS_URL" ping 2>&1 || true)
    if [[ $answer != PONG ]]; then
        echo "Redis is not reachable at $REDIS_URL (PING answered: $answer); cluster runs need it: start redis-server, or set REDIS_URL" >&2
        return 1
    fi
}

# redis_cpu_secs: Redis's own CPU time so far (user + system, from INFO).
redis_cpu_secs() {
    redis-cli -u "$REDIS_URL" info cpu 2>/dev/null | tr -d '\r' |
        awk -F: '$1 == "used_cpu_user" || $1 == "used_cpu_sys" { s += $2 } END { printf "%.2f", s }'
}

# A TCP port free on 127.0.0.1 right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_nodes LOG_BASE COUNT CMD...: COUNT 0 starts one node in memory, COUNT >= 1 that many
# nodes on Redis under a fresh prefix (in node_prefix). CMD is the server command without
# --port. Fills node_pids and node_urls; returns once every node's /healthz says it is ready.
start_nodes() {
    local log_base=$1 count=$2
    shift 2
    local n=$count ready='"status":"ok"' cluster=()
    node_pids=()
    node_urls=()
    node_prefix=
    if ((count == 0)); then
        n=1
    else
        node_prefix=bench-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
        cluster=(--redis-url "$REDIS_URL" --redis-prefix "$node_prefix")
        ready='"mode":"cluster"'
    fi
    local i port
    for ((i = 1; i <= n; i++)); do
        port=$(free_port)
        "$@" --port "$port" "${cluster[@]}" >"$log_base-$i.log" 2>&1 &
        node_pids+=($!)
        node_urls+=("http://127.0.0.1:$port")
    done
    for ((i = 0; i < n; i++)); do
        wait_ready "${node_urls[$i]}" "${node_pids[$i]}" "$log_base-$((i + 1)).log" "$ready" || return 1
    done
}

# wait_ready URL PID LOG WANT: polls URL/healthz until it answers 200 with WANT in its body.
wait_ready() {
    local url=$1 pid=$2 log=$3 want=$4
    for _ in $(seq 1 300); do
        if curl -fsS --max-time 1 "$url/healthz" 2>/dev/null | grep -qF "$want"; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "node $url exited before it was ready:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "node $url: /healthz did not show $want within 30 s; see $log" >&2
    return 1
}

# stop_nodes: SIGTERM to every node, SIGKILL to one still running 20 s later (a node's own
# shutdown grace is 10 s by default: it waits for its sockets' departures to be recorded).
stop_nodes() {
    local pid
    for pid in "${node_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${node_pids[@]}"; do
        for _ in $(seq 1 200); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "node pid $pid still running 20 s after SIGTERM: killed" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    node_pids=()
}

# redis_leftovers: after stop_nodes, waits for the keys under the nodes' prefix to go; names
# and deletes those that stay, and then fails.
redis_leftovers() {
    [[ -n $node_prefix ]] || return 0
    local keys
    for _ in $(seq 1 $((REDIS_LEFTOVER_GRACE_SECS * 4))); do
        keys=$(redis-cli -u "$REDIS_URL" --scan --pattern "$node_prefix*")
        [[ -z $keys ]] && return 0
        sleep 0.25
    done
    echo "Redis still holds $(wc -l <<<"$keys") keys under $node_prefix ${REDIS_LEFTOVER_GRACE_SECS} s after the nodes stopped (deleting them):" >&2
    head -20 <<<"$keys" >&2
    xargs -d '\n' -n 100 redis-cli -u "$REDIS_URL" del <<<"$keys" >/dev/null
    return 1
}

# join_by SEP WORDS...: the words joined by SEP (for --nodes and --pid).
join_by() {
    local IFS=$1
    shift
    echo "$*"
}
