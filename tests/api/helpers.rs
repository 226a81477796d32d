//! Test harness: the real server on an ephemeral port, and a small Socket.IO v5 client that
//! speaks the wire protocol itself (WebSocket or long-polling) so tests can also send what
//! official clients never would: malformed, oversized, out-of-order packets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use broadcast_server::RunningServer;
use broadcast_server::config::Config;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How long to wait for an event that should arrive.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to listen to conclude that nothing (else) arrives.
pub const QUIET: Duration = Duration::from_millis(300);

pub struct TestApp {
    pub server: RunningServer,
}

impl TestApp {
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn ws_url(&self) -> String {
        format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket",
            self.server.local_addr
        )
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// A client that asks for error codes in its handshake, as the served page does.
    pub async fn client_with_codes(&self) -> Client {
        Client::connect_with_auth(&self.ws_url(), Some(json!({"error_codes": true}))).await
    }

    pub async fn health(&self) -> Value {
        reqwest::get(format!("{}/healthz", self.url()))
            .await
            .expect("healthz reachable")
            .json()
            .await
            .expect("healthz is JSON")
    }
}

/// Starts the real server on 127.0.0.1 with an ephemeral port; `extra` are CLI flags.
pub async fn spawn_app(extra: &[&str]) -> TestApp {
    let mut args = vec![
        "broadcast-server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--assets-dir",
        concat!(env!("CARGO_MANIFEST_DIR"), "/assets"),
    ];
    args.extend_from_slice(extra);
    let config = Config::try_parse_from(args).expect("valid test config");
    let server = broadcast_server::start(&config)
        .await
        .expect("server starts");
    TestApp { server }
}

/// A connected Socket.IO client over WebSocket.
pub struct Client {
    /// The public id the server announced in `client_id` (what others use as `target`).
    pub sid: String,
    /// The Engine.IO session id: this connection's own secret, never published.
    pub session: String,
    outgoing: mpsc::UnboundedSender<Message>,
    events: mpsc::UnboundedReceiver<(String, Vec<Value>)>,
    closed: mpsc::UnboundedReceiver<()>,
    /// Set when the server sent a Socket.IO DISCONNECT packet (`41`, "io server disconnect":
    /// the official client does not reconnect after it).
    disconnect_packet: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The `seq` of the last `upstream` read by [`Client::expect_upstream`].
    last_upstream: u64,
}

impl Client {
    /// Connects, completes the Socket.IO handshake and consumes `client_id`.
    pub async fn connect(ws_url: &str) -> Client {
        Self::connect_with_auth(ws_url, None).await
    }

