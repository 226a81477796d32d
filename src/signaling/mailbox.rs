//! Runs one socket's events strictly one after another, in arrival order, even when handling
//! one has to wait (for Redis in cluster mode).
//!
//! socketioxide's own async handlers spawn a task per event, so two events of one socket may
//! run out of order: an ICE candidate overtaking its offer, a chat message the one before it.
//! Here an event first runs inline on the connection's task; when it completes there (in
//! memory mode almost always: it waits only for its channel's turn, held by another socket's
//! event for the few microseconds of its rule and emits) that is the whole cost. When it has to wait, it moves to
//! the socket's own queue, and every later event of the socket queues behind it until the queue
//! is empty again. Either way each event finishes before the next starts, and its emits leave
//! in that order.
//!
//! The queue and its worker task are made the first time an event has to wait: most sockets
//! never wait (in memory mode only those that met another's turn), and an idle connection
//! should not pay for them (a task
//! and a channel take about 1.6 KB).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Waker};

use tokio::sync::mpsc;

/// One event's handling.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Events one socket may have waiting; beyond it a client is sending faster than the server can
/// handle (only possible while Redis answers slowly) and its excess events are dropped.
pub const MAX_WAITING: usize = 256;

/// More events a broadcaster may have waiting for each viewer of its channels: a crowd that
/// joins at once is answered at once, an answer and a handful of ICE candidates per viewer,
/// faster than one socket's events can each wait for Redis. (Relay rates are limited per
/// pair for the same reason: a broadcaster's own rate grows with its audience.)
pub const WAITING_PER_VIEWER: usize = 16;

/// The most events any socket may have waiting, whatever its audience.
pub const MAX_WAITING_CEILING: usize = 65_536;

/// The most text a socket's waiting events may hold once more than [`MAX_WAITING`] wait: the
/// room a broadcaster's audience earns is for answers and candidates (a few kilobytes per
/// viewer), not for large events by the thousand.
pub const MAX_EXTRA_BYTES: usize = 32 << 20;

/// A socket's queue. Cheap to clone; the worker, once there is one, stops when the last clone
/// is dropped (after the jobs it already has).
#[derive(Clone, Default)]
pub struct Mailbox(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// The worker's queue, made by the first job that has to wait.
    tx: OnceLock<mpsc::UnboundedSender<(Job, usize)>>,
    /// Jobs handed to the worker and not finished yet.
    waiting: AtomicUsize,
    /// The size of their events' text.
    waiting_bytes: AtomicUsize,
}

/// The socket already has [`MAX_WAITING`] events waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Mailbox {
    /// An empty queue; its worker task is spawned when an event first has to wait.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs an event's handling (of an event `size` bytes long) after everything before it,
    /// unless the socket already has [`MAX_WAITING`] events waiting plus
    /// [`WAITING_PER_VIEWER`] for each of the `audience` (the viewers of the channels it
    /// broadcasts; asked only once the base bound is reached), or, beyond the base bound,
    /// their text would pass [`MAX_EXTRA_BYTES`].
    pub fn submit(
        &self,
        job: Job,
        size: usize,
        audience: impl FnOnce() -> usize,
    ) -> Result<(), Full> {
        let waiting = self.0.waiting.load(Ordering::Acquire);
        if waiting >= MAX_WAITING {
            let bound = audience()
                .saturating_mul(WAITING_PER_VIEWER)
                .saturating_add(MAX_WAITING)
                .min(MAX_WAITING_CEILING);
            let bytes = self.0.waiting_bytes.load(Ordering::Acquire);
            if waiting >= bound || bytes.saturating_add(size) > MAX_EXTRA_BYTES {
                return Err(Full);
            }
        }
        self.run(job, size);
        Ok(())
    }

    /// Like [`Mailbox::submit`], but never refused: for the disconnect, which must run.
    pub fn submit_last(&self, job: Job) {
        self.run(job, 0);
    }

    fn run(&self, mut job: Job, size: usize) {
        let inner = &self.0;
        if inner.waiting.load(Ordering::Acquire) == 0 {
            // Nothing of this socket is pending, so running it now keeps the order. A job that
            // cannot finish yet is polled again by the worker, with a real waker.
            if job
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_ready()
            {
                return;
            }
        }
        inner.waiting.fetch_add(1, Ordering::AcqRel);
        inner.waiting_bytes.fetch_add(size, Ordering::AcqRel);
        let tx = inner.tx.get_or_init(|| spawn_worker(Arc::downgrade(inner)));
        if tx.send((job, size)).is_err() {
            inner.waiting_bytes.fetch_sub(size, Ordering::AcqRel);
            inner.waiting.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!("event for a socket whose queue is gone");
        }
    }
}

