#!/usr/bin/env python3
"""Reproduces the slow-reader defects against a running server and prints what they cost it.

  python3 scripts/hostile-repro.py --url http://127.0.0.1:3000 --pid <server pid> slow-broadcaster
  python3 scripts/hostile-repro.py --url http://127.0.0.1:3000 --pid <server pid> list-flood

  python3 scripts/hostile-repro.py --url http://127.0.0.1:3000 --pid <server pid> slowloris
  python3 scripts/hostile-repro.py --url http://127.0.0.1:3000 --pid <server pid> soak

slow-broadcaster: a broadcaster stops reading while its viewer sends 20,000 offers of 8 KiB.
list-flood: a client that never reads asks for the channel list 20,000 times while 99 channels
exist. Each prints the server's RSS growth and whether (and when) the server dropped the client.
slowloris: 300 connections send one byte of a request head per second and 100 say nothing;
prints how many the server still holds open after --watch seconds.
soak: --soak-secs (default 30 min) of churn (broadcasters and viewers meeting, signaling,
chatting, leaving) with abusive clients mixed in (junk frames, floods, readers that stop,
abrupt drops); prints the server's RSS every 10 s and compares the end to the post-warm-up level.
Standard library only: a minimal WebSocket client (masked frames, Engine.IO v4, Socket.IO v5).
"""

