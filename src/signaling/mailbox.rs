//! Runs one socket's events strictly one after another, in arrival order, even when handling
//! one has to wait (for Redis in cluster mode, for its channel's turn in memory).
//!
//! socketioxide's own async handlers spawn a task per event, so two events of one socket may
//! run out of order: an ICE candidate overtaking its offer, a chat message the one before it.
//! Here an event first runs inline on the calling task when nothing else of the socket runs or
//! waits; when it completes there (in memory mode almost always: it waits only for its
//! channel's turn, held by another socket's event for the few microseconds of its rule and
//! emits) that is the whole cost. When it has to wait, it moves to the front of the socket's
//! own queue, and every later event of the socket queues behind it until the queue is empty
//! again. Either way each event finishes before the next starts, and its emits leave in that
//! order.
//!
//! Events of one socket are submitted from its connection's task, but its disconnect may be
//! submitted from another thread (the heartbeat's timeout, another socket's event evicting it)
//! while an event runs inline: that one is queued, and the worker takes nothing from the queue
//! until the inline event has either finished or taken its place at the front. An event that
//! went pending inline may already hold a place in a line (its channel's turn is handed to it
//! next): polling anything of the socket before it again would wait for it forever.
//!
//! The queue and its worker task are made the first time an event has to wait: most sockets
//! never wait (in memory mode only those that met another's turn), and an idle connection
//! should not pay for them (a task and its queue take about 1.6 KB).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Waker};

use tokio::sync::Notify;

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

/// Set in [`Inner::waiting`] while an event runs inline: the worker leaves the queue alone.
const INLINE: usize = 1 << (usize::BITS - 1);

#[derive(Default)]
struct Inner {
    /// The worker's queue, made by the first job that has to wait.
    queue: OnceLock<Arc<Queue>>,
    /// Jobs running inline or handed to the worker and not finished yet, and [`INLINE`].
    waiting: AtomicUsize,
    /// The size of their events' text.
    waiting_bytes: AtomicUsize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last clone is gone: the worker runs what it has, then ends.
        if let Some(queue) = self.queue.get() {
            queue.closed.store(true, Ordering::Release);
            queue.ready.notify_one();
        }
    }
}

/// The jobs waiting for the worker, oldest first (an inline job that went pending goes first).
#[derive(Default)]
struct Queue {
    jobs: Mutex<VecDeque<(Job, usize)>>,
    /// Something was queued, an inline job let go of the queue, or the mailbox is gone.
    ready: Notify,
    closed: AtomicBool,
}

impl Queue {
    fn jobs(&self) -> MutexGuard<'_, VecDeque<(Job, usize)>> {
        // A poisoned queue is still a valid list of jobs.
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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
        let waiting = self.0.waiting.load(Ordering::Acquire) & !INLINE;
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
        // Nothing of this socket runs or waits: running it now keeps the order. Claimed with
        // `INLINE`, so that a job submitted meanwhile (on another thread, or by this one's own
        // handling) queues and waits for it.
        if inner
            .waiting
            .compare_exchange(0, INLINE | 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let ready = job
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_ready();
            if ready {
                inner.waiting.fetch_sub(INLINE | 1, Ordering::AcqRel);
                if let Some(queue) = inner.queue.get() {
                    queue.ready.notify_one();
                }
                return;
            }
            // Polled again by the worker, with a real waker, before anything queued meanwhile.
            inner.waiting_bytes.fetch_add(size, Ordering::AcqRel);
            let queue = self.queue();
            queue.jobs().push_front((job, size));
            inner.waiting.fetch_sub(INLINE, Ordering::AcqRel);
            queue.ready.notify_one();
            return;
        }
        inner.waiting.fetch_add(1, Ordering::AcqRel);
        inner.waiting_bytes.fetch_add(size, Ordering::AcqRel);
        let queue = self.queue();
        queue.jobs().push_back((job, size));
        queue.ready.notify_one();
    }

    /// The socket's queue, and its worker, made on first use.
    fn queue(&self) -> &Arc<Queue> {
        self.0.queue.get_or_init(|| {
            let queue = Arc::new(Queue::default());
            drop(tokio::spawn(work(queue.clone(), Arc::downgrade(&self.0))));
            queue
        })
    }
}

