//! Feed rounds, bounded by the job (`feed_threads`), not by its feeds: one
//! timer thread keeps every feed's next round time and starts the rounds
//! that are due, at most `threads` in progress at once. A round whose
//! start only sends calls (a LOOPP feed, set up: [`Ticked::starts_at_once`])
//! is started by the timer itself and runs as a future on the
//! completion-queue thread its replies arrive on, holding no thread; the
//! rest (a feed's set-up, an in-process round) runs on workers, at most
//! `threads`, started as such rounds need them and ended after 10 s idle.
//! A feed costs no thread of its own.
//!
//! Feeds added together start spread over their first interval, so they
//! do not all come due at the same instant.
//!
//! With a slack (the job's `round_slack`), the timer starts rounds only on
//! ticks that far apart: a round starts at the first tick at or after it
//! is due (never before, less than `slack` after), so rounds due close
//! together start together. Their calls then meet plugins that are awake
//! and warm, where spread out each call wakes a sleeping peer: fewer
//! wake-ups, less CPU per round, for rounds that start a little late. A
//! feed's rounds stay one interval apart on average: its next round is
//! due one interval after the last one was due, not after it started.
//!
//! A feed's rounds never overlap: a feed is either waiting for its time in
//! the timer, in its backlog, queued for a worker, or in one round (on a
//! worker or as a future), whose end hands it back ([`Done`]). Its next
//! round is one interval after the last one was due, or at once when that
//! time has passed (a round that overran its interval is followed by one
//! catch-up round, not a burst), as a `crossbeam_channel::tick` per feed
//! did. Rounds due while `threads` are in progress, or waiting for a
//! worker, are counted by the `loopp_feed_rounds_queued` gauge.
//!
//! Removing a feed ([`Entry::remove`]) waits for its round in progress, if
//! any, and never starts another: a queued round is skipped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

/// Rounds in progress at once, and worker threads, when the job does not
/// say (`feed_threads`). A LOOPP round mostly waits on its plugins, so
/// more rounds than cores can be in progress at once. 128, not 64: at 1,000 LOOPP feeds on 2 cores, with
/// 64 the node fell behind in 8 of 10 runs (875-1,004 rounds a second of
/// 1,000 due) and then spent more CPU per round (1.8-1.9 ms) as queued
/// rounds slowed each other; with 128 it kept up in 3 of 4 (981-1,004,
/// 1.5-1.6 ms), runs interleaved (measured when every round held a worker
/// thread). Workers start only as rounds need them.
pub const DEFAULT_THREADS: usize = 128;

/// The most a job may ask for.
pub const MAX_THREADS: usize = 1024;

/// A feed's work, started once per round on a worker thread.
pub trait Ticked: Send {
    /// Runs one round (or the set-up before it), or starts it: the feed is
    /// handed back with `done` when the round ends. Dropping `done` instead
    /// (a panic) stops the feed; the others go on.
    fn tick(self: Box<Self>, done: Done);
    /// The feed's name, for logs.
    fn name(&self) -> &str;
    /// Whether the next `tick` only starts a round that runs elsewhere and
    /// returns at once, blocking nowhere: the timer thread then calls it
    /// itself, with no hand-off to a worker.
    fn starts_at_once(&self) -> bool {
        false
    }
}

/// A feed in the scheduler.
pub type Task = Box<dyn Ticked>;

/// Hands a feed back to the scheduler when its round ends
/// ([`Done::finish`]); dropped unfinished, the feed stops.
pub struct Done {
    id: u64,
    name: Arc<str>,
    cmd: Sender<Cmd>,
    finished: bool,
}

impl Done {
    /// The round is over: the feed's next one is due one interval after
    /// this one was.
    pub fn finish(mut self, task: Task) {
        self.finished = true;
        let _ = self.cmd.send(Cmd::Done {
            id: self.id,
            task: Some(task),
        });
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if !self.finished {
            // As when a feed had its own thread: that feed stops, the
            // others go on.
            log::error!("feed {}: a round panicked; the feed stops", self.name);
            let _ = self.cmd.send(Cmd::Done {
                id: self.id,
                task: None,
            });
        }
    }
}

enum Cmd {
    Add {
        id: u64,
        task: Task,
        interval: Duration,
    },
    Done {
        id: u64,
        task: Option<Task>,
    },
    Remove {
        id: u64,
        ack: Sender<()>,
    },
    /// The scheduler is dropped: finish the rounds in progress, then end.
    Stop,
}