import argparse
import base64
import json
import os
import socket
import struct
import threading
import time
import urllib.request


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Ws:
    """One Socket.IO client over a raw WebSocket; `read=False` never reads after the handshake."""

    def __init__(self, host, port, source="127.0.0.1", rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((source, 0))
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        self.buf = b""
        self.recv_frame()  # Engine.IO open
        self.send("40")
        self.id = None
        while self.id is None:
            text = self.recv_frame()
            if text.startswith('42["client_id"'):
                self.id = json.loads(text[2:])[1]["id"]
            elif text == "2":
                self.send("3")

    def send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(header + mask + masked)

    def close(self):
        """Closes at once: shutdown wakes this client's own reader thread and sends the FIN
        (a bare close() would leave a thread blocked in recv holding the connection open)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def emit(self, event, payload):
        self.send("42" + json.dumps([event, payload]))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def recv_frame(self):
        self._need(2)
        n = self.buf[1] & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._need(10)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        self._need(off + n)
        payload = self.buf[off : off + n]
        self.buf = self.buf[off + n :]
        return payload.decode(errors="replace")

    def drain_forever(self):
        """Reads and answers pings until the connection closes (a well-behaved client)."""

        def run():
            try:
                while True:
                    if self.recv_frame() == "2":
                        self.send("3")
            except (ConnectionError, OSError):
                pass

        threading.Thread(target=run, daemon=True).start()


def sockets_count(url):
    with urllib.request.urlopen(f"{url}/healthz") as r:
        return json.load(r)


def slowloris(host, port, seconds):
    trickling = []
    for i in range(300):
        s = socket.create_connection((host, port))
        s.setblocking(False)
        trickling.append(s)
    silent = [socket.create_connection((host, port)) for _ in range(100)]
    for s in silent:
        s.setblocking(False)
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        for s in trickling:
            try:
                s.send(head[sent : sent + 1])
            except OSError:
                pass
        sent += 1
        time.sleep(1)

    def still_open(s):
        try:
            return s.recv(1) != b"" and True
        except BlockingIOError:
            return True
        except OSError:
            return False

    open_trickling = sum(still_open(s) for s in trickling)
    open_silent = sum(still_open(s) for s in silent)
    print(
        json.dumps(
            {
                "scenario": "slowloris",
                "after_s": seconds,
                "trickling_still_open": f"{open_trickling}/300",
                "silent_still_open": f"{open_silent}/100",
            }
        )
    )


def churn_cycle(host, port, n, stop):
    """A broadcaster and three viewers (two in the relay tree) meet, signal, chat and leave."""
    channel = f"soak{n % 50}"
    clients = []
    try:
        b = Ws(host, port)
        clients.append(b)
        b.drain_forever()
        b.emit("join_as_broadcaster", {"channel_id": channel})
        time.sleep(0.05)
        for i in range(3):
            v = Ws(host, port)
            clients.append(v)
            v.drain_forever()
            v.emit("join_as_viewer", {"channel_id": channel, "relay": i > 0})
            v.emit("offer", {"target": b.id, "sdp": {"type": "offer", "sdp": "v=0\r\n" * 200}})
            v.emit("ice_candidate", {"target": b.id, "candidate": {"candidate": "c", "sdpMid": "0"}})
            v.emit("relay_ready", {"channel_id": channel})
            v.emit("set_alias", {"channel_id": channel, "alias": f"Viewer {i:03d}"})
            v.emit("send_message", {"channel_id": channel, "message": "hello from the soak"})
            b.emit("answer", {"target": v.id, "sdp": {"type": "answer", "sdp": "v=0\r\n" * 200}})
        time.sleep(0.3)
    except (ConnectionError, OSError):
        pass
    finally:
        for c in clients:
            c.close()


def abuse_cycle(host, port, n):
    """One abusive client: junk, floods, a reader that stops, or an abrupt drop."""
    kind = n % 5
    try:
        if kind == 0:
            c = Ws(host, port)
            c.send("42{junk")
        elif kind == 1:
            c = Ws(host, port)
            for _ in range(300):
                c.emit("join_as_viewer", {})
        elif kind == 2:
            c = Ws(host, port)
            c.emit("join_as_viewer", {"channel_id": "soak0"})
            for _ in range(300):
                c.emit("send_message", {"channel_id": "soak0", "message": "spam"})
        elif kind == 3:
            c = Ws(host, port, rcvbuf=4096)
            c.emit("join_as_broadcaster", {"channel_id": f"stuck{n % 7}"})
            t = Ws(host, port)
            t.drain_forever()
            t.emit("join_as_viewer", {"channel_id": f"stuck{n % 7}"})
            for _ in range(40):
                t.emit("ice_candidate", {"target": c.id, "candidate": {"candidate": "x" * 3000}})
                time.sleep(0.05)
            t.close()
        else:
            c = Ws(host, port)
            c.emit("join_as_broadcaster", {"channel_id": f"drop{n % 7}"})
        time.sleep(0.2)
        c.close()
    except (ConnectionError, OSError):
        pass


def soak(host, port, args):
    stop = threading.Event()
    counts = {"churn": 0, "abuse": 0}

    def churn_worker(w):
        n = w
        while not stop.is_set():
            churn_cycle(host, port, n, stop)
            counts["churn"] += 1
            n += 4

    def abuse_worker(w):
        n = w
        while not stop.is_set():
            abuse_cycle(host, port, n)
            counts["abuse"] += 1
            n += 2

    workers = [threading.Thread(target=churn_worker, args=(w,), daemon=True) for w in range(4)]
    workers += [threading.Thread(target=abuse_worker, args=(w,), daemon=True) for w in range(2)]
    for w in workers:
        w.start()
    start = time.monotonic()
    warm = None
    samples = []
    while time.monotonic() - start < args.soak_secs:
        time.sleep(10)
        elapsed = time.monotonic() - start
        rss = rss_kb(args.pid)
        samples.append((round(elapsed), rss))
        if warm is None and elapsed >= args.warmup_secs:
            warm = rss
        print(f"{elapsed:7.0f} s  RSS {rss / 1024:7.1f} MB  cycles {counts}", flush=True)
    stop.set()
    for w in workers:
        w.join(timeout=30)
    time.sleep(15)
    end = rss_kb(args.pid)
    health = sockets_count(args.url)
    peak = max(r for _, r in samples)
    print(
        json.dumps(
            {
                "scenario": "soak",
                "secs": args.soak_secs,
                "cycles": counts,
                "rss_post_warmup_mb": round((warm or end) / 1024, 1),
                "rss_peak_mb": round(peak / 1024, 1),
                "rss_end_mb": round(end / 1024, 1),
                "end_vs_warmup_pct": round(100 * (end - (warm or end)) / (warm or end), 1),
                "health_after": health,
            }
        )
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--watch", type=int, default=60, help="seconds to watch afterwards")
    parser.add_argument("--soak-secs", type=int, default=1800)
    parser.add_argument("--warmup-secs", type=int, default=300)
    parser.add_argument(
        "scenario", choices=["slow-broadcaster", "list-flood", "slowloris", "soak"]
    )
    args = parser.parse_args()
    host, port = args.url.split("//")[1].split(":")
    port = int(port)
    base = rss_kb(args.pid)
    print(f"server RSS before: {base / 1024:.1f} MB")
    if args.scenario == "slowloris":
        return slowloris(host, port, args.watch)
    if args.scenario == "soak":
        return soak(host, port, args)
    started = time.monotonic()
    if args.scenario == "slow-broadcaster":
        victim = Ws(host, port, rcvbuf=4096)
        victim.emit("join_as_broadcaster", {"channel_id": "slowreader"})
        viewer = Ws(host, port, source="127.0.0.2")
        viewer.drain_forever()
        viewer.emit("join_as_viewer", {"channel_id": "slowreader"})
        time.sleep(0.5)
        connected = sockets_count(args.url)["sockets"]
        sdp = {"type": "offer", "sdp": "v=0\r\n" + "a=x-pad:" + "x" * 8192 + "\r\n"}
        for _ in range(args.count):
            try:
                viewer.emit("offer", {"target": victim.id, "sdp": sdp})
            except OSError:
                print("the sending viewer was disconnected (rate limits)")
                break
    else:
        owners = []
        for i in range(99):
            owner = Ws(host, port, source=f"127.0.1.{i + 2}")
            owner.drain_forever()
            owner.emit("join_as_broadcaster", {"channel_id": f"ch{i:02d}"})
            owners.append(owner)
        time.sleep(0.5)
        victim = Ws(host, port, source="127.0.0.3", rcvbuf=4096)
        connected = sockets_count(args.url)["sockets"]
        for _ in range(args.count):
            try:
                victim.emit("join_as_viewer", {})
            except OSError:
                print("the flooding client was disconnected")
                break
    sent = time.monotonic() - started
    print(f"sent in {sent:.1f} s; server RSS now {rss_kb(args.pid) / 1024:.1f} MB")
    # The victim never reads, so its side cannot tell whether the server dropped it: the
    # server's own socket count does (a drop before this point counts as at this point).
    drops = []
    peak = rss_kb(args.pid)
    while time.monotonic() - started < sent + args.watch:
        peak = max(peak, rss_kb(args.pid))
        now = sockets_count(args.url)["sockets"]
        if now < connected:
            drops.append((round(time.monotonic() - started, 1), connected - now))
            connected = now
        time.sleep(1)
    end = rss_kb(args.pid)
    print(
        json.dumps(
            {
                "scenario": args.scenario,
                "rss_before_mb": round(base / 1024, 1),
                "rss_peak_growth_mb": round((peak - base) / 1024, 1),
                "rss_end_growth_mb": round((end - base) / 1024, 1),
                # (seconds since the start, sockets the server dropped then)
                "server_dropped": drops,
                "watched_s": args.watch,
                "health": sockets_count(args.url),
            }
        )
    )


if __name__ == "__main__":
    main()