/// The task that runs a socket's waiting jobs in order. It holds the counters weakly: it must
/// end once the socket's last clone is gone (and its queue is empty).
async fn work(queue: Arc<Queue>, inner: Weak<Inner>) {
    loop {
        let next = {
            let mut jobs = queue.jobs();
            // Checked under the queue's lock: a job queued while one runs inline is only seen
            // together with the claim, which is let go of only after the inline job, if it
            // went pending, took its place at the front.
            let inline = inner
                .upgrade()
                .is_some_and(|inner| inner.waiting.load(Ordering::Acquire) & INLINE != 0);
            if inline { None } else { jobs.pop_front() }
        };
        match next {
            Some((job, size)) => {
                job.await;
                if let Some(inner) = inner.upgrade() {
                    inner.waiting_bytes.fetch_sub(size, Ordering::AcqRel);
                    inner.waiting.fetch_sub(1, Ordering::AcqRel);
                }
            }
            None if queue.closed.load(Ordering::Acquire) && queue.jobs().is_empty() => return,
            None => queue.ready.notified().await,
        }
    }
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
            mailbox.0.queue.get().is_none(),
            "no worker while nothing waits"
        );

        let counted = ran.clone();
        mailbox.submit_last(Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(mailbox.0.queue.get().is_some(), "a worker once a job waits");
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

    /// An event that went pending inline may hold a place in a line (its channel's turn, a
    /// fair lock, is handed to it next). The socket's disconnect submitted meanwhile (here by
    /// the event's own handling, as from another thread) wants the same lock: were it polled
    /// first, neither would ever finish (found by a review).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_pending_inline_runs_before_what_was_queued_meanwhile() {
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        let busy = turn.clone().lock_owned().await;
        let mailbox = Mailbox::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (line, queued, log) = (turn.clone(), mailbox.clone(), order.clone());
        let event: Job = Box::pin(async move {
            let mut take = std::pin::pin!(line.clone().lock_owned());
            // First in line for the turn.
            assert!(
                take.as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                    .is_pending()
            );
            let (line, log2) = (line.clone(), log.clone());
            queued.submit_last(Box::pin(async move {
                let _turn = line.lock_owned().await;
                log2.lock().unwrap().push("disconnect");
            }));
            let _turn = take.await;
            log.lock().unwrap().push("event");
        });
        mailbox.submit(event, 0, || 0).unwrap();
        drop(busy);
        tokio::time::timeout(Duration::from_secs(5), async {
            while order.lock().unwrap().len() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("both finish");
        assert_eq!(*order.lock().unwrap(), ["event", "disconnect"]);
    }

    /// Submissions from several threads at once, some waiting and some not: each job runs
    /// once, one job of the socket at a time, and the counters return to zero.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn jobs_from_several_threads_run_one_at_a_time() {
        let mailbox = Mailbox::new();
        let running = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for t in 0..4 {
            let (mailbox, running, ran) = (mailbox.clone(), running.clone(), ran.clone());
            threads.push(tokio::spawn(async move {
                for i in 0..500 {
                    let (running, ran) = (running.clone(), ran.clone());
                    mailbox.submit_last(Box::pin(async move {
                        assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "one at a time");
                        if (i + t) % 7 == 0 {
                            tokio::task::yield_now().await;
                        }
                        running.fetch_sub(1, Ordering::SeqCst);
                        ran.fetch_add(1, Ordering::SeqCst);
                    }));
                }
            }));
        }
        for thread in threads {
            thread.await.expect("no panic");
        }
        tokio::time::timeout(Duration::from_secs(10), async {
            while ran.load(Ordering::SeqCst) < 2000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every job ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(mailbox.0.waiting.load(Ordering::SeqCst), 0);
        assert_eq!(mailbox.0.waiting_bytes.load(Ordering::SeqCst), 0);
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