    /// Connects with `auth` in the Socket.IO CONNECT packet (what `io({auth})` sends).
    pub async fn connect_with_auth(ws_url: &str, auth: Option<Value>) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .expect("websocket connects");
        let (mut sink, mut stream) = ws.split();
        let open = next_text(&mut stream).await;
        assert!(open.starts_with('0'), "engine.io open packet, got {open}");
        let session = serde_json::from_str::<Value>(&open[1..]).expect("open payload")["sid"]
            .as_str()
            .expect("session sid")
            .to_owned();
        let connect_packet = match &auth {
            Some(auth) => format!("40{auth}"),
            None => "40".to_owned(),
        };
        sink.send(Message::text(connect_packet))
            .await
            .expect("send connect");
        let mut connect = next_text(&mut stream).await;
        while connect == "2" {
            sink.send(Message::text("3")).await.expect("send pong");
            connect = next_text(&mut stream).await;
        }
        assert!(
            connect.starts_with("40"),
            "socket.io connect, got {connect}"
        );
        let socket_sid =
            serde_json::from_str::<Value>(&connect[2..]).expect("connect payload")["sid"]
                .as_str()
                .expect("sid")
                .to_owned();

        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (closed_tx, closed_rx) = mpsc::unbounded_channel();
        let pong_tx = out_tx.clone();
        let disconnect_packet = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let saw_disconnect = disconnect_packet.clone();
        tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let text = text.to_string();
                if text == "2" {
                    let _ = pong_tx.send(Message::text("3"));
                } else if text.starts_with("41") {
                    saw_disconnect.store(true, std::sync::atomic::Ordering::SeqCst);
                } else if let Some(body) = text.strip_prefix("42") {
                    let mut array: Vec<Value> =
                        serde_json::from_str(body).expect("event packet is a JSON array");
                    let name = array.remove(0).as_str().expect("event name").to_owned();
                    if ev_tx.send((name, array)).is_err() {
                        break;
                    }
                }
            }
            let _ = closed_tx.send(());
        });
        let mut client = Client {
            sid: String::new(),
            session,
            outgoing: out_tx,
            events: ev_rx,
            closed: closed_rx,
            disconnect_packet,
            last_upstream: 0,
        };
        let hello = client.expect("client_id").await;
        let id = hello["id"].as_str().expect("client_id carries a string id");
        // The published id is a public handle, never the transport's credential.
        assert_ne!(
            id, client.session,
            "client_id must not be the Engine.IO session id"
        );
        assert_eq!(
            id, socket_sid,
            "client_id is the socket id of the CONNECT packet"
        );
        client.sid = id.to_owned();
        client
    }

    /// Emits an event with one argument.
    pub fn emit(&self, event: &str, data: Value) {
        self.send_raw(&format!("42{}", json!([event, data])));
    }

    /// Sends any WebSocket message as is (binary frames, say).
    pub fn send_message(&self, message: Message) {
        self.outgoing.send(message).expect("writer alive");
    }

    /// Emits an event with no argument at all.
    pub fn emit_bare(&self, event: &str) {
        self.send_raw(&format!("42{}", json!([event])));
    }

    /// Sends an Engine.IO text frame as is.
    pub fn send_raw(&self, frame: &str) {
        self.outgoing
            .send(Message::text(frame.to_owned()))
            .expect("writer alive");
    }

    /// Closes the WebSocket.
    pub fn close(&self) {
        let _ = self.outgoing.send(Message::Close(None));
    }

    /// Next event, whatever it is.
    pub async fn next(&mut self) -> (String, Vec<Value>) {
        tokio::time::timeout(EVENT_TIMEOUT, self.events.recv())
            .await
            .expect("an event within the timeout")
            .expect("connection open")
    }

    /// Next event, if any arrives (no timeout of its own).
    pub async fn next_event(&mut self) -> Option<(String, Vec<Value>)> {
        self.events.recv().await
    }

    /// The next event must be `event` with exactly one argument, which is returned.
    pub async fn expect(&mut self, event: &str) -> Value {
        let (name, mut args) = self.next().await;
        assert_eq!(name, event, "expected {event}, got {name} {args:?}");
        assert_eq!(args.len(), 1, "{event} carries exactly one argument");
        args.remove(0)
    }

    /// The next event must be `upstream` whose `seq` is above the last one this client read;
    /// returns the payload without `seq`, so tests compare who feeds whom.
    pub async fn expect_upstream(&mut self) -> Value {
        let mut upstream = self.expect("upstream").await;
        let seq = upstream
            .as_object_mut()
            .and_then(|o| o.remove("seq"))
            .and_then(|s| s.as_u64())
            .expect("upstream carries a numeric seq");
        assert!(
            seq > self.last_upstream,
            "upstream seq {seq} after {}",
            self.last_upstream
        );
        self.last_upstream = seq;
        upstream
    }

    /// The next event must be `error` with exactly this message.
    pub async fn expect_error(&mut self, message: &str) {
        let payload = self.expect("error").await;
        assert_eq!(payload, json!({ "message": message }));
    }

    /// The next event must be `error` whose message starts with `prefix`; returns the message.
    pub async fn expect_error_prefix(&mut self, prefix: &str) -> String {
        let payload = self.expect("error").await;
        let message = payload["message"].as_str().expect("message").to_owned();
        assert!(
            message.starts_with(prefix),
            "{message:?} starts with {prefix:?}"
        );
        assert_eq!(payload.as_object().map(|o| o.len()), Some(1), "{payload}");
        message
    }

    /// The next event must be `relay_error` for `event`, exactly `{event, message}` (what a
    /// client that did not ask for codes gets); returns the message.
    pub async fn expect_relay_error(&mut self, event: &str) -> String {
        let payload = self.expect("relay_error").await;
        assert_eq!(payload["event"], event, "{payload}");
        assert_eq!(payload.as_object().map(|o| o.len()), Some(2), "{payload}");
        payload["message"]
            .as_str()
            .expect("relay_error message")
            .to_owned()
    }

    /// The next event must be `error` with exactly `{message, code}` and this code; returns
    /// the message.
    pub async fn expect_coded_error(&mut self, code: &str) -> String {
        let payload = self.expect("error").await;
        coded(&payload, code, 2)
    }

    /// The next event must be `relay_error` for `event` with exactly `{event, message, code}`
    /// and this code; returns the message.
    pub async fn expect_coded_relay_error(&mut self, event: &str, code: &str) -> String {
        let payload = self.expect("relay_error").await;
        assert_eq!(payload["event"], event, "{payload}");
        coded(&payload, code, 3)
    }

    /// Nothing arrives for a while.
    pub async fn assert_silent(&mut self) {
        if let Ok(Some(ev)) = tokio::time::timeout(QUIET, self.events.recv()).await {
            panic!("unexpected event {ev:?}");
        }
    }

    /// Whether the server sent a Socket.IO DISCONNECT packet (rather than, or before, closing
    /// the transport).
    pub fn got_disconnect_packet(&self) -> bool {
        self.disconnect_packet
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for the server to close the connection.
    pub async fn expect_closed(&mut self) {
        tokio::time::timeout(EVENT_TIMEOUT, self.closed.recv())
            .await
            .expect("connection closed within the timeout");
    }
}

