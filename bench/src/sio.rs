//! A minimal Socket.IO v5 client over Engine.IO v4 WebSocket, just enough for load generation.
//!
//! Each connection is one task (the *pump*) that owns the WebSocket: it answers the server's
//! pings by itself, forwards event packets (`42[...]`) to an inbox, and writes what the
//! scenario queues. The scenario holds a [`Conn`]: dropping it closes the socket.
//!
//! Every connection binds its own loopback source address (127.0.0.2, 127.0.0.3, ...) so that
//! tens of thousands of sockets never exhaust the ephemeral ports of one address pair.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout_at;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The server under test: one node, or several nodes of one cluster. Only loopback addresses
/// are accepted: this tool never leaves the host.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The first node: the broadcaster's, and the one whose `/healthz` is read.
    pub(crate) addr: SocketAddr,
    nodes: Vec<SocketAddr>,
    sources: Vec<Ipv4Addr>,
}

impl Target {
    /// Parses `http://127.0.0.1:PORT` (or `ws://`, or bare `IP:PORT`) and checks it is loopback.
    pub(crate) fn parse(url: &str, source_ips: usize) -> Result<Self, String> {
        Self::nodes(&[url], source_ips)
    }

    /// Several nodes of one cluster, each as [`Target::parse`] takes it; the first is the
    /// broadcaster's.
    pub(crate) fn nodes(urls: &[&str], source_ips: usize) -> Result<Self, String> {
        let nodes = urls
            .iter()
            .map(|url| parse_addr(url))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(&addr) = nodes.first() else {
            return Err("no server to target".into());
        };
        if !(1..=250).contains(&source_ips) {
            return Err("--source-ips must be 1 to 250".into());
        }
        let sources = (0..source_ips)
            .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8))
            .collect();
        Ok(Self {
            addr,
            nodes,
            sources,
        })
    }

    /// How many nodes connections are spread over.
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The node (index into the list given) of the `i`-th connection: connection 0, the
    /// broadcaster, goes to the first node; viewers 1, 2, 3, … go round-robin to the first,
    /// second, third, … node, so with two nodes half of them share the broadcaster's.
    pub(crate) fn node_of(&self, i: usize) -> usize {
        i.saturating_sub(1) % self.nodes.len()
    }

    /// The loopback source address of the `i`-th connection.
    pub(crate) fn source(&self, i: usize) -> Ipv4Addr {
        self.sources[i % self.sources.len()]
    }
}

fn parse_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = authority
        .parse()
        .map_err(|e| format!("{url}: expected http://127.0.0.1:PORT ({e})"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{url}: only loopback targets are allowed"));
    }
    if !addr.is_ipv4() {
        return Err(format!("{url}: use an IPv4 loopback address"));
    }
    Ok(addr)
}

/// One event packet as received, with the instant the pump read it.
pub(crate) struct Frame {
    pub(crate) text: Utf8Bytes,
    pub(crate) at: Instant,
}

impl Frame {
    /// The event name of `42["name",...]`.
    pub(crate) fn name(&self) -> &str {
        let s = self.text.as_str();
        s.strip_prefix("42[\"")
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
    }

    /// The first argument of the event (or `Null`).
    pub(crate) fn payload(&self) -> Value {
        let body = self.text.as_str().get(2..).unwrap_or("[]");
        match serde_json::from_str::<Value>(body) {
            Ok(Value::Array(mut items)) if items.len() > 1 => items.swap_remove(1),
            _ => Value::Null,
        }
    }

    /// A short description for error reports.
    pub(crate) fn describe(&self) -> String {
        let s = self.text.as_str();
        s.chars().take(160).collect()
    }
}

/// A cheap handle that queues packets on a connection.
#[derive(Clone)]
pub(crate) struct Emitter {
    out: mpsc::UnboundedSender<Message>,
}

impl Emitter {
    /// Queues an already-encoded packet; false when the connection is gone.
    pub(crate) fn raw(&self, packet: String) -> bool {
        self.out.send(Message::text(packet)).is_ok()
    }

    /// Queues `42["event",payload]`.
    pub(crate) fn emit(&self, event: &str, payload: &Value) -> bool {
        let packet = format!(
            "42[{},{}]",
            Value::String(event.to_owned()),
            serde_json::to_string(payload).unwrap_or_else(|_| "null".into())
        );
        self.raw(packet)
    }
}

/// A connected Socket.IO client socket.
pub(crate) struct Conn {
    pub(crate) sid: String,
    /// The node it is connected to (see [`Target::node_of`]).
    pub(crate) node: usize,
    emitter: Emitter,
    inbox: mpsc::UnboundedReceiver<Frame>,
}

impl Conn {
    /// Connects from the `index`-th source address to the `index`-th connection's node and
    /// completes the Socket.IO handshake.
    pub(crate) async fn connect(
        target: &Target,
        index: usize,
        deadline: Instant,
    ) -> Result<Conn, String> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        let source = SocketAddr::new(target.source(index).into(), 0);
        let node = target.node_of(index);
        let addr = target.nodes[node];
        socket
            .bind(source)
            .map_err(|e| format!("bind {source}: {e}"))?;
        let stream = timeout_at(deadline, socket.connect(addr))
            .await
            .map_err(|_| "connect: timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;

        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        // Small buffers: the packets here are small, and 20,000 sockets add up.
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0);
        let (mut ws, _) = timeout_at(
            deadline,
            tokio_tungstenite::client_async_with_config(url, stream, Some(config)),
        )
        .await
        .map_err(|_| "websocket upgrade: timed out".to_string())?
        .map_err(|e| format!("websocket upgrade: {e}"))?;