/// The task that runs a socket's waiting jobs in order. It holds the counters weakly: the
/// sender lives in them, and the task must end once the socket's last clone is gone.
fn spawn_worker(inner: Weak<Inner>) -> mpsc::UnboundedSender<(Job, usize)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Job, usize)>();
    tokio::spawn(async move {
        while let Some((job, size)) = rx.recv().await {
            job.await;
            if let Some(inner) = inner.upgrade() {
                inner.waiting_bytes.fetch_sub(size, Ordering::AcqRel);
                inner.waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn events_finish_in_arrival_order_whether_or_not_they_wait() {
        let mailbox = Mailbox::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        for (i, wait_ms) in [(0, 0u64), (1, 30), (2, 0), (3, 10), (4, 0)] {
            let log = log.clone();
            mailbox
                .submit(
                    Box::pin(async move {
                        if wait_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                        }
                        log.lock().unwrap().push(i);
                    }),
                    0,
                    || 0,
                )
                .unwrap();
        }
        // The first runs inline; the second waits, so the rest queue behind it.
        assert_eq!(*log.lock().unwrap(), vec![0]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        // Idle again: the next event runs inline.
        let inline = log.clone();
        mailbox
            .submit(
                Box::pin(async move { inline.lock().unwrap().push(5) }),
                0,
                || 0,
            )
            .unwrap();
        assert_eq!(log.lock().unwrap().last(), Some(&5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_worker_comes_with_the_first_wait_and_ends_with_the_last_clone() {
        let mailbox = Mailbox::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let counted = ran.clone();
        mailbox.submit_last(Box::pin(async move {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert!(
            mailbox.0.tx.get().is_none(),
            "no worker while nothing waits"
        );

        let counted = ran.clone();
        mailbox.submit_last(Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(mailbox.0.tx.get().is_some(), "a worker once a job waits");
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        assert_eq!(tasks(), 1);
        // The queued job still runs after the socket's last clone is gone; then the worker ends.
        drop(mailbox);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ran.load(Ordering::SeqCst), 2);
        assert_eq!(tasks(), 0, "the worker ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_behind_a_slow_event_is_bounded_but_the_last_job_always_runs() {
        let mailbox = Mailbox::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let slow = || {
            let ran = ran.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ran.fetch_add(1, Ordering::SeqCst);
            }) as Job
        };
        let accepted = (0..MAX_WAITING + 50)
            .filter(|_| mailbox.submit(slow(), 0, || 0).is_ok())
            .count();
        assert_eq!(accepted, MAX_WAITING);
        mailbox.submit_last(slow());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(ran.load(Ordering::SeqCst), MAX_WAITING + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_broadcaster_may_have_more_waiting_for_each_viewer_up_to_a_ceiling() {
        let mailbox = Mailbox::new();
        let slow = || Box::pin(tokio::time::sleep(Duration::from_millis(10))) as Job;
        let viewers = 100;
        let accepted = (0..MAX_WAITING + viewers * WAITING_PER_VIEWER + 50)
            .filter(|_| mailbox.submit(slow(), 100, || viewers).is_ok())
            .count();
        assert_eq!(accepted, MAX_WAITING + viewers * WAITING_PER_VIEWER);

        let crowd = Mailbox::new();
        let accepted = (0..MAX_WAITING_CEILING + 50)
            .filter(|_| crowd.submit(slow(), 100, || usize::MAX).is_ok())
            .count();
        assert_eq!(accepted, MAX_WAITING_CEILING);

        // Large events earn no more than the byte bound beyond the base.
        let large = Mailbox::new();
        let size = 64 << 10;
        let accepted = (0..MAX_WAITING + 2000)
            .filter(|_| large.submit(slow(), size, || 10_000).is_ok())
            .count();
        assert_eq!(accepted, MAX_EXTRA_BYTES / size);
    }
}