async fn next_text<S>(stream: &mut S) -> String
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(EVENT_TIMEOUT, stream.next())
            .await
            .expect("frame within the timeout")
            .expect("stream open")
            .expect("frame ok");
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

/// A realistic session description, as a browser sends it.
/// Checks an error payload's `code` and size; returns its message.
pub fn coded(payload: &Value, code: &str, fields: usize) -> String {
    assert_eq!(payload["code"], code, "{payload}");
    assert_eq!(
        payload.as_object().map(|o| o.len()),
        Some(fields),
        "{payload}"
    );
    payload["message"]
        .as_str()
        .expect("error message")
        .to_owned()
}

pub fn sample_sdp(kind: &str) -> Value {
    json!({
        "type": kind,
        "sdp": "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghij\r\na=fingerprint:sha-256 00:11:22\r\na=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n"
    })
}

/// A realistic ICE candidate, as `RTCIceCandidate.toJSON()` gives it.
pub fn sample_candidate() -> Value {
    json!({
        "candidate": "candidate:842163049 1 udp 1677729535 192.0.2.10 49203 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag abcd network-cost 999",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "abcd"
    })
}

/// A broadcaster ready on `channel` and a viewer joined to it, with all set-up events consumed.
pub async fn channel_with_viewer(app: &TestApp, channel: &str) -> (Client, Client) {
    let mut broadcaster = app.client().await;
    broadcaster.emit("join_as_broadcaster", json!({ "channel_id": channel }));
    broadcaster.expect("broadcaster_ready").await;
    let mut viewer = app.client().await;
    viewer.emit("join_as_viewer", json!({ "channel_id": channel }));
    viewer.expect("broadcaster_available").await;
    broadcaster.expect("viewer_count").await;
    (broadcaster, viewer)
}

