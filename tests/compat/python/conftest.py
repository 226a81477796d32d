"""Fixtures for the Python compatibility suite: the real server binary, started per test on an
ephemeral loopback port, and `Peer`, one official `socketio.Client` with a recorder of every
event the server sends it."""

import atexit
import os
import re
import subprocess
import threading
import time
from collections import deque
from importlib.metadata import version
from pathlib import Path

import pytest
import socketio

SUITE_DIR = Path(__file__).resolve().parent
REPO_DIR = SUITE_DIR.parents[2]
SERVER_BIN = (SUITE_DIR / os.environ.get("SERVER_BIN", "../../../target/release/broadcast-server")).resolve()

LISTENING = re.compile(r"listening on (https?)://([0-9.]+):(\d+)")
START_TIMEOUT = 15.0
STOP_GRACE = 3.0
EVENT_TIMEOUT = 5.0
# How long a test waits for stray events before it concludes that none will come.
QUIET = 0.3

CLIENT = f"python-socketio {version('python-socketio')}"

TRANSPORTS = {
    "default": None,  # the client's own choice: polling first, then upgrade to WebSocket
    "websocket": ["websocket"],
    "polling": ["polling"],
}

_running = set()


@atexit.register
def _kill_leftovers():
    for proc in list(_running):
        proc.kill()


class Server:
    """One server process; its stdout and stderr are drained for its whole life."""

    def __init__(self, extra_args=()):
        if not SERVER_BIN.is_file():
            raise RuntimeError(f"server binary not found: {SERVER_BIN} (set SERVER_BIN)")
        self.output = deque(maxlen=400)
        self.proc = subprocess.Popen(
            [str(SERVER_BIN), "--host", "127.0.0.1", "--port", "0", *extra_args],
            cwd=REPO_DIR,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info"), "LOG_FORMAT": "text"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        _running.add(self.proc)
        self.url = None
        announced = threading.Event()

        def drain():
            for line in self.proc.stdout:
                self.output.append(line)
                if self.url is None:
                    match = LISTENING.search(line)
                    if match:
                        self.url = f"{match[1]}://{match[2]}:{match[3]}"
                        announced.set()

        threading.Thread(target=drain, daemon=True).start()
        if not announced.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError(
                f"server did not announce its address within {START_TIMEOUT} s\n"
                + "".join(self.output)
            )

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _running.discard(self.proc)


def _check_viewer_count(args):
    assert len(args) == 1, "viewer_count carries one argument"
    assert sorted(args[0]) == ["channel_id", "count"]
    assert isinstance(args[0]["channel_id"], str)
    count = args[0]["count"]
    assert isinstance(count, int) and not isinstance(count, bool) and count >= 0


# Events of this project's extensions that legacy pages ignore: they may arrive at any time
# without failing a test, but their payload must still have the documented shape.
TOLERATED = {"viewer_count": _check_viewer_count}


class Peer:
    """A connected `socketio.Client` whose received events wait in an inbox to be taken."""

    def __init__(self, url, label, transport="default", auth=None):
        self.label = f"{label} ({CLIENT}, {transport})"
        self.url = url
        self.transport_mode = transport
        # The handshake's auth payload (legacy pages send none).
        self.auth = auth
        self.inbox = []
        self.cond = threading.Condition()
        self.closed_by_test = False
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("*", self._receive)

    def _receive(self, event, *args):
        with self.cond:
            self.inbox.append((event, list(args)))
            self.cond.notify_all()

    def connect(self):
        self.sio.connect(
            self.url, transports=TRANSPORTS[self.transport_mode], auth=self.auth, wait_timeout=5
        )
        assert isinstance(self.id, str) and self.id
        self.expect("client_id", {"id": self.id})
        # The published id is never the transport's session id (this connection's credential).
        assert self.id != self.sio.eio.sid
        return self

    @property
    def id(self):
        """The socket id: the namespace's id, which the server uses as `target`."""
        return self.sio.get_sid("/")

    @property
    def transport(self):
        return self.sio.transport()

    def emit(self, event, *args):
        """`emit(event)` sends no argument; `emit(event, None)` sends an explicit `null`."""
        self.sio.emit(event, tuple(args) if len(args) != 1 or args[0] is None else args[0])

    def next(self, event, timeout=EVENT_TIMEOUT):
        """The arguments of the next `event` not taken yet, waiting for it if needed."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, (name, args) in enumerate(self.inbox):
                    if name == event:
                        del self.inbox[i]
                        return args
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.label}: no {event!r} within {timeout} s; received instead: {self.inbox}"
                    )
                self.cond.wait(left)

    def expect(self, event, payload):
        args = self.next(event)
        assert args == [payload], f"{self.label}: payload of {event!r}"
        return payload

    def one(self, event):
        args = self.next(event)
        assert len(args) == 1, f"{self.label}: {event!r} carries one argument, got {args}"
        return args[0]

    def expect_error(self, message):
        return self.expect("error", {"message": message})

    def expect_error_prefix(self, prefix):
        payload = self.one("error")
        assert list(payload) == ["message"], f"{self.label}: error payload {payload}"
        message = payload["message"]
        assert isinstance(message, str)
        assert message.startswith(prefix) and len(message) > len(prefix), (
            f"{self.label}: error message {message!r} should start with {prefix!r} and give a reason"
        )
        return message

    def expect_relay_error(self, event):
        payload = self.one("relay_error")
        assert sorted(payload) == ["event", "message"], f"{self.label}: relay_error {payload}"
        assert payload["event"] == event
        assert isinstance(payload["message"], str) and payload["message"]
        return payload

    def unexpected(self):
        """Everything received and not taken, except tolerated extension events (checked)."""
        with self.cond:
            left = []
            for event, args in self.inbox:
                check = TOLERATED.get(event)
                if check:
                    check(args)
                else:
                    left.append((event, args))
            return left

    def close(self):
        self.closed_by_test = True
        self.sio.disconnect()


def assert_quiet(*peers):
    """Waits a moment, then checks no peer got an event the test did not take and every peer
    the test did not close is still connected."""
    time.sleep(QUIET)
    for peer in peers:
        assert peer.unexpected() == [], f"{peer.label}: unexpected events"
        if not peer.closed_by_test:
            assert peer.sio.connected, f"{peer.label}: disconnected unexpectedly"


class World:
    """A test's own server plus every peer it opens; all torn down whatever happens."""

    def __init__(self):
        self.servers = []
        self.peers = []
        self.server = None

    def start(self, *extra_args):
        self.server = Server(extra_args)
        self.servers.append(self.server)
        return self

    def peer(self, label, transport="default", auth=None):
        peer = Peer(self.server.url, label, transport, auth)
        self.peers.append(peer)
        return peer.connect()

    def close(self):
        for peer in self.peers:
            try:
                peer.sio.disconnect()
            except Exception:  # noqa: BLE001 - teardown must reach the servers
                pass
        for server in self.servers:
            server.stop()


@pytest.fixture
def world():
    """A fresh `World`; call `world.start(...)` for its server."""
    w = World()
    try:
        yield w
    finally:
        w.close()


_counter = 0


def channel_id(prefix="ch"):
    """A channel id unique within this test process, valid for the protocol."""
    global _counter
    _counter += 1
    return f"{prefix}-{os.getpid() % 10000}-{_counter}"[:20]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the server's output to the report."""
    outcome = yield
    report = outcome.get_result()
    w = item.funcargs.get("world") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(w, World):
        for server in w.servers:
            report.sections.append(("server output", "".join(server.output)))
