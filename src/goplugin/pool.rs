//! Reused threads for short blocking jobs: gRPC handlers that may block
//! ([`crate::goplugin::rpc::respond_blocking`]) and the round driver's calls with
//! deadlines. A job takes an idle thread or starts a new one: it never waits
//! for a free thread, so jobs that wait on each other cannot starve, and a
//! job abandoned at its deadline only keeps its own thread. A thread idle
//! for [`IDLE`] ends, so an idle process holds no extra threads.
//!
//! Starting a thread per call cost about a quarter of a LOOPP round's
//! overhead (benches/feed.rs); reuse removes it.
//!
//! A [`Lane`] bounds the jobs of one peer on top of the pool: what the node
//! serves a plugin (keystore, data sources, error log, re-served providers)
//! runs in that plugin's lane, at most `running` at once and `queued`
//! waiting; beyond, [`crate::goplugin::rpc::respond_blocking`] answers
//! RESOURCE_EXHAUSTED. So a plugin that floods the node with slow calls
//! holds a bounded number of threads, and other plugins' lanes are
//! untouched. Services pick their lane up when they are created inside
//! [`Lane::enter`] (the generated glue does it), so nothing else needs to
//! pass it along.
//!
//! A lane whose jobs are short and bounded (a chain write and its sync)
//! may run a job on the thread that admits it instead
//! ([`Lane::run_here_when_quiet`]): when that thread is a framed
//! connection's reader with nothing else to read ([`quiet`]), it would
//! only block waiting for the next call, so the job costs no other call
//! anything, and it saves the wake-up of a pool thread on the call's path.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How long an idle thread waits for a job before it ends.
pub const IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

/// Where an idle thread waits for its next job. Each thread has its own, so
/// handing a job over wakes exactly that thread with one futex call; a
/// shared channel spun and yielded in every waiting thread first, which
/// was a tenth of a LOOPP round's CPU on two cores.
struct Slot {
    job: Mutex<Option<Job>>,
    ready: Condvar,
}

struct Pool {
    /// Threads waiting for a job, the most recently idle last: jobs go to
    /// the thread whose stack and cache are warm, and threads beyond what
    /// the load needs stay idle until [`IDLE`] ends them.
    idle: Mutex<Vec<Arc<Slot>>>,
}

static POOL: LazyLock<Pool> = LazyLock::new(Pool::new);

/// Runs `f` on a thread of the process's pool; an error only if a new
/// thread was needed and could not be started.
pub fn spawn(f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    POOL.spawn(f)
}

impl Pool {
    fn new() -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
        }
    }

    fn spawn(&'static self, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let job: Job = Box::new(f);
        {
            let mut idle = self.idle.lock().unwrap();
            if let Some(slot) = idle.pop() {
                // Under the idle lock: a thread whose wait timed out
                // checks its slot under it too, so it cannot leave with
                // this job.
                *slot.job.lock().unwrap() = Some(job);
                slot.ready.notify_one();
                return Ok(());
            }
        }
        std::thread::Builder::new()
            .name("loopp-pool".into())
            .spawn(move || self.work(job))
            .map(|_| ())
    }

    /// A pool thread: runs `job`, then whatever it is given until it has
    /// been idle for [`IDLE`].
    fn work(&'static self, first: Job) {
        // A job's wake-ups (a blocking step's answer handed back to its
        // future) are polled on this thread once it is done.
        let run = |job: Job| crate::goplugin::framed::task::drain_point(job);
        run(first);
        let slot = Arc::new(Slot {
            job: Mutex::new(None),
            ready: Condvar::new(),
        });
        loop {
            self.idle.lock().unwrap().push(slot.clone());
            let deadline = Instant::now() + IDLE;
            let mut next = slot.job.lock().unwrap();
            loop {
                if let Some(job) = next.take() {
                    drop(next);
                    run(job);
                    break;
                }
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    drop(next);
                    let mut idle = self.idle.lock().unwrap();
                    // A job may have been given since the timeout.
                    if let Some(job) = slot.job.lock().unwrap().take() {
                        drop(idle);
                        run(job);
                        break;
                    }
                    idle.retain(|s| !Arc::ptr_eq(s, &slot));
                    return;
                };
                next = slot.ready.wait_timeout(next, left).unwrap().0;
            }
        }
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

/// A bounded share of the pool for one peer (see the module doc).
#[derive(Clone)]
pub struct Lane(Arc<LaneInner>);

struct LaneInner {
    /// How errors call it.
    what: String,
    /// Its `plugin` label in metrics.
    name: String,
    /// What to raise when the lane is full.
    remedy: String,
    running_max: usize,
    queued_max: usize,
    /// A job admitted with room on a [`quiet`] thread runs there.
    here_when_quiet: bool,
    state: Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    running: usize,
    /// Admitted to wait: jobs in `queue` plus admissions not yet pushed.
    queued: usize,
    queue: VecDeque<Job>,
}

