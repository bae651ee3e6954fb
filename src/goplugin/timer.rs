//! Deadlines as futures. A future polled on a completion-queue thread
//! must never sleep, yet a round of a feed waits for its calls only until
//! its phase's deadline: [`Deadline`] is ready at an instant, woken by
//! one process-wide `timer` thread (started at the first deadline).
//!
//! The thread waits on a timerfd armed for the earliest live deadline.
//! Whoever sets an earlier deadline, or drops the earliest, arms it again
//! (a system call, no thread woken), so a deadline that is never reached
//! (the calls answered in time, the usual case) wakes nobody: a round of
//! a feed sets several, and waking the thread to sleep less, then for a
//! deadline dropped meanwhile, was a third of the thread wake-ups a round
//! caused besides its calls' own. A dropped deadline is forgotten; its
//! heap entry goes when it comes to the top.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Ready at `at`: the waker of whoever polled it last is woken then.
pub struct Deadline {
    at: Instant,
    /// Its entry in the clock, once polled before its time.
    key: Option<u64>,
}

/// A future ready at `at`.
pub fn at(at: Instant) -> Deadline {
    Deadline { at, key: None }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let clock = clock();
        let mut st = clock.state.lock().unwrap_or_else(|e| e.into_inner());
        match self.key {
            Some(key) => {
                // Woken since (the entry is gone only when its time came).
                match st.wakers.get_mut(&key) {
                    Some(w) => {
                        if !w.will_wake(cx.waker()) {
                            *w = cx.waker().clone();
                        }
                    }
                    None => return Poll::Ready(()),
                }
            }
            None => {
                let key = st.next_key;
                st.next_key += 1;
                st.heap.push(Reverse((self.at, key)));
                st.wakers.insert(key, cx.waker().clone());
                self.key = Some(key);
                if st.armed.is_none_or(|armed| self.at < armed) {
                    clock.arm(&mut st, Some(self.at));
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let clock = clock();
            let mut st = clock.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.wakers.remove(&key).is_some() && st.armed == Some(self.at) {
                // It was the earliest: the timer is armed for the next.
                let next = st.earliest_live();
                clock.arm(&mut st, next);
            }
        }
    }
}

struct Clock {
    state: Mutex<State>,
    /// A timerfd (CLOCK_MONOTONIC, `Instant`'s clock), armed for the
    /// earliest live deadline; None if it could not be made.
    timer: Option<OwnedFd>,
}

struct State {
    /// (when, key); entries whose key has no waker were dropped.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: HashMap<u64, Waker>,
    next_key: u64,
    /// What the timerfd is armed for; None: disarmed.
    armed: Option<Instant>,
}

impl State {
    /// The earliest deadline not dropped, dropped ones above it taken out.
    fn earliest_live(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if self.wakers.contains_key(&key) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }
}

impl Clock {
    /// Arms the timerfd for `at` (None: disarms it), under the state's
    /// lock, so the thread and those who set deadlines agree on it.
    fn arm(&self, st: &mut State, at: Option<Instant>) {
        st.armed = at;
        let Some(fd) = &self.timer else { return };
        let it_value = match at {
            // Relative to now; at least a nanosecond (zero disarms).
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                libc::timespec {
                    tv_sec: left.as_secs().min(i64::MAX as u64) as libc::time_t,
                    tv_nsec: left.subsec_nanos().max(u32::from(left.is_zero())) as libc::c_long,
                }
            }
            None => libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value,
        };
        // SAFETY: a timerfd this clock owns, and a valid itimerspec.
        unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<&'static Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        // SAFETY: timerfd_create returns a new descriptor or -1.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
        // SAFETY: a fresh descriptor nobody else owns.
        let timer = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) });
        let clock: &'static Clock = Box::leak(Box::new(Clock {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                wakers: HashMap::new(),
                next_key: 0,
                armed: None,
            }),
            timer,
        }));
        let Some(fd) = clock.timer.as_ref().map(AsRawFd::as_raw_fd) else {
            // Every call a deadline guards carries its own deadline too:
            // waits still end, only later.
            log::error!(
                "cannot make the deadline timer: {}; deadlines wait for their calls",
                std::io::Error::last_os_error()
            );
            return clock;
        };
        if let Err(e) = std::thread::Builder::new()
            .name("timer".into())
            .spawn(move || run(clock, fd))
        {
            log::error!("cannot start the timer thread: {e}; deadlines wait for their calls");
        }
        clock
    })
}

