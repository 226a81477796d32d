#!/usr/bin/env python3
"""Heap held per idle connection, by owner, from a heaptrack recording of the server.

Record: run the server under `heaptrack -o FILE`, hold `bench idle N`, and `kill -9` the
server while the sockets are held (what heaptrack then reports as leaked is exactly what was
live at that moment). Then:

    bench/heap-owners.py FILE.zst N [--binary target/release/broadcast-server --base 0x...]

prints bytes per connection for each owner (allocations are assigned by the frames of their
call stacks, first matching rule wins), minus nothing: the empty server's own heap (a few
hundred KB) is part of "other", divided by N like the rest. `--base` (the binary's load address,
from the server's /proc/PID/maps) lets frames heaptrack could not name be named from the
binary's symbol table. Needs heaptrack_print and c++filt (binutils, which demangles Rust).
"""

import argparse
import bisect
import collections
import re
import subprocess
import tempfile

# (owner, every frame substring that must appear in the stack). Order matters.
RULES = [
    ("engineioxide: outgoing packet queue and heartbeat channel (tokio mpsc)",
     ["engineioxide::socket::Socket<D>::new", "mpsc::chan::channel"]),
    # The same where the build inlined `Socket::new` into its caller.
    ("engineioxide: outgoing packet queue and heartbeat channel (tokio mpsc)",
     ["engineioxide::engine::EngineIo<H>::create_", "mpsc::chan::channel"]),
    ("engineioxide: socket (Socket, watch channel, session map)",
     ["engineioxide::socket::Socket<D>::new"]),
    ("engineioxide: socket (Socket, watch channel, session map)",
     ["engineioxide::engine::EngineIo<H>::create_session"]),
    ("engineioxide: heartbeat task", ["spawn_heartbeat"]),
    # The tasks by where they are spawned, before any rule on the frames they are spawned under
    # (the reader task is spawned inside the request's service call, under `detach_head`). Where
    # the build inlined `spawn_heartbeat`, its task shares the writer's stack.
    ("engineioxide: WebSocket reader task",
     ["socketioxide::service::SocketIoService", "tokio::task::spawn::spawn"]),
    ("engineioxide: WebSocket writer task (and heartbeat task, if its spawn is inlined)",
     ["engineioxide::transport::ws::on_init", "tokio::task::spawn::spawn"]),
    ("engineioxide: WebSocket reader task", ["engineioxide::service::parser::dispatch_req", "new_task"]),
    ("engineioxide: WebSocket writer task", ["engineioxide::transport::ws::new_req", "new_task"]),
    ("engineioxide: heartbeat task", ["tokio::time::interval::internal_interval_at"]),
    ("tungstenite: read buffer and frame state", ["tungstenite::protocol::WebSocketContext"]),
    ("tungstenite: read buffer and frame state", ["tokio_tungstenite::"]),
    ("engineioxide: WebSocket split into two halves", ["engineioxide::transport::ws::new_req"]),
    ("ours: event queue (mailbox)", ["broadcast_server::signaling::mailbox"]),
    ("socketioxide: the socket's own room (local adapter)", ["CoreLocalAdapter"]),
    ("socketioxide: extensions (ours: public id, address, flags, key)",
     ["socketioxide::extensions::Extensions::insert"]),
    ("socketioxide: socket and its handlers", ["socketioxide::socket::Socket<A>::on_"]),
    ("ours: public id, event queue handle (connect handler)", ["broadcast_server::signaling::OnConnect<A> as socketioxide::handler::connect::ConnectHandler"]),
    # Ours, where the build inlined our connect handler into socketioxide's.
    ("ours: public ids for the CONNECT rewrite", ["broadcast_server::connection::PublicIds::insert"]),
    ("ours: public id, event queue handle (connect handler)",
     ["broadcast_server::registry::ids::SocketId::generate"]),
    ("ours: public id, event queue handle (connect handler)",
     ["ErasedConnectHandler<A>>::call_middleware"]),
    ("socketioxide: socket and its handlers", ["socketioxide::client::Client<A>::sock_connect"]),
    ("kept request: header map", ["HeaderMap<T>::try_reserve"]),
    ("kept request: extensions (hyper upgrade, axum)", ["broadcast_server::http::kept_extensions"]),
    ("kept request: copies of the head (detach_head)", ["detach_head"]),
    ("kept request: copies of the head (detach_head)", ["broadcast_server::http::owned_uri"]),
    ("kept request: copies of the head (detach_head)", ["axum::middleware::map_request::MapRequest"]),
    ("kept request: extensions (hyper upgrade, axum)", ["http::extensions::Extensions::insert"]),
    ("kept request: extensions (hyper upgrade, axum)", ["hyper::upgrade::pending"]),
    ("kept request: copies (Parts clone)", ["<http::request::Parts as core::clone::Clone>"]),
    ("tokio: I/O registration", ["RegistrationSet::allocate"]),
    ("ours: public ids for the CONNECT rewrite", ["PublicIds"]),
    ("ours: connection wrapper (timers, reconnect token)", ["GuardedAcceptor"]),
    ("hyper: the upgraded connection (with ours inside)", ["hyper_util::server::conn::auto::UpgradeableConnection"]),
    ("hyper: the upgraded connection (with ours inside)", ["axum_server::server::Server<A,Acc>::serve"]),
]

