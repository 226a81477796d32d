//! Every accepted connection, below HTTP: the connection cap, the write-stall timeout, and the
//! rewrite that keeps Engine.IO session ids secret.
//!
//! These live at the byte stream because that is the only place that sees a WebSocket after
//! its upgrade: HTTP layers stop at the upgrade, and socketioxide offers no hook on its frames.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum_server::accept::Accept;
use memchr::memmem;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::registry::ids::SocketId;

/// Length of an Engine.IO session id (socketioxide's `Sid`: 16 base64url characters).
pub const SESSION_ID_LEN: usize = 16;
/// How a Socket.IO v5 CONNECT packet for the default namespace starts; the session's socket
/// id follows.
const CONNECT_PREFIX: &[u8] = b"40{\"sid\":\"";

/// Public ids by Engine.IO session id, for the sessions that are connecting or connected.
///
/// socketioxide names a socket after its Engine.IO session and announces that name in the
/// Socket.IO CONNECT packet, so a client's `socket.id` *is* its transport credential. Node's
/// socket.io and python-socketio give the socket a separate id, and clients publish that one.
/// To keep `socket.id` equal to the public id other clients see (as pages written for the
/// earlier server expect) while the session id stays secret, the CONNECT packet leaving the
/// server is rewritten from session id to public id: public ids have the session id's length,
/// so the rewrite changes no frame or body length.
#[derive(Clone, Default)]
pub struct PublicIds {
    by_session: Arc<Mutex<HashMap<[u8; SESSION_ID_LEN], SocketId>>>,
}

impl PublicIds {
    /// Records the public id of a session before its CONNECT packet is sent.
    pub fn insert(&self, session: &str, public: SocketId) {
        if let Ok(key) = <[u8; SESSION_ID_LEN]>::try_from(session.as_bytes()) {
            self.lock().insert(key, public);
        }
    }