/// A job for a worker: the feed, and whether it was removed meanwhile.
struct Job {
    id: u64,
    name: Arc<str>,
    task: Task,
    cancelled: Arc<AtomicBool>,
    /// When its round was due.
    due: Instant,
}

/// The timer thread and the workers. Dropping it stops them (after the
/// rounds in progress) and drops every feed left.
pub struct Scheduler {
    cmd: Sender<Cmd>,
    next_id: std::sync::atomic::AtomicU64,
    timer: Option<JoinHandle<()>>,
    crew: Arc<Crew>,
}

/// One feed in the scheduler; [`Entry::remove`] (or dropping it) takes it
/// out.
pub struct Entry {
    id: u64,
    cmd: Sender<Cmd>,
    removed: bool,
}

impl Scheduler {
    /// Starts the timer thread, with at most `threads` rounds in progress
    /// (at least one); it starts up to `threads` workers as rounds need
    /// them. Rounds start on ticks `slack` apart (zero: as each is due).
    pub fn start(threads: usize, slack: Duration) -> std::io::Result<Scheduler> {
        Scheduler::start_idle(threads, slack, WORKER_IDLE)
    }

    /// [`Scheduler::start`], with workers that end after `idle` without a
    /// job.
    fn start_idle(threads: usize, slack: Duration, idle: Duration) -> std::io::Result<Scheduler> {
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded::<Cmd>();
        let crew = Arc::new(Crew {
            state: Mutex::new(Roster {
                queue: VecDeque::new(),
                waiting: Vec::new(),
                alive: 0,
                occupied: 0,
                closed: false,
            }),
            idle,
        });
        let timer = Timer {
            slots: HashMap::new(),
            heap: BinaryHeap::new(),
            max_rounds: threads.max(1),
            in_progress: 0,
            backlog: VecDeque::new(),
            workers: Vec::new(),
            crew: crew.clone(),
            done: cmd_tx.clone(),
            stopping: false,
            ticks: Ticks {
                slack,
                epoch: Instant::now(),
            },
        };
        let timer = std::thread::Builder::new()
            .name("feed-timer".into())
            .spawn(move || timer.run(cmd_rx))?;
        Ok(Scheduler {
            cmd: cmd_tx,
            next_id: std::sync::atomic::AtomicU64::new(1),
            timer: Some(timer),
            crew,
        })
    }

    /// Worker threads alive now (what the feed threads gauge shows).
    pub fn workers(&self) -> usize {
        self.crew.lock().alive
    }

    /// Adds a feed: its first round is one to two `interval`s from now (see
    /// [`spread`]).
    pub fn add(&self, task: Task, interval: Duration) -> Entry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.cmd.send(Cmd::Add { id, task, interval });
        Entry {
            id,
            cmd: self.cmd.clone(),
            removed: false,
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // The timer waits for the rounds in progress, then closes the job
        // queue, which ends the workers.
        let _ = self.cmd.send(Cmd::Stop);
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
    }
}

impl Entry {
    /// Takes the feed out: waits for its round in progress, if any, and
    /// drops it.
    pub fn remove(mut self) {
        self.remove_now();
    }