/// A bare Engine.IO long-polling session, as the 4.5 browser client starts (and as an attacker
/// would drive one by hand).
pub struct Polling {
    http: reqwest::Client,
    base: String,
    /// The Engine.IO session id of this client's handshake: its credential.
    pub session: String,
    /// The socket id the Socket.IO CONNECT packet announced, once it has arrived.
    pub connect_sid: Option<String>,
    /// Event packets received but not taken yet.
    pending: Vec<Value>,
}

impl Polling {
    /// The Engine.IO handshake only (send `40` to connect the namespace).
    pub async fn open(app: &TestApp) -> Polling {
        Polling::open_url(&app.url()).await
    }

    /// The Engine.IO handshake with the server at `url` (`http://host:port`).
    pub async fn open_url(url: &str) -> Polling {
        let http = reqwest::Client::new();
        let base = format!("{url}/socket.io/?EIO=4&transport=polling");
        let open = http.get(&base).send().await.unwrap().text().await.unwrap();
        assert!(open.starts_with('0'), "{open}");
        let session = serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"]
            .as_str()
            .unwrap()
            .to_owned();
        Polling {
            http,
            base,
            session,
            connect_sid: None,
            pending: Vec::new(),
        }
    }

    /// The polling URL with any session id (an attacker's guess, say).
    pub fn url_for(&self, sid: &str) -> String {
        format!("{}&sid={sid}", self.base)
    }

    /// Posts packets in one body; the server must accept them.
    pub async fn post(&self, packets: &[String]) {
        let body = packets.join("\u{1e}");
        let res = self
            .http
            .post(self.url_for(&self.session))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.status());
    }

    pub async fn emit(&self, event: &str, data: Value) {
        self.post(&[format!("42{}", json!([event, data]))]).await;
    }

    /// Ends the session with an Engine.IO close packet, as a page that goes away does.
    pub async fn close(&self) {
        let _ = self
            .http
            .post(self.url_for(&self.session))
            .body("1")
            .send()
            .await;
    }

    /// One poll: answers pings, notes the CONNECT packet, queues event packets.
    async fn poll(&mut self) {
        let body = self
            .http
            .get(self.url_for(&self.session))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for packet in body.split('\u{1e}') {
            if let Some(connect) = packet.strip_prefix("40") {
                let sid = serde_json::from_str::<Value>(connect).unwrap()["sid"].clone();
                self.connect_sid = sid.as_str().map(str::to_owned);
            } else if let Some(event) = packet.strip_prefix("42") {
                self.pending.push(serde_json::from_str(event).unwrap());
            } else if packet == "2" {
                self.post(&["3".into()]).await;
            }
        }
    }

    /// Polls until `count` event packets have arrived; returns them (as `[name, args…]`).
    pub async fn events(&mut self, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.pending.len() < count && tokio::time::Instant::now() < deadline {
            self.poll().await;
        }
        let take = count.min(self.pending.len());
        self.pending.drain(..take).collect()
    }

    /// Polls until an event named `event` arrives; returns its first argument.
    pub async fn expect(&mut self, event: &str) -> Value {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(i) = self.pending.iter().position(|e| e[0] == event) {
                return self.pending.remove(i)[1].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {event} within the timeout"
            );
            self.poll().await;
        }
    }
}

// ------------------------------------------------------------------------------------------
// Cluster mode: real server processes (the built binary) sharing one Redis, each test under a
// Redis prefix of its own so that tests run in parallel and never see each other's keys.

/// The Redis the cluster tests share (CI usually runs one; the harness starts one otherwise).
pub const SHARED_REDIS_PORT: u16 = 6379;

/// How long a node may take to answer `/healthz` with 200 after it was started.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may take to exit after SIGTERM.
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The nodes' default heartbeat (`--heartbeat-ms`), for tests that do not set one.
const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(2000);

