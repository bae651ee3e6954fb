//! Deadlines as futures. A future polled on a completion-queue thread
//! must never sleep, yet a round of a feed waits for its calls only until
//! its phase's deadline: [`Deadline`] is ready at an instant, woken by
//! one process-wide `timer` thread (started at the first deadline).
//!
//! The thread sleeps until the earliest deadline and is only woken early
//! when an earlier one is set, so a deadline that is never reached (the
//! calls answered in time, the usual case) costs a heap entry, no
//! wake-up and no system call. A dropped deadline is forgotten: it wakes
//! nobody, and is taken out of the heap when it comes to the top.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

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
                // The thread is asleep past this deadline: wake it to
                // sleep less. Awake, it looks at the heap before sleeping.
                if matches!(st.sleeping_until, Some(until) if self.at < until) {
                    st.sleeping_until = None;
                    clock.wake.notify_one();
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut st = clock().state.lock().unwrap_or_else(|e| e.into_inner());
            st.wakers.remove(&key);
        }
    }
}

struct Clock {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    /// (when, key); entries whose key has no waker were dropped.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: HashMap<u64, Waker>,
    next_key: u64,
    /// When the thread wakes by itself; None while it is awake (it looks
    /// at the heap again before it sleeps).
    sleeping_until: Option<Instant>,
}

/// How long the thread sleeps with no deadline set (it is woken for the
/// next one).
const IDLE: Duration = Duration::from_secs(3600);

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<&'static Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let clock: &'static Clock = Box::leak(Box::new(Clock {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                wakers: HashMap::new(),
                next_key: 0,
                sleeping_until: None,
            }),
            wake: Condvar::new(),
        }));
        if let Err(e) = std::thread::Builder::new()
            .name("timer".into())
            .spawn(move || run(clock))
        {
            // Every call a deadline guards carries its own gRPC deadline
            // too: waits still end, only later.
            log::error!("cannot start the timer thread: {e}; deadlines wait for their calls");
        }
        clock
    })
}

fn run(clock: &'static Clock) {
    let mut due = Vec::new();
    let mut st = clock.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
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
        if !due.is_empty() {
            drop(st);
            due.drain(..).for_each(Waker::wake);
            st = clock.state.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let sleep = st
            .heap
            .peek()
            .map_or(IDLE, |Reverse((at, _))| at.saturating_duration_since(now));
        st.sleeping_until = Some(now + sleep);
        st = clock
            .wake
            .wait_timeout(st, sleep)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        st.sleeping_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

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