/// Why a lane refused a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// What the lane is called in errors.
    pub lane: String,
    /// What to raise.
    pub remedy: String,
    /// Jobs running in it.
    pub running: usize,
    /// Jobs waiting in it.
    pub queued: usize,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} running and {} waiting, its bound; retry later, or raise {}",
            self.lane, self.running, self.queued, self.remedy
        )
    }
}

/// A job admitted by [`Lane::admit`]: run it with [`Admitted::start`].
#[must_use]
pub struct Admitted {
    lane: Lane,
    queued: bool,
}

thread_local! {
    static AMBIENT: RefCell<Option<Lane>> = const { RefCell::new(None) };
    static QUIET: Cell<Option<RawFd>> = const { Cell::new(None) };
}

/// While alive, this thread may run one job of a lane that allows it
/// ([`Lane::run_here_when_quiet`]) itself, at the job's admission, if the
/// socket given has nothing to read then: a framed connection's reader
/// holds it while a call's handler runs, its own buffer empty.
pub struct Quiet(());

/// Marks this thread [`Quiet`] while `socket` has nothing to read, until
/// the guard drops (the socket is asked only when a job could run here).
pub fn quiet(socket: RawFd) -> Quiet {
    QUIET.set(Some(socket));
    Quiet(())
}

impl Drop for Quiet {
    fn drop(&mut self) {
        QUIET.set(None);
    }
}

/// Takes this thread's [`Quiet`] mark: true if it had one and its socket
/// has no bytes waiting.
fn take_quiet() -> bool {
    let Some(socket) = QUIET.take() else {
        return false;
    };
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int, the bytes waiting, to `waiting`;
    // the socket is the reader's, open while its guard lives.
    let r = unsafe { libc::ioctl(socket, libc::FIONREAD, &mut waiting) };
    r == 0 && waiting == 0
}

/// While alive, [`Lane::ambient`] on this thread is the entered lane.
pub struct Entered(Option<Lane>);

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.0.take();
        AMBIENT.with(|a| *a.borrow_mut() = previous);
    }
}

impl Lane {
    /// The lane of what the node serves plugin `name` (in errors and
    /// metrics), running at most `running` jobs (at least 1) with at most
    /// `queued` waiting.
    pub fn new(name: &str, running: usize, queued: usize) -> Lane {
        Lane::with_remedy(
            &format!("plugin {name}'s calls to what the node serves it"),
            name,
            "the plugin's rpc.concurrent_calls / rpc.queued_calls",
            running,
            queued,
        )
    }

    /// A lane called `what` in errors and `name` in metrics; a full one
    /// names `remedy` as what to raise.
    pub fn with_remedy(
        what: &str,
        name: &str,
        remedy: &str,
        running: usize,
        queued: usize,
    ) -> Lane {
        Lane(Arc::new(LaneInner {
            what: what.to_string(),
            remedy: remedy.to_string(),
            name: name.to_string(),
            running_max: running.max(1),
            queued_max: queued,
            here_when_quiet: false,
            state: Mutex::new(LaneState::default()),
        }))
    }

    /// This new lane's jobs run on the admitting thread when it is
    /// [`quiet`] and the lane has room; for short, bounded jobs only: the
    /// connection's next call waits for the job.
    pub fn run_here_when_quiet(mut self) -> Lane {
        Arc::get_mut(&mut self.0)
            .expect("a lane is set to run here before it is shared")
            .here_when_quiet = true;
        self
    }

    /// The lane's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Makes this the thread's ambient lane until the guard drops.
    pub fn enter(&self) -> Entered {
        Entered(AMBIENT.with(|a| a.borrow_mut().replace(self.clone())))
    }

    /// The lane entered on this thread, if any.
    pub fn ambient() -> Option<Lane> {
        AMBIENT.with(|a| a.borrow().clone())
    }

    /// Takes a place for one job (running or waiting), or says why not.
    pub fn admit(&self) -> Result<Admitted, Busy> {
        let mut st = self.0.state.lock().unwrap();
        let queued = if st.running < self.0.running_max {
            st.running += 1;
            false
        } else if st.queued < self.0.queued_max {
            st.queued += 1;
            true
        } else {
            crate::goplugin::metrics::lane_rejected(&self.0.name);
            return Err(Busy {
                lane: self.0.what.clone(),
                remedy: self.0.remedy.clone(),
                running: st.running,
                queued: st.queued,
            });
        };
        self.publish(&st);
        Ok(Admitted {
            lane: self.clone(),
            queued,
        })
    }