fn run(clock: &'static Clock, fd: libc::c_int) {
    let mut due = Vec::new();
    loop {
        let mut expirations = [0u8; 8];
        // SAFETY: reading 8 bytes into a buffer of 8 from the clock's
        // timerfd, which lives as long as the process.
        let n = unsafe { libc::read(fd, expirations.as_mut_ptr().cast(), 8) };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            log::error!(
                "the deadline timer failed: {}; deadlines wait for their calls",
                std::io::Error::last_os_error()
            );
            return;
        }
        let mut st = clock.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while let Some(&Reverse((at, key))) = st.heap.peek() {
            let live = st.wakers.contains_key(&key);
            if live && at > now {
                break;
            }
            st.heap.pop();
            if let Some(w) = st.wakers.remove(&key) {
                due.push(w);
            }
        }
        let next = st.earliest_live();
        clock.arm(&mut st, next);
        drop(st);
        due.drain(..).for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    struct Count(AtomicUsize, std::thread::Thread);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.unpark();
        }
    }

    fn after(d: Duration) -> Deadline {
        at(Instant::now() + d)
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0), std::thread::current()));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn a_deadline_wakes_its_poller_at_its_time_not_before() {
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let t0 = Instant::now();
        let mut d = Box::pin(after(Duration::from_millis(80)));
        assert!(d.as_mut().poll(&mut cx).is_pending());
        // A later deadline set meanwhile does not delay the earlier one,
        // and an earlier one set after it wakes the thread early.
        let mut later = Box::pin(after(Duration::from_secs(30)));
        assert!(later.as_mut().poll(&mut cx).is_pending());
        let mut sooner = Box::pin(after(Duration::from_millis(20)));
        assert!(sooner.as_mut().poll(&mut cx).is_pending());
        while count.0.load(Ordering::SeqCst) < 1 {
            std::thread::park_timeout(Duration::from_secs(5));
            assert!(t0.elapsed() < Duration::from_secs(5), "never woken");
        }
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert!(sooner.as_mut().poll(&mut cx).is_ready());
        assert!(d.as_mut().poll(&mut cx).is_pending(), "early");
        while count.0.load(Ordering::SeqCst) < 2 {
            std::thread::park_timeout(Duration::from_secs(5));
            assert!(t0.elapsed() < Duration::from_secs(5), "never woken");
        }
        assert!(t0.elapsed() >= Duration::from_millis(80));
        assert!(d.as_mut().poll(&mut cx).is_ready());
        drop(later);
    }

    #[test]
    fn a_dropped_deadline_wakes_nobody() {
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut d = Box::pin(after(Duration::from_millis(20)));
        assert!(d.as_mut().poll(&mut cx).is_pending());
        drop(d);
        // A second one, later, shows the clock ran past the first.
        let mut probe = Box::pin(after(Duration::from_millis(60)));
        let (seen, probe_waker) = counter();
        assert!(probe
            .as_mut()
            .poll(&mut Context::from_waker(&probe_waker))
            .is_pending());
        let t0 = Instant::now();
        while seen.0.load(Ordering::SeqCst) == 0 {
            std::thread::park_timeout(Duration::from_secs(5));
            assert!(t0.elapsed() < Duration::from_secs(5), "never woken");
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    /// Times this process's `timer` thread has run so far (its
    /// schedstat's time slices).
    fn timer_switches() -> u64 {
        let mut total = 0;
        for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim() != "timer" {
                continue;
            }
            let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .nth(2)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
        total
    }

    /// Setting a deadline earlier than the others and dropping the
    /// earliest arm the timer from the caller's thread: the timer thread
    /// wakes for neither, only when a deadline comes (before, each earlier
    /// deadline woke it to sleep less, and each dropped one when its time
    /// came).
    #[test]
    fn setting_and_dropping_deadlines_wakes_no_thread() {
        let (_count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut far = Box::pin(after(Duration::from_secs(60)));
        assert!(far.as_mut().poll(&mut cx).is_pending());
        std::thread::sleep(Duration::from_millis(20));
        let before = timer_switches();
        // Each earlier than the one before, each dropped.
        let start = Instant::now();
        for i in 0..50 {
            let mut d = Box::pin(at(start + Duration::from_millis(400 - 5 * i)));
            assert!(d.as_mut().poll(&mut cx).is_pending());
            // A thread woken would be asleep again by the next.
            std::thread::sleep(Duration::from_millis(2));
        }
        // Past every dropped deadline's time.
        std::thread::sleep(
            (start + Duration::from_millis(450)).saturating_duration_since(Instant::now()),
        );
        let woken = timer_switches() - before;
        assert!(woken < 5, "the timer thread switched {woken} times");
        // And one that is kept still comes.
        let (count, waker) = counter();
        let mut near = Box::pin(after(Duration::from_millis(30)));
        assert!(near
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        let t0 = Instant::now();
        while count.0.load(Ordering::SeqCst) == 0 {
            std::thread::park_timeout(Duration::from_secs(5));
            assert!(t0.elapsed() < Duration::from_secs(5), "never woken");
        }
        drop(far);
    }

    #[test]
    fn the_latest_waker_is_the_one_woken() {
        let (first, w1) = counter();
        let (second, w2) = counter();
        let mut d = Box::pin(after(Duration::from_millis(30)));
        assert!(d.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        assert!(d.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
        let t0 = Instant::now();
        while second.0.load(Ordering::SeqCst) == 0 {
            std::thread::park_timeout(Duration::from_secs(5));
            assert!(t0.elapsed() < Duration::from_secs(5), "never woken");
        }
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
    }
}
