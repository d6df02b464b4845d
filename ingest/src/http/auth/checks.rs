//! Where passwords and bearer tokens are checked: a few threads of their
//! own and a short queue. An argon2id check takes 19 MiB and tens of
//! milliseconds; on tokio's blocking pool (up to 512 threads) a burst of
//! failed sign-ins ran hundreds at once, and each thread's allocator kept
//! its 19 MiB after: gigabytes held for good, for anyone who can reach the
//! login form. Here at most [`THREADS`] run at once, [`QUEUED`] wait, and a
//! check beyond that is refused at once (the caller answers 503).

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

/// Checks run at once (the memory they hold: this many times 19 MiB).
pub const THREADS: usize = 2;
/// Checks waiting for a thread before more are refused.
pub const QUEUED: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

/// The checking threads' queue.
pub struct Checks {
    queue: SyncSender<Job>,
}

/// Every check waits its turn here; the threads start with the first.
pub fn checks() -> &'static Checks {
    static CHECKS: OnceLock<Checks> = OnceLock::new();
    CHECKS.get_or_init(|| Checks::start(THREADS, QUEUED))
}

impl Checks {
    /// `threads` threads taking from a queue of `queued`.
    fn start(threads: usize, queued: usize) -> Self {
        let (queue, jobs) = sync_channel::<Job>(queued);
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..threads {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("fleetpulse-auth-{i}"))
                .spawn(move || work(&jobs))
                .expect("spawn an authentication thread");
        }
        Self { queue }
    }

    /// Runs `check` on a checking thread; `None` when the queue is full
    /// (too many checks at once).
    pub async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(check());
        });
        match self.queue.try_send(job) {
            Ok(()) => rx.await.ok(),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => None,
        }
    }
}

fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let jobs = jobs.lock().unwrap_or_else(|e| e.into_inner());
            jobs.recv()
        };
        match job {
            // A check that panics answers nothing (its caller says 503);
            // the thread goes on taking checks.
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_the_threads_run_and_the_queue_waits_beyond_it_refused() {
        let checks = Checks::start(2, 3);
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let checks = Arc::new(checks);
        let mut waiting = Vec::new();
        // Two run (held at the gate), three wait in the queue.
        for _ in 0..5 {
            let (gate, running, most, checks) =
                (gate.clone(), running.clone(), most.clone(), checks.clone());
            waiting.push(tokio::spawn(async move {
                checks
                    .run(move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        most.fetch_max(now, SeqCst);
                        let _ = gate.lock().unwrap().recv();
                        running.fetch_sub(1, SeqCst);
                        7
                    })
                    .await
            }));
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        assert_eq!(checks.run(|| 1).await, None, "a sixth is refused");
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        for w in waiting {
            assert_eq!(w.await.unwrap(), Some(7));
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(checks.run(|| 2).await, Some(2), "the queue takes again");
        // A check that panics costs its caller an answer, not a thread.
        for _ in 0..3 {
            assert_eq!(
                checks.run(|| -> u8 { panic!("a check failed") }).await,
                None
            );
        }
        assert_eq!(checks.run(|| 3).await, Some(3));
    }
}