/// A port nobody listens on right now (the OS picks it; it is free again once dropped).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// A prefix no other test (or run) uses: `t-` and 12 hex digits.
pub fn unique_prefix() -> String {
    format!("t-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Runs `redis-cli -p PORT ARGS…` (bounded in time); its output, or `None` if it failed.
pub async fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let run = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Ok(Ok(out)) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into()),
        _ => None,
    }
}

/// Whether a Redis answers `PING` on 127.0.0.1:`port`.
pub async fn redis_answers(port: u16) -> bool {
    redis_cli(port, &["PING"])
        .await
        .is_some_and(|out| out.trim() == "PONG")
}

fn lines(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every key under `prefix` (a full `SCAN … MATCH prefix*` iteration).
pub async fn keys_under(port: u16, prefix: &str) -> Vec<String> {
    let pattern = format!("{prefix}*");
    let out = redis_cli(port, &["--scan", "--pattern", &pattern])
        .await
        .expect("redis-cli --scan works");
    lines(&out)
}

/// Every pub/sub channel under `prefix` that somebody is subscribed to, classic
/// (`SUBSCRIBE`) or sharded (`SSUBSCRIBE`, Redis 7, what socketioxide-redis uses).
pub async fn pubsub_channels_under(port: u16, prefix: &str) -> Vec<String> {
    let pattern = format!("{prefix}*");
    let mut channels = Vec::new();
    for kind in ["CHANNELS", "SHARDCHANNELS"] {
        let out = redis_cli(port, &["PUBSUB", kind, &pattern])
            .await
            .unwrap_or_else(|| panic!("redis-cli PUBSUB {kind} works"));
        channels.extend(lines(&out).into_iter().filter(|l| !l.starts_with("ERR")));
    }
    channels
}

/// Makes sure a Redis answers on 127.0.0.1:6379, starting a daemonized `redis-server` there if
/// none does (once per test binary). The shared Redis is never stopped or flushed by the tests.
pub async fn ensure_shared_redis() {
    static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    READY
        .get_or_init(|| async {
            if redis_answers(SHARED_REDIS_PORT).await {
                return;
            }
            let status = Command::new("redis-server")
                .args(["--port", &SHARED_REDIS_PORT.to_string()])
                .args(["--bind", "127.0.0.1", "--daemonize", "yes"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(std::env::temp_dir())
                .stdout(Stdio::null())
                .status()
                .await
                .expect("redis-server is on PATH");
            assert!(status.success(), "redis-server --daemonize: {status}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !redis_answers(SHARED_REDIS_PORT).await {
                assert!(
                    Instant::now() < deadline,
                    "the Redis started on {SHARED_REDIS_PORT} does not answer"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
}

/// A private `redis-server` child process (no persistence), for tests that stop Redis.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on `port` and waits until it answers.
    pub async fn start(port: u16) -> RedisServer {
        let mut server = RedisServer { port, child: None };
        server.restart().await;
        server
    }

    /// Starts it (again) on the same port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_answers(self.port).await {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} does not answer",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: Redis vanishes at once, as in a crash.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("redis-server running");
        child.start_kill().expect("SIGKILL redis-server");
        tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .expect("redis-server exits after SIGKILL")
            .expect("wait for redis-server");
    }
}

/// One server process in cluster mode, on its own port, killed when dropped.
pub struct Node {
    pub addr: SocketAddr,
    child: Child,
    exited: Option<ExitStatus>,
    /// Its stdout and stderr (kept when a test fails; the path is printed at start).
    log: PathBuf,
    http: reqwest::Client,
}

/// Why a node did not come up.
enum StartFailure {
    Exited(ExitStatus),
    Timeout,
}

impl Node {
    /// Starts the binary against the Redis on `redis_port` with `prefix`, and waits until its
    /// `/healthz` answers 200 in cluster mode.
    pub async fn start(redis_port: u16, prefix: &str, extra: &[String]) -> Node {
        let url = format!("redis://127.0.0.1:{redis_port}");
        Node::start_with_url(&url, prefix, extra).await
    }

    /// [`Node::start`] with any `--redis-url` (`rediss://…`, say).
    pub async fn start_with_url(redis_url: &str, prefix: &str, extra: &[String]) -> Node {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .expect("http client");
        let mut failures = Vec::new();
        // The port is free when picked but another process may take it before the node binds
        // it: then the node exits at once and another port is tried.
        for _ in 0..3 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!("broadcast-{prefix}-{port}.log"));
            let out = std::fs::File::create(&log).expect("node log file");
            let err = out.try_clone().expect("node log file");
            let child = Command::new(env!("CARGO_BIN_EXE_broadcast-server"))
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--redis-url", redis_url])
                .args(["--redis-prefix", prefix, "--shutdown-grace-secs", "2"])
                .args(extra)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .kill_on_drop(true)
                .spawn()
                .expect("start the server binary");
            let mut node = Node {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                child,
                exited: None,
                log,
                http: http.clone(),
            };
            println!("node {} log: {}", node.addr, node.log.display());
            match node.wait_ready().await {
                Ok(()) => return node,
                Err(StartFailure::Exited(status)) => {
                    failures.push(format!("exited with {status}: {}", node.log_text()));
                }
                Err(StartFailure::Timeout) => {
                    panic!(
                        "node {} not healthy within {NODE_START_TIMEOUT:?}: {}",
                        node.addr,
                        node.log_text()
                    );
                }
            }
        }
        panic!("node did not start: {failures:#?}");
    }

    async fn wait_ready(&mut self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                return Err(StartFailure::Exited(status));
            }
            // Another server that happened to get the port would not say it is a cluster node.
            if let Some((200, health)) = self.try_health().await
                && health["mode"] == "cluster"
                && self.exit_status().is_none()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(StartFailure::Timeout)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/socket.io/?EIO=4&transport=websocket", self.addr)
    }

    /// A WebSocket client connected to this node.
    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// `GET /healthz`: status code and JSON body, or `None` if it did not answer.
    pub async fn try_health(&self) -> Option<(u16, Value)> {
        let response = self
            .http
            .get(format!("{}/healthz", self.url()))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body = response.json().await.ok()?;
        Some((status, body))
    }

    /// `GET path` (`/livez`, `/readyz`), which must answer with JSON: status and body.
    pub async fn probe(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("node {} answers {path}: {e}", self.addr));
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    /// `GET /healthz`, which must answer.
    pub async fn health(&self) -> (u16, Value) {
        self.try_health()
            .await
            .unwrap_or_else(|| panic!("node {} answers /healthz", self.addr))
    }

    /// Polls `/healthz` until `ok(status, body)` holds; panics after `within`. Returns the
    /// matching answer and how long it took.
    pub async fn wait_health(
        &self,
        what: &str,
        within: Duration,
        ok: impl Fn(u16, &Value) -> bool,
    ) -> (u16, Value, Duration) {
        let started = Instant::now();
        let mut last = None;
        loop {
            if let Some((status, body)) = self.try_health().await {
                if ok(status, &body) {
                    return (status, body, started.elapsed());
                }
                last = Some((status, body));
            }
            assert!(
                started.elapsed() < within,
                "node {}: {what} not within {within:?}; last /healthz: {last:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The exit status, if the process has ended.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait on the node");
        }
        self.exited
    }

    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// SIGKILL, as a crashed machine: no goodbye to Redis or to clients.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL the node");
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .expect("node exits after SIGKILL")
            .expect("wait for the node");
        self.exited = Some(status);
    }

    /// SIGTERM, as a deploy does; waits for the exit and returns its status.
    pub async fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exit_status() {
            return status;
        }
        let pid = self.child.id().expect("running node has a pid");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        let status = tokio::time::timeout(NODE_STOP_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "node {} did not exit within {NODE_STOP_TIMEOUT:?} of SIGTERM",
                    self.addr
                )
            })
            .expect("wait for the node");
        self.exited = Some(status);
        status
    }

    /// What the node wrote so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // `kill_on_drop` ends the process; the log stays only when a test failed.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Several nodes of one deployment (one Redis, one prefix).