    fn remove_now(&mut self) {
        if std::mem::replace(&mut self.removed, true) {
            return;
        }
        let (ack, done) = crossbeam_channel::bounded(1);
        if self.cmd.send(Cmd::Remove { id: self.id, ack }).is_ok() {
            let _ = done.recv();
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.remove_now();
    }
}

/// Where in its first interval feed `id` starts: feeds added together (a
/// node's start) spread over the interval instead of all coming due at
/// once, so the rounds of many feeds do not queue behind each other each
/// interval. Fibonacci hashing: consecutive ids land far apart.
fn spread(id: u64, interval: Duration) -> Duration {
    let frac = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11; // 53 bits
    interval.mul_f64(frac as f64 / (1u64 << 53) as f64)
}

/// How long a worker waits for a job before it ends: rounds that start
/// elsewhere need workers only for set-ups (a node's start, a plugin's
/// restart), so those started then do not stay.
const WORKER_IDLE: Duration = Duration::from_secs(10);

/// What the timer and the workers share: the jobs no worker has taken,
/// the idle workers, and the counts, all under one lock, so a job is
/// never left without a worker and a worker never ends with one waiting.
struct Crew {
    state: Mutex<Roster>,
    /// How long a worker waits for a job before it ends ([`WORKER_IDLE`]).
    idle: Duration,
}

struct Roster {
    /// Jobs no worker has taken yet, oldest first: at most one per feed.
    queue: VecDeque<Job>,
    /// Idle workers, the most recently idle last. A job goes to that one:
    /// under steady load the same few workers take every round and the
    /// rest end after `idle` without one. (With one queue for all, the
    /// worker that waited longest took the next job, so none ever waited
    /// `idle` and their number stayed at the most ever busy at once.)
    waiting: Vec<Arc<Hand>>,
    /// Workers alive.
    alive: usize,
    /// Jobs queued or on a worker (not rounds in flight elsewhere).
    occupied: usize,
    /// No job comes any more: workers end once the queue is empty.
    closed: bool,
}

/// An idle worker's place: a job is put in it and the worker woken.
#[derive(Default)]
struct Hand {
    job: Mutex<Option<Job>>,
    wake: Condvar,
}

impl Crew {
    fn lock(&self) -> std::sync::MutexGuard<'_, Roster> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs jobs until the crew is closed and no job is left, or none came
/// for `crew.idle`; every feed goes back to the timer through its
/// [`Done`].
fn work(cmd: Sender<Cmd>, crew: Arc<Crew>) {
    let hand = Arc::new(Hand::default());
    loop {
        let Some(job) = next_job(&crew, &hand) else {
            return;
        };
        crate::node::metrics::feed_rounds_queued(-1);
        let done = Done {
            id: job.id,
            name: job.name,
            cmd: cmd.clone(),
            finished: false,
        };
        if job.cancelled.load(Ordering::Acquire) {
            done.finish(job.task);
        } else {
            crate::node::metrics::feed_round_started(job.due.elapsed());
            // A panic drops `done` (and the feed) while unwinding.
            let task = job.task;
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || task.tick(done)));
        }
        crew.lock().occupied -= 1;
    }
}

