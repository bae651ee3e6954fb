//! Waiting on this thread for a reply that comes in microseconds: spin a
//! little, yielding, then park.
//!
//! A thread that waits for an RPC's reply by parking (as
//! `futures_executor::block_on` does) goes to sleep in a futex, its vCPU
//! often halts, and the completion-queue thread that gets the reply must
//! wake it: on this project's VMs that wake-up is most of a loopback
//! health RPC (about 90-125 µs p50 parked, 60-75 µs spinning; CPU per
//! RPC, host and plugin together, the same or less, since the futex calls
//! and idle exits cost CPU too). Their guest kernels halt an idle vCPU at
//! once (`cpuidle` haltpoll with `guest_halt_poll_ns` 0), so a wake-up is
//! a VM exit. Go's runtime keeps the same latency by spinning its idle
//! threads before they sleep.
//!
//! [`block_on`] polls the future, then, while it is pending, checks for
//! its wake-up for at most the spin budget (`LOOPP_RPC_SPIN_US`,
//! [`DEFAULT_SPIN`]), giving the CPU to any runnable thread every few
//! checks (`sched_yield`: under load the threads that make the reply run
//! first), and then parks as `block_on` does. So a call that takes longer
//! costs at most the budget more CPU, and a thread waiting for a slow
//! call sleeps. At most one thread fewer than the CPUs spins at once (the
//! others park at once), so none with one CPU, and many waiters together
//! never take the CPUs their replies need.
//!
//! Used for the waits of the generated clients' blocking methods
//! ([`crate::goplugin::unary::wait`]): health checks, set-up calls, which
//! are few and wait for one reply each. LOOPP rounds are futures on the
//! completion-queue threads and never wait here; an in-process round's
//! wait on a feed worker ([`crate::goplugin::rpc::wait`]) parks at once
//! ([`PARK`]), since there the CPU, not one call's latency, counts. Any
//! of these may be nested: a blocking call made inside the future.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// The environment variable that sets the spin budget in microseconds
/// (0 to 10,000; 0 parks at once).
pub const SPIN_VAR: &str = "LOOPP_RPC_SPIN_US";

/// The spin budget when [`SPIN_VAR`] is not set: above a loopback RPC's
/// p99 here, so a reply almost never finds its waiter asleep.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(200);

/// Checks between yields (and between looks at the clock): a few µs.
const YIELD_EVERY: u32 = 16;

/// Runs `f` to its end on this thread, waiting as this process's [`Spin`]
/// does.
pub fn block_on<F: Future>(f: F) -> F::Output {
    Spin::process().block_on(f)
}

/// Never spins: parks at once, as `futures_executor::block_on` does.
pub static PARK: Spin = Spin::new(Duration::ZERO, 0);

/// How waiting threads spin: for a budget each, and at most so many at
/// once, so that many threads waiting together (pool threads in a busy
/// plugin) do not take the CPUs their replies need: the others park at
/// once.
pub struct Spin {
    budget: Duration,
    most: usize,
    spinning: AtomicUsize,
    peak: AtomicUsize,
}

impl Spin {
    /// Threads spin for up to `budget`, at most `most` of them at once.
    pub const fn new(budget: Duration, most: usize) -> Spin {
        Spin {
            budget,
            most,
            spinning: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// This process's: a budget of [`SPIN_VAR`] (else [`DEFAULT_SPIN`]),
    /// one spinner fewer than its CPUs (`available_parallelism`, which
    /// counts a cgroup's quota), so none with one CPU.
    pub fn process() -> &'static Spin {
        static SPIN: OnceLock<Spin> = OnceLock::new();
        SPIN.get_or_init(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            let default = DEFAULT_SPIN.as_micros() as usize;
            let us = crate::goplugin::rpc::bound_from_env(SPIN_VAR, 0..=10_000, default);
            Spin::new(Duration::from_micros(us as u64), cpus - 1)
        })
    }

    /// The most threads that spun at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Runs `f` to its end on this thread, spinning for each wake-up as
    /// this `Spin` allows before parking.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        let signal = Arc::new(Signal {
            woken: AtomicBool::new(false),
            thread: std::thread::current(),
        });
        let waker = Waker::from(signal.clone());
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            if !self.spin_for(&signal) {
                signal.park();
            }
        }
    }

    /// Spins until `signal` is woken (true) or the budget is spent (false),
    /// if a place to spin is free; else false at once.
    fn spin_for(&self, signal: &Signal) -> bool {
        if self.budget.is_zero() {
            return false;
        }
        let took = self
            .spinning
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.most).then_some(n + 1)
            });
        let Ok(before) = took else {
            return false;
        };
        self.peak.fetch_max(before + 1, Ordering::Relaxed);
        let woken = signal.spin(self.budget);
        self.spinning.fetch_sub(1, Ordering::AcqRel);
        woken
    }
}