/// A `redis-cli SUBSCRIBE` to a cluster's emits channel (where channel owners publish their
/// events, `cluster/emits.rs`): what went that way, not through the adapter.
pub struct EmitsListener(Child);

impl EmitsListener {
    /// Subscribed once this returns.
    pub async fn start(cluster: &Cluster) -> Self {
        let mut child = Command::new("redis-cli")
            .args(["-p", &cluster.redis_port.to_string(), "SUBSCRIBE"])
            .arg(format!("{}:emits", cluster.prefix))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-cli runs");
        // Its first reply ("subscribe", the channel, 1) says the subscription holds.
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        for _ in 0..3 {
            lines.next_line().await.expect("redis-cli output");
        }
        child.stdout = Some(lines.into_inner().into_inner());
        Self(child)
    }

    /// The messages heard (each line after "message" and the channel's name); it is stopped.
    pub async fn messages(mut self) -> Vec<String> {
        self.0.start_kill().expect("redis-cli stopped");
        let out = self.0.wait_with_output().await.expect("redis-cli output");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .windows(3)
            .filter(|w| w[0] == "message")
            .map(|w| w[2].to_owned())
            .collect()
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub redis_port: u16,
    pub prefix: String,
    pub heartbeat: Duration,
    extra: Vec<String>,
    torn_down: bool,
}

impl Cluster {
    /// `count` nodes on the shared Redis with a fresh prefix; `extra` flags go to every node.
    pub async fn start(count: usize, extra: &[&str]) -> Cluster {
        ensure_shared_redis().await;
        Cluster::start_on(SHARED_REDIS_PORT, count, extra).await
    }