/// A worker's next job: the oldest queued, else one handed to it while it
/// waits (as the most recently idle worker). None: the worker ends, as
/// no job came for `crew.idle`, or the crew is closed.
fn next_job(crew: &Crew, hand: &Arc<Hand>) -> Option<Job> {
    let mut st = crew.lock();
    if let Some(job) = st.queue.pop_front() {
        return Some(job);
    }
    if !st.closed {
        st.waiting.push(hand.clone());
        let until = Instant::now() + crew.idle;
        loop {
            // Whoever hands a job or closes the crew takes the hand out
            // of `waiting` first, under this lock.
            if let Some(job) = hand.job.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return Some(job);
            }
            if st.closed {
                break;
            }
            let now = Instant::now();
            if now >= until {
                st.waiting.retain(|h| !Arc::ptr_eq(h, hand));
                break;
            }
            st = hand
                .wake
                .wait_timeout(st, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
    st.alive -= 1;
    crate::node::metrics::feed_threads(st.alive);
    None
}

/// A feed as the timer keeps it.
struct Slot {
    name: Arc<str>,
    /// None while the feed is queued, on a worker or in a round.
    task: Option<Task>,
    interval: Duration,
    /// When its next (or current) round was due.
    due: Instant,
    cancelled: Arc<AtomicBool>,
    /// Who waits for its removal, once its round in progress is done.
    removing: Option<Sender<()>>,
}

struct Timer {
    slots: HashMap<u64, Slot>,
    /// (due, id); entries whose slot has another due time are stale.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The most rounds in progress (queued for a worker, on one, or in
    /// flight elsewhere), and the most workers: `feed_threads`.
    max_rounds: usize,
    /// Rounds in progress now.
    in_progress: usize,
    /// Feeds due while `max_rounds` were in progress, oldest first.
    backlog: VecDeque<u64>,
    /// Every worker started and not yet joined (some may have ended).
    workers: Vec<JoinHandle<()>>,
    crew: Arc<Crew>,
    done: Sender<Cmd>,
    /// The scheduler was dropped: no round starts, feeds go as they are
    /// handed back.
    stopping: bool,
    /// When rounds may start.
    ticks: Ticks,
}

/// The instants at which the timer starts rounds: every instant when the
/// slack is zero, else ticks `slack` apart from `epoch`.
#[derive(Clone, Copy)]
struct Ticks {
    slack: Duration,
    epoch: Instant,
}

impl Ticks {
    /// The last tick at or before `now`: rounds due by then may start.
    fn at_or_before(&self, now: Instant) -> Instant {
        self.round(now, false)
    }

    /// The first tick at or after `due`: when a round due then starts.
    fn at_or_after(&self, due: Instant) -> Instant {
        self.round(due, true)
    }

    fn round(&self, t: Instant, up: bool) -> Instant {
        let s = self.slack.as_nanos();
        if s == 0 {
            return t;
        }
        let n = t.saturating_duration_since(self.epoch).as_nanos();
        let ticks = if up { n.div_ceil(s) } else { n / s };
        // u64 nanoseconds are 584 years: no overflow in a process's life.
        self.epoch + Duration::from_nanos((ticks * s) as u64)
    }
}

impl Timer {
    fn run(mut self, cmds: Receiver<Cmd>) {
        loop {
            if !self.stopping {
                self.dispatch_due(self.ticks.at_or_before(Instant::now()));
            } else if self.slots.is_empty() {
                break;
            }
            let next = self
                .heap
                .peek()
                .map(|Reverse((due, _))| self.ticks.at_or_after(*due));
            let cmd = match next {
                Some(due) => match cmds.recv_deadline(due) {
                    Ok(c) => c,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                },
                None => match cmds.recv() {
                    Ok(c) => c,
                    Err(_) => break,
                },
            };
            self.handle(cmd);
        }
        // The workers finish their rounds and end: no job comes any more.
        {
            let mut st = self.crew.lock();
            st.closed = true;
            for hand in st.waiting.drain(..) {
                hand.wake.notify_one();
            }
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }

    /// Hands `job` to the most recently idle worker, else queues it and
    /// starts a worker when every one is busy, up to the bound. Failing to
    /// start one is not fatal while another runs: the round waits its turn.
    fn queue(&mut self, job: Job) {
        let crew = self.crew.clone();
        let mut st = crew.lock();
        st.occupied += 1;
        if let Some(hand) = st.waiting.pop() {
            *hand.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
            hand.wake.notify_one();
            return;
        }
        st.queue.push_back(job);
        // A worker that is between jobs takes it.
        if st.occupied <= st.alive || st.alive >= self.max_rounds {
            return;
        }
        self.workers.retain(|w| !w.is_finished());
        let (done, c) = (self.done.clone(), crew.clone());
        match std::thread::Builder::new()
            .name(format!("feed-round-{}", st.alive))
            .spawn(move || work(done, c))
        {
            Ok(t) => {
                self.workers.push(t);
                st.alive += 1;
                crate::node::metrics::feed_threads(st.alive);
            }
            Err(e) if st.alive == 0 => {
                log::error!("cannot start a feed round thread: {e}; rounds wait until one starts")
            }
            Err(e) => log::warn!("cannot start another feed round thread: {e}"),
        }
    }

    /// Moves the feeds due by `now` (the last tick) to the backlog, then
    /// starts what the bound on rounds in progress allows.
    fn dispatch_due(&mut self, now: Instant) {
        while let Some(Reverse((due, id))) = self.heap.peek().copied() {
            if due > now {
                break;
            }
            self.heap.pop();
            match self.slots.get(&id) {
                Some(slot) if slot.due == due && slot.task.is_some() => {
                    self.backlog.push_back(id);
                    crate::node::metrics::feed_rounds_queued(1);
                }
                _ => {}
            }
        }
        while self.in_progress < self.max_rounds {
            let Some(id) = self.backlog.pop_front() else {
                break;
            };
            crate::node::metrics::feed_rounds_queued(-1);
            // Gone meanwhile (removed): its place is free.
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            let Some(task) = slot.task.take() else {
                continue;
            };
            self.in_progress += 1;
            let (cancelled, name, due) = (slot.cancelled.clone(), slot.name.clone(), slot.due);
            if task.starts_at_once() {
                crate::node::metrics::feed_round_started(due.elapsed());
                let done = Done {
                    id,
                    name,
                    cmd: self.done.clone(),
                    finished: false,
                };
                // A panic drops `done` (and the feed) while unwinding.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(move || task.tick(done)));
                continue;
            }
            crate::node::metrics::feed_rounds_queued(1);
            self.queue(Job {
                id,
                name,
                task,
                cancelled,
                due,
            });
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Add { id, task, interval } => {
                let due = Instant::now() + interval + spread(id, interval);
                self.slots.insert(
                    id,
                    Slot {
                        name: Arc::from(task.name()),
                        task: Some(task),
                        interval,
                        due,
                        cancelled: Arc::new(AtomicBool::new(false)),
                        removing: None,
                    },
                );
                self.heap.push(Reverse((due, id)));
            }
            Cmd::Done { id, task } => {
                self.in_progress -= 1;
                let Some(slot) = self.slots.get_mut(&id) else {
                    return;
                };
                if self.stopping || slot.removing.is_some() || task.is_none() {
                    let slot = self.slots.remove(&id).expect("present");
                    drop(task);
                    if let Some(ack) = slot.removing {
                        let _ = ack.send(());
                    }
                    return;
                }
                let now = Instant::now();
                slot.due = (slot.due + slot.interval).max(now);
                slot.task = task;
                self.heap.push(Reverse((slot.due, id)));
            }
            Cmd::Stop => {
                self.stopping = true;
                self.heap.clear();
                // Feeds waiting for their time go now, and so do those
                // queued (their round never started: taken back here, as
                // no worker may ever take them); those on a worker or in a
                // round elsewhere are cancelled and go when handed back.
                let queued: Vec<Job> = {
                    let mut st = self.crew.lock();
                    st.occupied -= st.queue.len();
                    st.queue.drain(..).collect()
                };
                for job in queued {
                    self.in_progress -= 1;
                    crate::node::metrics::feed_rounds_queued(-1);
                    self.slots.remove(&job.id);
                }
                crate::node::metrics::feed_rounds_queued(-(self.backlog.len() as i64));
                self.backlog.clear();
                self.slots.retain(|_, s| {
                    s.cancelled.store(true, Ordering::Release);
                    s.task.is_none()
                });
            }
            Cmd::Remove { id, ack } => {
                let Some(slot) = self.slots.get_mut(&id) else {
                    let _ = ack.send(());
                    return;
                };
                slot.cancelled.store(true, Ordering::Release);
                if slot.task.is_some() {
                    let slot = self.slots.remove(&id).expect("present");
                    drop(slot.task);
                    let _ = ack.send(());
                } else {
                    slot.removing = Some(ack);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    /// A feed that records which thread ran each round, whether two of its
    /// rounds ever overlapped, and how many it ran.
    struct Probe {
        name: String,
        round_time: Duration,
        running: Arc<AtomicBool>,
        overlapped: Arc<AtomicBool>,
        rounds: Arc<AtomicUsize>,
        threads: Arc<Mutex<HashSet<String>>>,
        panic_at: Option<usize>,
        /// Rounds run on a thread of their own, as a LOOPP round runs on
        /// the completion-queue thread, and hand the feed back from there.
        elsewhere: bool,
        /// Rounds in flight now, across probes, and the most seen.
        in_flight: Arc<(AtomicUsize, AtomicUsize)>,
        /// When each round started, across probes: (probe index, instant).
        starts: Arc<Mutex<Vec<(usize, Instant)>>>,
        index: usize,
    }

    impl Probe {
        fn play(&self) {
            if self.running.swap(true, Ordering::SeqCst) {
                self.overlapped.store(true, Ordering::SeqCst);
            }
            self.starts
                .lock()
                .unwrap()
                .push((self.index, Instant::now()));
            let now = self.in_flight.0.fetch_add(1, Ordering::SeqCst) + 1;
            self.in_flight.1.fetch_max(now, Ordering::SeqCst);
            let n = self.rounds.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::sleep(self.round_time);
            self.in_flight.0.fetch_sub(1, Ordering::SeqCst);
            self.running.store(false, Ordering::SeqCst);
            if Some(n) == self.panic_at {
                panic!("round {n} of {} fails", self.name);
            }
        }
    }

    impl Ticked for Probe {
        fn name(&self) -> &str {
            &self.name
        }

        fn starts_at_once(&self) -> bool {
            self.elsewhere
        }

        fn tick(self: Box<Self>, done: Done) {
            let me = std::thread::current().name().unwrap_or("").to_string();
            self.threads.lock().unwrap().insert(me);
            if self.elsewhere {
                std::thread::spawn(move || {
                    self.play();
                    done.finish(self);
                });
            } else {
                self.play();
                done.finish(self);
            }
        }
    }

    struct Probes {
        overlapped: Arc<AtomicBool>,
        rounds: Vec<Arc<AtomicUsize>>,
        threads: Arc<Mutex<HashSet<String>>>,
        in_flight: Arc<(AtomicUsize, AtomicUsize)>,
        starts: Arc<Mutex<Vec<(usize, Instant)>>>,
    }

    fn probes(n: usize, round_time: Duration) -> (Vec<Probe>, Probes) {
        let overlapped = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(Mutex::new(HashSet::new()));
        let in_flight = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let starts = Arc::new(Mutex::new(Vec::new()));
        let mut out = Vec::new();
        let mut rounds = Vec::new();
        for i in 0..n {
            let r = Arc::new(AtomicUsize::new(0));
            rounds.push(r.clone());
            out.push(Probe {
                name: format!("f{i}"),
                round_time,
                running: Arc::new(AtomicBool::new(false)),
                overlapped: overlapped.clone(),
                rounds: r,
                threads: threads.clone(),
                panic_at: None,
                elsewhere: false,
                in_flight: in_flight.clone(),
                starts: starts.clone(),
                index: i,
            });
        }
        (
            out,
            Probes {
                overlapped,
                rounds,
                threads,
                in_flight,
                starts,
            },
        )
    }

    /// Adds every probe as a feed due every `interval`.
    fn add_all(scheduler: &Scheduler, feeds: Vec<Probe>, interval: Duration) -> Vec<Entry> {
        feeds
            .into_iter()
            .map(|p| scheduler.add(Box::new(p), interval))
            .collect()
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn fifty_feeds_run_on_the_configured_threads_and_a_feed_never_overlaps_itself() {
        let scheduler = Scheduler::start(3, Duration::ZERO).unwrap();
        // Rounds longer than the interval: every feed is always due.
        let (feeds, seen) = probes(50, Duration::from_millis(2));
        let entries = add_all(&scheduler, feeds, Duration::from_millis(1));
        wait_for("three rounds of every feed", || {
            seen.rounds.iter().all(|r| r.load(Ordering::SeqCst) >= 3)
        });
        for e in entries {
            e.remove();
        }
        let threads = seen.threads.lock().unwrap().clone();
        assert!(
            !threads.is_empty() && threads.len() <= 3,
            "rounds ran on {threads:?}"
        );
        assert!(threads.iter().all(|t| t.starts_with("feed-round-")));
        assert!(!seen.overlapped.load(Ordering::SeqCst));
    }

    /// Workers started for a burst of rounds that need a thread end once
    /// idle, and a worker starts again for the next such round.
    #[test]
    fn idle_workers_end_and_start_again_when_needed() {
        let scheduler =
            Scheduler::start_idle(4, Duration::ZERO, Duration::from_millis(300)).unwrap();
        let (feeds, seen) = probes(8, Duration::from_millis(20));
        let entries = add_all(&scheduler, feeds, Duration::from_millis(1));
        wait_for("two rounds of every feed", || {
            seen.rounds.iter().all(|r| r.load(Ordering::SeqCst) >= 2)
        });
        assert!(scheduler.workers() > 1, "{}", scheduler.workers());
        drop(entries);
        wait_for("every idle worker to end", || scheduler.workers() == 0);
        let (mut feeds, seen) = probes(1, Duration::ZERO);
        let _again = scheduler.add(Box::new(feeds.remove(0)), Duration::from_millis(5));
        wait_for("rounds after the workers ended", || {
            seen.rounds[0].load(Ordering::SeqCst) >= 3
        });
        assert_eq!(scheduler.workers(), 1);
    }

    /// After a burst, the workers a steady load does not need end while it
    /// goes on: a round goes to the most recently idle worker, so the
    /// others wait their `idle` out. (Handed to whichever waited longest,
    /// one round every 5 ms kept all eight busy enough never to end.)
    #[test]
    fn workers_a_steady_load_does_not_need_end_while_it_runs() {
        let scheduler =
            Scheduler::start_idle(8, Duration::ZERO, Duration::from_millis(300)).unwrap();
        let (feeds, burst) = probes(8, Duration::from_millis(20));
        let entries = add_all(&scheduler, feeds, Duration::from_millis(1));
        wait_for("two rounds of every feed in the burst", || {
            burst.rounds.iter().all(|r| r.load(Ordering::SeqCst) >= 2)
        });
        let peak = scheduler.workers();
        assert!(peak > 2, "the burst needs several workers: {peak}");
        let (mut feeds, steady) = probes(1, Duration::ZERO);
        let _steady = scheduler.add(Box::new(feeds.remove(0)), Duration::from_millis(5));
        drop(entries);
        wait_for("the workers the steady feed does not need to end", || {
            scheduler.workers() <= 1
        });
        let before = steady.rounds[0].load(Ordering::SeqCst);
        wait_for("the steady feed's rounds to go on", || {
            steady.rounds[0].load(Ordering::SeqCst) >= before + 20
        });
        assert_eq!(scheduler.workers(), 1);
    }

    #[test]
    fn feeds_added_together_start_spread_over_their_interval() {
        let interval = Duration::from_secs(1);
        let mut starts: Vec<Duration> = (1..=100).map(|id| spread(id, interval)).collect();
        assert!(starts.iter().all(|s| *s < interval));
        starts.sort();
        // No two of 100 within a hundredth of the mean gap of each other.
        let min_gap = starts.windows(2).map(|w| w[1] - w[0]).min().unwrap();
        assert!(min_gap > Duration::from_micros(100), "{min_gap:?}");
    }

    /// With a slack, rounds start on its ticks: never before they are due,
    /// less than a slack after, and rounds due close together start
    /// together; a feed still runs one round per interval.
    #[test]
    fn with_a_slack_rounds_due_close_together_start_together() {
        const FEEDS: usize = 20;
        let (interval, slack) = (Duration::from_millis(400), Duration::from_millis(100));
        let scheduler = Scheduler::start(FEEDS, slack).unwrap();
        let (mut feeds, seen) = probes(FEEDS, Duration::ZERO);
        feeds.iter_mut().for_each(|p| p.elsewhere = true);
        // Each feed's first round is due `interval + spread(id)` after it
        // is added (ids from 1, in order), its next ones an interval apart;
        // taken from before the adds, these due times are a little early.
        let added = Instant::now();
        let entries = add_all(&scheduler, feeds, interval);
        wait_for("four rounds of every feed", || {
            seen.rounds.iter().all(|r| r.load(Ordering::SeqCst) >= 4)
        });
        drop(entries);
        let mut starts = seen.starts.lock().unwrap().clone();
        starts.sort_by_key(|(_, at)| *at);
        let mut nth = [0u32; FEEDS];
        for (i, at) in &starts {
            let due = added + interval + spread(*i as u64 + 1, interval) + interval * nth[*i];
            nth[*i] += 1;
            assert!(
                *at >= due,
                "feed {i} round {} started before it was due",
                nth[*i]
            );
            // The margin: how late the adds and a loaded machine may be.
            let late = *at - due;
            assert!(
                late < slack + Duration::from_millis(40),
                "feed {i} round {} started {late:?} after it was due (slack {slack:?})",
                nth[*i]
            );
        }
        // Starts within 20 ms of each other are one batch: spread over
        // 400 ms, 20 feeds' rounds would make 20 batches a round; on ticks
        // 100 ms apart, at most 4 (5 with a late tick between).
        let batches = 1 + starts
            .windows(2)
            .filter(|w| w[1].1 - w[0].1 > Duration::from_millis(20))
            .count();
        let span = starts.last().unwrap().1 - starts[0].1;
        let ticks = span.as_millis() / slack.as_millis() + 1;
        assert!(
            batches as u128 <= ticks + 2,
            "{} rounds started in {batches} batches over {span:?}, {ticks} ticks",
            starts.len()
        );
    }

    #[test]
    fn a_job_starts_only_the_threads_its_rounds_need() {
        let scheduler = Scheduler::start(8, Duration::ZERO).unwrap();
        // Two feeds whose rounds never meet need one thread.
        let (feeds, seen) = probes(2, Duration::ZERO);
        let entries = add_all(&scheduler, feeds, Duration::from_millis(20));
        wait_for("five rounds of each feed", || {
            seen.rounds.iter().all(|r| r.load(Ordering::SeqCst) >= 5)
        });
        drop(entries);
        let threads = seen.threads.lock().unwrap().clone();
        assert!(threads.len() <= 2, "rounds ran on {threads:?}");
    }

    #[test]
    fn remove_waits_for_the_round_in_progress_and_starts_no_other() {
        remove_waits_for_the_round(false);
    }

    #[test]
    fn remove_waits_for_the_round_in_flight_elsewhere_and_starts_no_other() {
        remove_waits_for_the_round(true);
    }

    fn remove_waits_for_the_round(elsewhere: bool) {
        let scheduler = Scheduler::start(2, Duration::ZERO).unwrap();
        let (mut feeds, seen) = probes(1, Duration::from_millis(200));
        feeds[0].elsewhere = elsewhere;
        let entry = scheduler.add(Box::new(feeds.remove(0)), Duration::from_millis(1));
        wait_for("a round in progress", || {
            seen.rounds[0].load(Ordering::SeqCst) == 1
        });
        let t0 = Instant::now();
        entry.remove();
        // It waited for the round (it had up to 200 ms left)...
        let after = seen.rounds[0].load(Ordering::SeqCst);
        assert_eq!(after, 1, "a round started after remove was asked");
        assert!(
            t0.elapsed() > Duration::from_millis(20),
            "{:?}",
            t0.elapsed()
        );
        // ... and none starts later.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(seen.rounds[0].load(Ordering::SeqCst), 1);
    }

    /// Rounds that start at once and run elsewhere (a LOOPP round, on the
    /// completion-queue thread) are started by the timer and need no
    /// worker; at most `threads` are in progress at once, and a feed's
    /// rounds still never overlap.
    #[test]
    fn rounds_in_flight_elsewhere_need_no_worker_and_stay_within_the_bound() {
        for bound in [3, 16] {
            let scheduler = Scheduler::start(bound, Duration::ZERO).unwrap();
            let (mut feeds, seen) = probes(20, Duration::from_millis(30));
            feeds.iter_mut().for_each(|p| p.elsewhere = true);
            let entries = add_all(&scheduler, feeds, Duration::from_millis(1));
            wait_for("three rounds of every feed", || {
                seen.rounds.iter().all(|r| r.load(Ordering::SeqCst) >= 3)
            });
            let most = seen.in_flight.1.load(Ordering::SeqCst);
            assert!(most <= bound, "{most} rounds in flight, bound {bound}");
            assert!(
                most >= bound.min(10),
                "only {most} rounds in flight at once, bound {bound}"
            );
            let threads = seen.threads.lock().unwrap().clone();
            assert_eq!(threads, HashSet::from(["feed-timer".to_string()]));
            assert_eq!(scheduler.workers(), 0);
            drop(entries);
            assert!(!seen.overlapped.load(Ordering::SeqCst));
        }
    }

    #[test]
    fn a_panicking_round_stops_its_feed_only() {
        let scheduler = Scheduler::start(1, Duration::ZERO).unwrap();
        let (mut feeds, seen) = probes(2, Duration::ZERO);
        feeds[0].panic_at = Some(2);
        let entries = add_all(&scheduler, feeds, Duration::from_millis(1));
        wait_for("ten rounds of the healthy feed", || {
            seen.rounds[1].load(Ordering::SeqCst) >= 10
        });
        assert_eq!(seen.rounds[0].load(Ordering::SeqCst), 2);
        drop(entries);
    }

    #[test]
    fn dropping_the_scheduler_ends_its_threads_after_the_rounds_in_progress() {
        let scheduler = Scheduler::start(4, Duration::ZERO).unwrap();
        let (feeds, seen) = probes(8, Duration::from_millis(30));
        let entries = add_all(&scheduler, feeds, Duration::from_millis(1));
        wait_for("rounds in progress", || {
            seen.rounds.iter().any(|r| r.load(Ordering::SeqCst) > 0)
        });
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            drop(scheduler);
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the scheduler's drop is bounded by the rounds in progress");
        let counts: Vec<usize> = seen
            .rounds
            .iter()
            .map(|r| r.load(Ordering::SeqCst))
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let later: Vec<usize> = seen
            .rounds
            .iter()
            .map(|r| r.load(Ordering::SeqCst))
            .collect();
        assert_eq!(counts, later, "rounds ran after the scheduler was dropped");
        assert!(!seen.overlapped.load(Ordering::SeqCst));
        // The entries outlive it: removing them returns at once.
        drop(entries);
    }
}