        let open = next_text(&mut ws, deadline).await?;
        if !open.starts_with('0') {
            return Err(format!("expected Engine.IO open packet, got {open:?}"));
        }
        ws.send(Message::text("40"))
            .await
            .map_err(|e| format!("send connect: {e}"))?;
        let sid = loop {
            let packet = next_text(&mut ws, deadline).await?;
            if let Some(body) = packet.strip_prefix("40") {
                let v: Value = serde_json::from_str(body)
                    .map_err(|e| format!("bad connect packet {packet:?}: {e}"))?;
                break v["sid"]
                    .as_str()
                    .ok_or_else(|| format!("connect packet without sid: {packet:?}"))?
                    .to_owned();
            }
            if packet.starts_with("44") {
                return Err(format!("connect refused: {packet}"));
            }
            if packet == "2" {
                ws.send(Message::text("3"))
                    .await
                    .map_err(|e| format!("pong: {e}"))?;
            }
        };

        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tokio::spawn(pump(ws, out_rx, in_tx));
        Ok(Conn {
            sid,
            node,
            emitter: Emitter { out: out_tx },
            inbox: in_rx,
        })
    }

    pub(crate) fn emitter(&self) -> Emitter {
        self.emitter.clone()
    }

    pub(crate) fn emit(&self, event: &str, payload: &Value) -> bool {
        self.emitter.emit(event, payload)
    }

    /// The next event, or `None` once the connection is closed.
    pub(crate) async fn recv(&mut self) -> Option<Frame> {
        self.inbox.recv().await
    }

    /// Waits for the event `name`, skipping others; `error` and `relay_error` fail.
    pub(crate) async fn expect(&mut self, name: &str, deadline: Instant) -> Result<Frame, String> {
        let deadline = tokio::time::Instant::from_std(deadline);
        loop {
            let frame = timeout_at(deadline, self.inbox.recv())
                .await
                .map_err(|_| format!("timed out waiting for {name}"))?
                .ok_or_else(|| format!("connection closed while waiting for {name}"))?;
            match frame.name() {
                n if n == name => return Ok(frame),
                "error" | "relay_error" => {
                    return Err(format!("while waiting for {name}: {}", frame.describe()));
                }
                _ => {}
            }
        }
    }

    /// Keeps the socket open (answering pings, discarding events) until the returned handle is
    /// dropped. A close by the server is counted in `dropped`.
    pub(crate) fn hold(self, dropped: Arc<AtomicUsize>) -> Held {
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let Conn {
            emitter, mut inbox, ..
        } = self;
        tokio::spawn(async move {
            // The emitter lives as long as this task: dropping it is what closes the socket.
            let _emitter = emitter;
            loop {
                tokio::select! {
                    frame = inbox.recv() => if frame.is_none() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    },
                    _ = &mut stop_rx => break,
                }
            }
        });
        Held { _stop: stop_tx }
    }
}

/// A connection kept open in the background; dropping this closes it.
pub(crate) struct Held {
    _stop: oneshot::Sender<()>,
}

async fn next_text(
    ws: &mut WebSocketStream<TcpStream>,
    deadline: tokio::time::Instant,
) -> Result<String, String> {
    loop {
        let msg = timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "handshake: timed out".to_string())?
            .ok_or_else(|| "handshake: connection closed".to_string())?
            .map_err(|e| format!("handshake: {e}"))?;
        match msg {
            Message::Text(t) => return Ok(t.as_str().to_owned()),
            Message::Close(_) => return Err("handshake: closed by server".into()),
            _ => {}
        }
    }
}

/// Owns the WebSocket: writes queued packets, answers pings, forwards events.
async fn pump(
    mut ws: WebSocketStream<TcpStream>,
    mut out: mpsc::UnboundedReceiver<Message>,
    inbox: mpsc::UnboundedSender<Frame>,
) {
    loop {
        tokio::select! {
            biased;
            msg = out.recv() => match msg {
                Some(msg) => {
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
                None => {
                    // The scenario let go of the connection: close it like a browser tab would.
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    break;
                }
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let at = Instant::now();
                    match text.as_str() {
                        "2" => {
                            if ws.send(Message::text("3")).await.is_err() {
                                break;
                            }
                        }
                        // Engine.IO close or Socket.IO disconnect from the server.
                        "1" | "41" => break,
                        _ => {
                            // The inbox may be gone while the scenario only holds the emitter.
                            let _ = inbox.send(Frame { text, at });
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broadcaster_goes_to_the_first_node_and_viewers_round_robin() {
        let target = Target::nodes(&["http://127.0.0.1:4001", "127.0.0.1:4002"], 4)
            .expect("two loopback nodes");
        assert_eq!(target.node_count(), 2);
        assert_eq!(target.addr, "127.0.0.1:4001".parse().expect("address"));
        let nodes: Vec<usize> = (0..6).map(|i| target.node_of(i)).collect();
        assert_eq!(nodes, [0, 0, 1, 0, 1, 0]);
    }

    #[test]
    fn one_node_takes_everyone() {
        let target = Target::parse("http://localhost:3000/", 4).expect("loopback");
        assert!((0..5).all(|i| target.node_of(i) == 0));
    }

    #[test]
    fn a_node_off_the_host_is_refused() {
        let refused = Target::nodes(&["http://127.0.0.1:4001", "http://10.0.0.1:4002"], 4);
        assert!(refused.is_err_and(|e| e.contains("only loopback")));
    }
}