    /// `count` nodes on the Redis at `redis_port` with a fresh prefix.
    pub async fn start_on(redis_port: u16, count: usize, extra: &[&str]) -> Cluster {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let heartbeat = extra
            .iter()
            .position(|a| a == "--heartbeat-ms")
            .and_then(|i| extra.get(i + 1))
            .map(|ms| Duration::from_millis(ms.parse().expect("--heartbeat-ms N")))
            .unwrap_or(DEFAULT_HEARTBEAT);
        let mut cluster = Cluster {
            nodes: Vec::new(),
            redis_port,
            prefix: unique_prefix(),
            heartbeat,
            extra,
            torn_down: false,
        };
        for _ in 0..count {
            cluster.add_node(&[]).await;
        }
        cluster
    }

    /// Starts one more node with the cluster's flags and `more`; returns its index.
    pub async fn add_node(&mut self, more: &[&str]) -> usize {
        let mut args = self.extra.clone();
        args.extend(more.iter().map(|s| (*s).to_owned()));
        let node = Node::start(self.redis_port, &self.prefix, &args).await;
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The end of every cluster test: the clients leave, every surviving node must then report
    /// no socket and no channel, the nodes stop (SIGTERM, exit 0), and nothing may remain
    /// under the prefix in Redis — no key, no subscribed channel — apart from keys that expire
    /// by themselves within the heartbeat's reach (a killed node's heartbeat).
    pub async fn teardown(mut self, clients: Vec<Client>) {
        for client in &clients {
            client.close();
        }
        let settle = self.heartbeat * 2 + Duration::from_secs(5);
        for node in &mut self.nodes {
            if !node.is_running() {
                continue;
            }
            node.wait_health("no socket and no channel left", settle, |status, h| {
                status == 200
                    && h["sockets"] == 0
                    && h["channels"] == 0
                    && h.get("indexed_sockets").is_none_or(|v| *v == 0)
            })
            .await;
        }
        drop(clients);
        for node in &mut self.nodes {
            if node.is_running() {
                let status = node.terminate().await;
                assert!(
                    status.success(),
                    "node {} exits 0 on SIGTERM, got {status}: {}",
                    node.addr,
                    node.log_text()
                );
            }
        }
        self.assert_nothing_left().await;
        self.torn_down = true;
    }

    /// No key and no subscribed pub/sub channel under the prefix (waiting, at most the
    /// heartbeat's reach, for keys that expire by themselves).
    pub async fn assert_nothing_left(&self) {
        let started = Instant::now();
        let within = self.heartbeat * 2 + Duration::from_secs(3);
        loop {
            let keys = keys_under(self.redis_port, &self.prefix).await;
            let channels = pubsub_channels_under(self.redis_port, &self.prefix).await;
            if keys.is_empty() && channels.is_empty() {
                println!(
                    "redis under {}: empty {:?} after the nodes stopped",
                    self.prefix,
                    started.elapsed()
                );
                return;
            }
            if started.elapsed() > within {
                let mut left = Vec::new();
                for key in &keys {
                    let ttl = redis_cli(self.redis_port, &["PTTL", key]).await;
                    let kind = redis_cli(self.redis_port, &["TYPE", key]).await;
                    left.push(format!(
                        "{key} ({}, pttl {})",
                        kind.unwrap_or_default().trim(),
                        ttl.unwrap_or_default().trim()
                    ));
                }
                panic!(
                    "left in Redis under {} {within:?} after the nodes stopped: keys {left:#?}, \
                     subscribed channels {channels:?}",
                    self.prefix
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    /// A test that failed before its teardown: kill the nodes and remove what they left under
    /// the prefix, so the shared Redis does not collect garbage (only this prefix is touched).
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        for node in &mut self.nodes {
            let _ = node.child.start_kill();
        }
        let pattern = format!("{}*", self.prefix);
        let port = self.redis_port.to_string();
        let Ok(out) = std::process::Command::new("redis-cli")
            .args(["-p", &port, "--scan", "--pattern", &pattern])
            .output()
        else {
            return;
        };
        for key in lines(&String::from_utf8_lossy(&out.stdout)) {
            let _ = std::process::Command::new("redis-cli")
                .args(["-p", &port, "DEL", &key])
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// The binary with `--host 127.0.0.1 --port 0 --log-format json`, whatever else `args` and
/// `envs` say, and everything it writes to stdout and stderr.
pub struct LoggedServer {
    /// Its base URL, `http://127.0.0.1:<port>`, as it announced it.
    pub url: String,
    child: Child,
    log: Arc<Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl LoggedServer {
    pub async fn start(args: &[&str], envs: &[(&str, &str)]) -> LoggedServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_broadcast-server"))
            .args(["--host", "127.0.0.1", "--port", "0", "--log-format", "json"])
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = oneshot::channel();
        let readers = vec![
            read_lines(child.stdout.take().expect("stdout"), log.clone(), Some(tx)),
            read_lines(child.stderr.take().expect("stderr"), log.clone(), None),
        ];
        let url = tokio::time::timeout(Duration::from_secs(15), rx)
            .await
            .expect("the server announces its address")
            .expect("the server announces its address");
        LoggedServer {
            url,
            child,
            log,
            readers,
        }
    }

    pub fn ws_url(&self) -> String {
        format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            self.url.replacen("http", "ws", 1)
        )
    }

    /// Kills the server; returns everything it wrote.
    pub async fn stop(mut self) -> String {
        self.child.kill().await.expect("stop the server");
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
        self.log.lock().expect("log lock").clone()
    }
}

/// Reads a child's output into `log`; sends the first `listening on` address to `addr`.
fn read_lines<R: AsyncRead + Unpin + Send + 'static>(
    stream: R,
    log: Arc<Mutex<String>>,
    mut addr: Option<oneshot::Sender<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some(tx) = addr.take()
            {
                let url: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.'))
                    .collect();
                let _ = tx.send(url);
            }
            let mut log = log.lock().expect("log lock");
            log.push_str(&line);
            log.push('\n');
        }
    })
}