    pub fn remove(&self, session: &str) {
        if let Ok(key) = <[u8; SESSION_ID_LEN]>::try_from(session.as_bytes()) {
            self.lock().remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, session: &[u8]) -> Option<SocketId> {
        let key = <[u8; SESSION_ID_LEN]>::try_from(session).ok()?;
        self.lock().get(&key).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; SESSION_ID_LEN], SocketId>> {
        // Each critical section is one map operation; a poisoned map is still a valid map.
        self.by_session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The same bytes with every CONNECT packet's session id replaced by its public id, or
    /// `None` when there is nothing to replace (the common case: no copy).
    fn rewrite(&self, buf: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for start in memmem::find_iter(buf, CONNECT_PREFIX) {
            let at = start + CONNECT_PREFIX.len();
            let Some(session) = buf.get(at..at + SESSION_ID_LEN) else {
                continue;
            };
            if buf.get(at + SESSION_ID_LEN) != Some(&b'"') {
                continue;
            }
            if let Some(public) = self.lookup(session)
                && public.len() == SESSION_ID_LEN
            {
                out.get_or_insert_with(|| buf.to_vec())[at..at + SESSION_ID_LEN]
                    .copy_from_slice(public.as_bytes());
            }
        }
        out
    }
}

/// Closes every open connection at once, at the byte stream, so that clients see their
/// transport close and reconnect by themselves (a Socket.IO disconnect packet would tell the
/// official client not to). Used when this node's clients must join again: the cluster forgot
/// their state. Connections accepted afterwards are not affected.
#[derive(Clone, Default)]
pub struct Reconnector {
    current: Arc<std::sync::Mutex<CancellationToken>>,
}

impl Reconnector {
    fn token(&self) -> CancellationToken {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Drops every connection open now.
    pub fn drop_all(&self) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.cancel();
        *current = CancellationToken::new();
    }
}

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections beyond this are answered 503 and closed.
    pub max_connections: usize,
    /// A connection whose peer accepts no bytes for this long is closed: a client that stops
    /// reading would otherwise pin everything queued for it.
    pub write_stall: Duration,
    /// A new connection must send its first byte within this (hyper's own head timeout only
    /// starts once it knows the HTTP version, that is after the first bytes).
    pub first_byte: Duration,
}

/// A connection that sends nothing for this long is closed. Every live client speaks more
/// often: a WebSocket client answers the server's ping every 25 s, a polling client sends a
/// request at least as often, and browsers close idle keep-alive connections long before.
const READ_IDLE: Duration = Duration::from_secs(90);

/// Wraps the server's acceptor (plain TCP or TLS) with [`Connection`].
#[derive(Clone)]
pub struct GuardedAcceptor<A> {
    inner: A,
    limits: ConnectionLimits,
    open: Arc<AtomicUsize>,
    ids: PublicIds,
    reconnector: Reconnector,
    /// Throttles the over-the-cap warning (see `telemetry::throttled`).
    log_gate: Arc<AtomicU64>,
}

impl<A> GuardedAcceptor<A> {
    pub fn new(
        inner: A,
        limits: ConnectionLimits,
        open: Arc<AtomicUsize>,
        ids: PublicIds,
        reconnector: Reconnector,
    ) -> Self {
        Self {
            inner,
            limits,
            open,
            ids,
            reconnector,
            log_gate: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// What a client over the connection cap reads before the connection closes.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Retry-After: 5\r\n\
Connection: close\r\n\
Content-Length: 55\r\n\
\r\n\
Server is at its connection limit; try again shortly.\r\n";

impl<I, S, A> Accept<I, S> for GuardedAcceptor<A>
where
    A: Accept<I, S> + Clone + Send + Sync + 'static,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A::Future: Send + 'static,
    A::Service: Send + 'static,
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = Connection<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        // Count before the inner accept (a TLS handshake takes a while), so the cap holds for
        // connections that are still handshaking.
        let permit = Permit::take(&self.open);
        let over = permit.count > self.limits.max_connections;
        let inner = self.inner.accept(stream, service);
        let (limits, ids, log_gate) = (self.limits, self.ids.clone(), self.log_gate.clone());
        let dropped = Box::pin(self.reconnector.token().cancelled_owned());
        Box::pin(async move {
            let (mut stream, service) = inner.await?;
            if over {
                crate::telemetry::throttled(&log_gate, || {
                    tracing::warn!(
                        limit = limits.max_connections,
                        "connection refused: at the connection limit"
                    )
                });
                // Best effort: the client may not even be speaking HTTP.
                let answer = async {
                    stream.write_all(OVER_CAPACITY).await?;
                    stream.shutdown().await
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
                return Err(io::Error::other("over the connection limit"));
            }
            Ok((
                Connection {
                    inner: stream,
                    ids,
                    pending: Vec::new(),
                    stall_limit: limits.write_stall,
                    stall: None,
                    idle: Box::pin(tokio::time::sleep(limits.first_byte)),
                    dropped,
                    _permit: permit,
                },
                service,
            ))
        })
    }
}

/// Holds one slot of the connection count for as long as the connection lives.
struct Permit {
    open: Arc<AtomicUsize>,
    count: usize,
}

impl Permit {
    fn take(open: &Arc<AtomicUsize>) -> Self {
        let count = open.fetch_add(1, Ordering::Relaxed) + 1;
        Self {
            open: open.clone(),
            count,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One accepted connection: rewrites CONNECT packets (see [`PublicIds`]) and fails writes that
/// stall for longer than the limit.
pub struct Connection<S> {
    inner: S,
    ids: PublicIds,
    /// Rewritten bytes accepted from the caller but not yet written.
    pending: Vec<u8>,
    stall_limit: Duration,
    /// Running while the peer accepts no bytes.
    stall: Option<Pin<Box<Sleep>>>,
    /// When the peer has been silent too long; pushed back by every byte it sends.
    idle: Pin<Box<Sleep>>,
    /// Resolves when the node drops every connection (see [`Reconnector`]).
    dropped: Pin<Box<WaitForCancellationFutureOwned>>,
    _permit: Permit,
}

impl<S: AsyncWrite + Unpin> Connection<S> {
    /// Turns a `Pending` write into a timeout error once the peer has accepted nothing for the
    /// stall limit; any progress resets the clock.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.stall_limit;
        let sleep = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(sleep.as_mut().poll(cx));
        tracing::warn!(
            "closing a connection that accepted no data for {limit:?} (--write-timeout-secs)"
        );
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "peer stopped reading",
        ))
    }

    fn progress<T>(
        &mut self,
        poll: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.stall = None;
                Poll::Ready(result)
            }
            Poll::Pending => match self.stalled(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    /// Writes out rewritten bytes held back by an earlier partial write.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let poll = Pin::new(&mut self.inner).poll_write(cx, &self.pending);
            let n = ready!(self.progress(poll, cx))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Connection<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    let deadline = tokio::time::Instant::now() + READ_IDLE;
                    self.idle.as_mut().reset(deadline);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if self.dropped.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the node dropped its connections",
                    )));
                }
                ready!(self.idle.as_mut().poll(cx));
                tracing::debug!("closing a connection that sent nothing in time");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer sent nothing in time",
                )))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Connection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(rewritten) = this.ids.rewrite(buf) {
            let poll = Pin::new(&mut this.inner).poll_write(cx, &rewritten);
            let written = match poll {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => 0,
            };
            // The caller's bytes are ours now; the rest goes out before anything else.
            this.pending.extend_from_slice(&rewritten[written..]);
            return Poll::Ready(Ok(buf.len()));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(poll, cx)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(poll, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(poll, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packets_carry_the_public_id_and_nothing_else_changes() {
        let ids = PublicIds::default();
        let session = "AAAAAAAAAAAAAAAA";
        let public = SocketId::generate();
        ids.insert(session, public.clone());
        let frame = format!("\u{81}\u{1c}40{{\"sid\":\"{session}\"}}");
        let rewritten = ids.rewrite(frame.as_bytes()).expect("rewritten");
        assert_eq!(
            String::from_utf8(rewritten).unwrap(),
            format!("\u{81}\u{1c}40{{\"sid\":\"{public}\"}}")
        );
        // An unknown session, another packet, or a cut-off packet stay as they are.
        assert!(ids.rewrite(b"40{\"sid\":\"BBBBBBBBBBBBBBBB\"}").is_none());
        assert!(ids.rewrite(b"42[\"client_id\",{\"id\":\"x\"}]").is_none());
        assert!(ids.rewrite(b"40{\"sid\":\"AAAAAAAA").is_none());
        ids.remove(session);
        assert!(ids.is_empty());
    }
}
