//! Reused threads for short blocking jobs: gRPC handlers that may block
//! ([`crate::goplugin::rpc::respond_blocking`]) and the round driver's calls with
//! deadlines. A job takes an idle thread or starts a new one: it never waits
//! for a free thread, so jobs that wait on each other cannot starve, and a
//! job abandoned at its deadline only keeps its own thread. A thread idle
//! for [`IDLE`] ends, so an idle process holds no extra threads.
//!
//! Starting a thread per call cost about a quarter of a LOOPP round's
//! overhead (benches/feed.rs); reuse removes it.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// How long an idle thread waits for a job before it ends.
pub const IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    tx: Sender<Job>,
    rx: Receiver<Job>,
    /// Threads waiting for a job. A job is sent only when one is counted
    /// here, and the count is taken down under the same lock.
    idle: Mutex<usize>,
}

static POOL: LazyLock<Pool> = LazyLock::new(Pool::new);

/// Runs `f` on a thread of the process's pool; an error only if a new
/// thread was needed and could not be started.
pub fn spawn(f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    POOL.spawn(f)
}

impl Pool {
    fn new() -> Pool {
        let (tx, rx) = crossbeam_channel::unbounded();
        Pool {
            tx,
            rx,
            idle: Mutex::new(0),
        }
    }

    fn spawn(&'static self, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        {
            let mut idle = self.idle.lock().unwrap();
            if *idle > 0 {
                *idle -= 1;
                let _ = self.tx.send(Box::new(f));
                return Ok(());
            }
        }
        std::thread::Builder::new()
            .name("loopp-pool".into())
            .spawn(move || {
                f();
                loop {
                    *self.idle.lock().unwrap() += 1;
                    match self.rx.recv_timeout(IDLE) {
                        Ok(job) => job(),
                        Err(_) => {
                            let mut idle = self.idle.lock().unwrap();
                            // A job may have been sent for us since the timeout.
                            match self.rx.try_recv() {
                                Ok(job) => {
                                    drop(idle);
                                    job();
                                }
                                Err(_) => {
                                    *idle -= 1;
                                    return;
                                }
                            }
                        }
                    }
                }
            })
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_never_wait_for_each_other_and_threads_are_reused() {
        // A pool of its own: other tests' jobs cannot take its threads.
        let pool: &'static Pool = Box::leak(Box::new(Pool::new()));
        // Ten jobs that all wait for the last one: a bounded pool would
        // deadlock; this one starts threads as needed.
        let (tx, rx) = crossbeam_channel::unbounded::<()>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        for _ in 0..9 {
            let (rx, done) = (rx.clone(), done_tx.clone());
            pool.spawn(move || {
                rx.recv_timeout(Duration::from_secs(5)).unwrap();
                done.send(std::thread::current().id()).unwrap();
            })
            .unwrap();
        }
        let done = done_tx.clone();
        pool.spawn(move || {
            for _ in 0..9 {
                tx.send(()).unwrap();
            }
            done.send(std::thread::current().id()).unwrap();
        })
        .unwrap();
        let first: std::collections::HashSet<_> = (0..10)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(first.len(), 10, "each job had its own thread");
        // Once the finished threads wait for work, the next jobs run on them.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while *pool.idle.lock().unwrap() < 10 {
            assert!(std::time::Instant::now() < deadline, "threads never idle");
            std::thread::sleep(Duration::from_millis(1));
        }
        for _ in 0..5 {
            let done = done_tx.clone();
            pool.spawn(move || done.send(std::thread::current().id()).unwrap())
                .unwrap();
            let id = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert!(first.contains(&id), "an idle thread was reused");
        }
    }
}