/// A wake-up of the waiting thread: a flag it spins on, and an unpark for
/// when it sleeps (which costs no system call while it spins). The flag,
/// not the thread's park token, says a wake-up came: a blocking call
/// made inside the future parks this thread too and may take the token,
/// and a waker kept after its wait ended may leave one.
struct Signal {
    woken: AtomicBool,
    thread: Thread,
}

impl Signal {
    /// Checks for a wake-up for up to `budget`, yielding every few checks.
    fn spin(&self, budget: Duration) -> bool {
        let started = Instant::now();
        let mut checks: u32 = 0;
        loop {
            if self.woken.swap(false, Ordering::Acquire) {
                return true;
            }
            checks = checks.wrapping_add(1);
            if checks.is_multiple_of(YIELD_EVERY) {
                if started.elapsed() >= budget {
                    return false;
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Sleeps until woken.
    fn park(&self) {
        // `park` returns on an unpark or spuriously: the flag decides.
        while !self.woken.swap(false, Ordering::Acquire) {
            std::thread::park();
        }
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU this thread has used.
    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to fill.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// A value another thread sends after `after`.
    fn later(after: Duration) -> futures_channel::oneshot::Receiver<u32> {
        let (tx, rx) = futures_channel::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            let _ = tx.send(7);
        });
        rx
    }

    #[test]
    fn a_ready_future_and_one_woken_while_parked_end() {
        assert_eq!(
            Spin::new(Duration::from_millis(1), 1).block_on(async { 1 }),
            1
        );
        for spin in [Duration::ZERO, Duration::from_micros(200)] {
            let got = Spin::new(spin, 1).block_on(later(Duration::from_millis(20)));
            assert_eq!(got, Ok(7), "spin {spin:?}");
        }
    }

    /// A wake-up ends the spinning: with a budget of 5 s, a reply after
    /// 20 ms is taken then, not when the budget is spent.
    #[test]
    fn a_wake_up_while_spinning_ends_the_wait() {
        let before = thread_cpu();
        let got = Spin::new(Duration::from_secs(5), 1).block_on(later(Duration::from_millis(20)));
        let used = thread_cpu() - before;
        assert_eq!(got, Ok(7));
        assert!(used < Duration::from_secs(1), "spun {used:?}");
    }

    /// A waiter spins for its budget, not for the whole wait: waiting
    /// 400 ms for a reply with a 1 ms budget uses a few ms of CPU, where
    /// spinning to the end would use about 400.
    #[test]
    fn a_long_wait_sleeps_after_the_budget() {
        let before = thread_cpu();
        let got =
            Spin::new(Duration::from_millis(1), 1).block_on(later(Duration::from_millis(400)));
        let used = thread_cpu() - before;
        assert_eq!(got, Ok(7));
        assert!(
            used < Duration::from_millis(100),
            "waited with {used:?} of CPU"
        );
    }

    /// Four waiters at once, room for `most` to spin: once `most` spin,
    /// the others have parked (their replies are held back until then),
    /// and every one gets its reply.
    fn waiters_with_room_for(most: usize) -> usize {
        let spin = Arc::new(Spin::new(Duration::from_secs(10), most));
        let started = Arc::new(std::sync::Barrier::new(5));
        let mut replies = Vec::new();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (tx, rx) = futures_channel::oneshot::channel::<u32>();
                replies.push(tx);
                let (spin, started) = (spin.clone(), started.clone());
                std::thread::spawn(move || {
                    started.wait();
                    spin.block_on(rx)
                })
            })
            .collect();
        started.wait();
        let until = Instant::now() + Duration::from_secs(10);
        while spin.spinning.load(Ordering::Acquire) < most {
            assert!(Instant::now() < until, "never {most} spinning");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The rest decide meanwhile: with no room, they park.
        std::thread::sleep(Duration::from_millis(50));
        for tx in replies {
            tx.send(7).unwrap();
        }
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(7));
        }
        assert_eq!(spin.spinning.load(Ordering::Acquire), 0);
        spin.peak()
    }

    #[test]
    fn at_most_so_many_threads_spin_at_once() {
        assert_eq!(waiters_with_room_for(1), 1);
        assert_eq!(waiters_with_room_for(2), 2);
    }

    /// A budget of zero never spins.
    #[test]
    fn a_zero_budget_parks_at_once() {
        let spin = Spin::new(Duration::ZERO, 4);
        assert_eq!(spin.block_on(later(Duration::from_millis(10))), Ok(7));
        assert_eq!(spin.peak(), 0);
    }
}