    /// Takes a running place, if one is free now, for work that needs no
    /// thread (a future answered on the completion queue); it counts
    /// against the lane's bound like a running job until the [`Held`]
    /// drops. None when the lane is at its bound: the caller then admits
    /// the work as a job ([`Lane::admit`]), which may wait or be refused.
    pub fn try_hold(&self) -> Option<Held> {
        let mut st = self.0.state.lock().unwrap();
        if st.running >= self.0.running_max {
            return None;
        }
        st.running += 1;
        self.publish(&st);
        Some(Held(self.clone()))
    }

    fn publish(&self, st: &LaneState) {
        crate::goplugin::metrics::lane_state(&self.0.name, st.running, st.queued);
    }

    /// Runs `job`, then whatever waits in the lane, on one pool thread;
    /// or `job` here, if the lane allows it and this thread is [`quiet`]
    /// (once: a job it admits goes to the pool), and what waits on a pool
    /// thread.
    fn run(self, job: Job) {
        if self.0.here_when_quiet && take_quiet() {
            // The place goes (to a waiting job, or free) when the job
            // ends, even by a panic, which stays the job's own as on a
            // pool thread: the reader goes on.
            let _place = Held(self);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            return;
        }
        let lane = self.clone();
        let spawned = spawn(move || {
            job();
            loop {
                let next = {
                    let mut st = lane.0.state.lock().unwrap();
                    match st.queue.pop_front() {
                        Some(next) => {
                            st.queued -= 1;
                            lane.publish(&st);
                            next
                        }
                        None => {
                            st.running -= 1;
                            lane.publish(&st);
                            return;
                        }
                    }
                };
                next();
            }
        });
        if let Err(e) = spawned {
            log::error!("lane {}: cannot start a thread: {e}", self.0.name);
            let mut st = self.0.state.lock().unwrap();
            st.running -= 1;
            self.publish(&st);
        }
    }
}

/// A running place in a lane held without a thread ([`Lane::try_hold`]):
/// a call answered by a future on the completion queue. Dropping it frees
/// the place, or hands it to the first job waiting in the lane.
#[must_use]
pub struct Held(Lane);

impl Drop for Held {
    fn drop(&mut self) {
        let lane = &self.0;
        let mut st = lane.0.state.lock().unwrap();
        match st.queue.pop_front() {
            Some(next) => {
                st.queued -= 1;
                lane.publish(&st);
                drop(st);
                lane.clone().run(next);
            }
            None => {
                st.running -= 1;
                lane.publish(&st);
            }
        }
    }
}

impl Admitted {
    /// Runs `f` now if the lane had room, else when a running job is done.
    pub fn start(self, f: impl FnOnce() + Send + 'static) {
        let lane = self.lane;
        if !self.queued {
            return lane.run(Box::new(f));
        }
        let mut st = lane.0.state.lock().unwrap();
        if st.running < lane.0.running_max {
            // Every runner finished since the admission: run it ourselves.
            st.queued -= 1;
            st.running += 1;
            lane.publish(&st);
            drop(st);
            lane.run(Box::new(f));
        } else {
            st.queue.push_back(Box::new(f));
        }
    }
}

#[cfg(test)]
mod tests {
    /// A task a job wakes (a blocking step's answer handed back) is
    /// polled on that pool thread once the job is done, on a new thread
    /// and on a reused one alike: never handed to another thread.
    #[test]
    fn a_task_woken_by_a_job_is_polled_on_its_pool_thread() {
        for _ in 0..3 {
            let (tx, rx) = futures_channel::oneshot::channel::<()>();
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            crate::goplugin::framed::spawn(async move {
                let _ = rx.await;
                let _ = done_tx.send(std::thread::current().name().map(String::from));
            });
            spawn(move || {
                let _ = tx.send(());
            })
            .unwrap();
            let on = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(on.as_deref(), Some("loopp-pool"));
        }
    }

    use super::*;