# What remains of the legacy mangling in names heaptrack demangled itself.
ESCAPES = [("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","), ("$LP$", "("),
           ("$RP$", ")"), ("$RF$", "&"), ("$BP$", "*"), ("$u7b$", "{"), ("$u7d$", "}"),
           ("$u27$", "'"), ("..", "::"), ("_<", "<")]

NOISE = re.compile(r"alloc::alloc|__rust|malloc|raw_vec|RawVec|exchange_malloc|hashbrown")


def symbol_table(binary):
    """Sorted (address, name) of the binary's functions."""
    out = subprocess.run(["nm", "-n", "--defined-only", binary], capture_output=True,
                         text=True, check=True).stdout
    table = []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            table.append((int(parts[0], 16), parts[2]))
    return table


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("connections", type=int)
    ap.add_argument("--binary")
    ap.add_argument("--base", help="load address of the binary, hex")
    ap.add_argument("--other", type=int, default=15, help="unassigned stacks to list")
    args = ap.parse_args()

    with tempfile.NamedTemporaryFile("r", suffix=".stacks") as stacks:
        subprocess.run(["heaptrack_print", "-f", args.file, "-p", "0", "-a", "0", "-T", "0",
                        "--flamegraph-cost-type", "leaked", "-F", stacks.name],
                       check=True, stdout=subprocess.DEVNULL)
        raw = stacks.read()

    if args.binary and args.base:
        table = symbol_table(args.binary)
        addrs = [a for a, _ in table]
        base = int(args.base, 16)

        def name(match):
            at = bisect.bisect_right(addrs, int(match.group(0), 16) - base) - 1
            return table[at][1] if at >= 0 else match.group(0)

        raw = re.sub(r"\b0x[0-9a-f]+\b", name, raw)

    demangled = subprocess.run(["c++filt"], input=raw, capture_output=True, text=True,
                               check=True).stdout
    demangled = re.sub(r"\[[0-9a-f]{16}\]|::h[0-9a-f]{16}\b", "", demangled)
    for escaped, plain in ESCAPES:
        demangled = demangled.replace(escaped, plain)

    owners = collections.Counter()
    other = collections.Counter()
    for line in demangled.splitlines():
        stack, _, cost = line.rpartition(" ")
        cost = int(cost)
        for owner, needles in RULES:
            if all(n in stack for n in needles):
                owners[owner] += cost
                break
        else:
            owners["other (incl. the empty server's heap)"] += cost
            frames = [f for f in stack.split(";") if not NOISE.search(f)]
            other[" <- ".join(reversed(frames[-4:]))[:300]] += cost

    n = args.connections
    total = sum(owners.values())
    print(f"| owner | bytes per connection |\n|---|---:|")
    for owner, cost in owners.most_common():
        print(f"| {owner} | {cost / n:.0f} |")
    print(f"| **live heap** | **{total / n:.0f}** |")
    if args.other:
        print("\nlargest unassigned stacks (bytes per connection, innermost first):")
        for stack, cost in other.most_common(args.other):
            print(f"{cost / n:8.1f}  {stack}")


if __name__ == "__main__":
    main()
