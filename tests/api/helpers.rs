//! Test harness: the real server on an ephemeral port, and a small Socket.IO v5 client that
//! speaks the wire protocol itself (WebSocket or long-polling) so tests can also send what
//! official clients never would: malformed, oversized, out-of-order packets.

use std::time::Duration;

use broadcast_server::RunningServer;
use broadcast_server::config::Config;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
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
}

impl Client {
    /// Connects, completes the Socket.IO handshake and consumes `client_id`.
    pub async fn connect(ws_url: &str) -> Client {
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
        sink.send(Message::text("40")).await.expect("send connect");
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

    /// The next event must be `relay_error` for `event`; returns the message.
    pub async fn expect_relay_error(&mut self, event: &str) -> String {
        let payload = self.expect("relay_error").await;
        assert_eq!(payload["event"], event, "{payload}");
        payload["message"]
            .as_str()
            .expect("relay_error message")
            .to_owned()
    }

    /// Nothing arrives for a while.
    pub async fn assert_silent(&mut self) {
        if let Ok(Some(ev)) = tokio::time::timeout(QUIET, self.events.recv()).await {
            panic!("unexpected event {ev:?}");
        }
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
        let http = reqwest::Client::new();
        let base = format!("{}/socket.io/?EIO=4&transport=polling", app.url());
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