    /// Where a job admitted to `lane` now runs: this thread's name or a
    /// pool thread's.
    fn runs_on(lane: &Lane) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        lane.admit().unwrap().start(move || {
            let _ = tx.send(std::thread::current().name().unwrap_or("").to_string());
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap()
    }

    /// A lane that allows it runs a job on a quiet admitting thread, once
    /// per quiet spell, and frees its place after; any other lane, or a
    /// thread that is not quiet, hands the job to the pool.
    #[test]
    fn a_quiet_thread_runs_a_job_of_a_lane_that_allows_it_once() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let here = std::thread::current().name().unwrap_or("").to_string();
        let (mine, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let socket = mine.as_raw_fd();
        let lane = Lane::new("quiet-test", 1, 4).run_here_when_quiet();
        let plain = Lane::new("plain-test", 1, 4);
        assert_eq!(runs_on(&lane), "loopp-pool", "not quiet");
        {
            let _quiet = quiet(socket);
            assert_eq!(
                runs_on(&plain),
                "loopp-pool",
                "a lane that does not allow it"
            );
            assert_eq!(runs_on(&lane), here, "quiet, and the lane allows it");
            assert_eq!(runs_on(&lane), "loopp-pool", "once per quiet spell");
        }
        {
            let _quiet = quiet(socket);
            // The place was freed: the lane (one running at most) takes
            // another job here at once.
            assert_eq!(runs_on(&lane), here);
        }
        {
            // The next call has come meanwhile: it must not wait.
            peer.write_all(b"x").unwrap();
            let _quiet = quiet(socket);
            assert_eq!(runs_on(&lane), "loopp-pool", "bytes wait on the socket");
        }
        // A job that panics here leaves its place free and the thread going.
        let (other, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        {
            let _quiet = quiet(other.as_raw_fd());
            lane.admit()
                .unwrap()
                .start(|| panic!("a job panics on purpose"));
        }
        assert_eq!(runs_on(&lane), "loopp-pool");
        // Once that pool thread is done too, no place is held.
        let t0 = Instant::now();
        while lane.0.state.lock().unwrap().running != 0 {
            assert!(t0.elapsed() < Duration::from_secs(5), "a place stays held");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(lane.0.state.lock().unwrap().queued, 0);
    }

    #[test]
    fn a_lane_runs_its_bound_queues_the_rest_and_refuses_beyond() {
        let lane = Lane::new("lane-test", 2, 3);
        let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<usize>();
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut refused = Vec::new();
        for i in 0..8 {
            match lane.admit() {
                Ok(a) => {
                    let (rx, done, running, peak) = (
                        release_rx.clone(),
                        done_tx.clone(),
                        running.clone(),
                        peak.clone(),
                    );
                    a.start(move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        peak.fetch_max(now, SeqCst);
                        rx.recv_timeout(Duration::from_secs(5)).unwrap();
                        running.fetch_sub(1, SeqCst);
                        done.send(i).unwrap();
                    });
                }
                Err(busy) => refused.push((i, busy)),
            }
        }
        // 2 run, 3 wait, 3 are refused with the lane's figures.
        assert_eq!(refused.len(), 3, "{refused:?}");
        let (_, busy) = &refused[0];
        assert_eq!((busy.running, busy.queued), (2, 3));
        assert!(
            busy.to_string().contains(
                "plugin lane-test's calls to what the node serves it: 2 running and 3 waiting"
            ),
            "{busy}"
        );
        // Both runners started (and no third), then all are let go.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while running.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "runners never started"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        for _ in 0..5 {
            release_tx.send(()).unwrap();
        }
        let mut finished: Vec<usize> = (0..5)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        finished.sort();
        assert_eq!(finished, vec![0, 1, 2, 3, 4]);
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Drained: the lane takes its full bound again.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lane.0.state.lock().unwrap().running > 0 {
            assert!(std::time::Instant::now() < deadline, "runners never ended");
            std::thread::sleep(Duration::from_millis(1));
        }
        let again: Vec<_> = (0..5).map(|_| lane.admit()).collect();
        assert!(again.iter().all(Result::is_ok));
        assert!(lane.admit().is_err());
        for a in again.into_iter().flatten() {
            a.start(|| {});
        }
    }

    /// A place held without a thread counts against the lane's bound, and
    /// when it drops, the job waiting in the lane runs on that place.
    #[test]
    fn a_held_place_counts_against_the_bound_and_passes_to_a_waiting_job() {
        let lane = Lane::new("hold-test", 1, 1);
        let held = lane.try_hold().expect("a free place");
        assert!(lane.try_hold().is_none(), "the one place is held");
        let (tx, rx) = crossbeam_channel::bounded(1);
        lane.admit()
            .expect("room to wait")
            .start(move || tx.send(()).unwrap());
        assert!(lane.admit().is_err(), "running and waiting are full");
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the waiting job has no place while one is held"
        );
        drop(held);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the waiting job ran on the freed place");
        let deadline = Instant::now() + Duration::from_secs(5);
        while lane.0.state.lock().unwrap().running > 0 {
            assert!(Instant::now() < deadline, "the place was never freed");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(lane.try_hold().expect("free again"));
        assert_eq!(lane.0.state.lock().unwrap().running, 0);
    }

    #[test]
    fn the_ambient_lane_is_scoped() {
        assert!(Lane::ambient().is_none());
        let outer = Lane::new("outer", 1, 1);
        let g = outer.enter();
        {
            let _inner = Lane::new("inner", 1, 1).enter();
            assert_eq!(Lane::ambient().unwrap().name(), "inner");
        }
        assert_eq!(Lane::ambient().unwrap().name(), "outer");
        drop(g);
        assert!(Lane::ambient().is_none());
    }

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
        while pool.idle_count() < 10 {
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
