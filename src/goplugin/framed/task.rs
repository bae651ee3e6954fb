//! Futures driven where they are woken: [`spawn`].
//!
//! gRPC drives a handler's or a round's future on its completion-queue
//! thread, so every reply that arrives costs a hand-off to that thread. A
//! framed connection has one reader thread, and the future waiting on a
//! reply is polled right there, by the thread that read it: the call's
//! work goes on where its reply landed, with no other thread woken.
//!
//! A waker may be called with a lock held (`futures_util`'s `Shared` wakes
//! every clone's task under its own lock, and polling one of them takes
//! that lock again), so a wake never polls: it queues the task. Threads
//! that may poll what they wake run their work in a [`drain_point`] (a
//! framed connection's reader, a pool thread's job, [`spawn`] itself); a
//! task woken there is queued on the thread and polled when the work is
//! done, with no lock of the waker's held. A task woken anywhere else (the
//! timer, gRPC's completion queue) is handed to one process-wide thread,
//! `loopp-tasks`, which polls it the same way.
//!
//! Such futures must never block (the same rule as on a completion-queue
//! thread): their waits are calls sent without waiting, values at hand,
//! [`crate::goplugin::rpc::blocking`] steps and timer deadlines.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

type Boxed = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Waiting to be woken.
const IDLE: u8 = 0;
/// Queued to be polled.
const QUEUED: u8 = 1;
/// A thread polls it now.
const RUNNING: u8 = 2;
/// Woken while polled: queued again when the poll ends.
const NOTIFIED: u8 = 3;
/// Ended (or panicked): wakes do nothing.
const DONE: u8 = 4;

struct Task {
    state: AtomicU8,
    future: Mutex<Option<Boxed>>,
}

thread_local! {
    /// The tasks woken on this thread, while a [`drain_point`] runs here.
    static LOCAL: RefCell<Option<VecDeque<Arc<Task>>>> = const { RefCell::new(None) };
}

/// Polls `f` on this thread until it first waits (after the work of the
/// [`drain_point`] this thread is in, if any), then where it is woken. A
/// panic in `f` is caught (it would end the thread that polls it: a
/// connection's reader, a pool thread) and logged; `f` is dropped then.
pub fn spawn<F>(f: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let task = Arc::new(Task {
        state: AtomicU8::new(QUEUED),
        future: Mutex::new(Some(Box::pin(f))),
    });
    drain_point(|| enqueue(task));
}

/// Runs `work`; the tasks it wakes on this thread (and those they wake)
/// are polled here once it returns. Nested drain points leave that to the
/// outermost.
pub fn drain_point<R>(work: impl FnOnce() -> R) -> R {
    let outermost = LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        l.is_none().then(|| *l = Some(VecDeque::new())).is_some()
    });
    if !outermost {
        return work();
    }
    /// Ends the drain point even if `work` or a task panics.
    struct Close;
    impl Drop for Close {
        fn drop(&mut self) {
            let left = LOCAL.with(|l| l.borrow_mut().take());
            // Only after a panic: hand them on rather than lose them.
            for task in left.into_iter().flatten() {
                tasks_thread(task);
            }
        }
    }
    let _close = Close;
    let r = work();
    while let Some(task) = LOCAL.with(|l| l.borrow_mut().as_mut().and_then(VecDeque::pop_front)) {
        poll(&task);
    }
    r
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        wake(self);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        wake(self.clone());
    }
}

fn wake(task: Arc<Task>) {
    let mut state = task.state.load(Ordering::Acquire);
    loop {
        let next = match state {
            IDLE => QUEUED,
            RUNNING => NOTIFIED,
            _ => return,
        };
        match task
            .state
            .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) if next == NOTIFIED => return,
            Ok(_) => break,
            Err(now) => state = now,
        }
    }
    enqueue(task);
}

/// Queues a task in the QUEUED state: on this thread's drain point, else
/// on the tasks thread.
fn enqueue(task: Arc<Task>) {
    let rest = LOCAL.with(|l| match l.borrow_mut().as_mut() {
        Some(q) => {
            q.push_back(task);
            None
        }
        None => Some(task),
    });
    if let Some(task) = rest {
        tasks_thread(task);
    }
}

/// Hands a queued task to the process's tasks thread.
fn tasks_thread(task: Arc<Task>) {
    static TX: OnceLock<crossbeam_channel::Sender<Arc<Task>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Arc<Task>>();
        std::thread::Builder::new()
            .name("loopp-tasks".into())
            .spawn(move || {
                for task in rx {
                    drain_point(|| poll(&task));
                }
            })
            .expect("cannot start the loopp-tasks thread");
        tx
    });
    let _ = tx.send(task);
}

/// Polls a queued task once; queues it again if it was woken meanwhile.
fn poll(task: &Arc<Task>) {
    if task
        .state
        .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    let waker = Waker::from(task.clone());
    let mut cx = Context::from_waker(&waker);
    let ended = {
        let mut slot = task.future.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(f) = slot.as_mut() else {
            return;
        };
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.as_mut().poll(&mut cx)));
        match polled {
            Ok(Poll::Pending) => false,
            Ok(Poll::Ready(())) => true,
            Err(payload) => {
                let what = crate::goplugin::error::panic_message(&*payload);
                log::error!("a task of the framed transport panicked ({what}); it is dropped");
                true
            }
        }
    };
    if ended {
        task.state.store(DONE, Ordering::Release);
        // Dropped outside the poll: its drop may wake other tasks.
        let f = task
            .future
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(f);
        return;
    }
    if task
        .state
        .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // Woken while polled.
        task.state.store(QUEUED, Ordering::Release);
        enqueue(task.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A future is polled by the thread that wakes it in a drain point,
    /// after that thread's work; woken elsewhere, on the tasks thread. One
    /// that panics is dropped, and the thread polling it goes on.
    #[test]
    fn a_task_is_polled_at_the_waking_drain_point_else_on_the_tasks_thread() {
        let polled_on = |wake: fn(futures_channel::oneshot::Sender<u32>)| {
            let (tx, rx) = futures_channel::oneshot::channel::<u32>();
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            spawn(async move {
                let v = rx.await.unwrap();
                done_tx
                    .send((v, std::thread::current().name().map(String::from)))
                    .unwrap();
            });
            std::thread::Builder::new()
                .name("waker".into())
                .spawn(move || wake(tx))
                .unwrap()
                .join()
                .unwrap();
            done_rx.recv_timeout(Duration::from_secs(5)).unwrap()
        };
        assert_eq!(
            polled_on(|tx| drain_point(|| tx.send(5).unwrap())),
            (5, Some("waker".to_string()))
        );
        assert_eq!(
            polled_on(|tx| tx.send(6).unwrap()),
            (6, Some("loopp-tasks".to_string()))
        );

        let (tx, rx) = futures_channel::oneshot::channel::<u32>();
        spawn(async move {
            rx.await.unwrap();
            panic!("on purpose");
        });
        std::thread::spawn(move || drain_point(|| tx.send(1).unwrap()))
            .join()
            .expect("the waking thread did not panic");
    }

    /// `futures_util`'s `Shared` wakes every clone's task under its own
    /// lock, and polling a clone takes that lock: tasks waiting on one
    /// shared future all finish when it is ready (a wake that polled at
    /// once would deadlock there).
    #[test]
    fn tasks_sharing_a_future_all_finish() {
        use futures_util::FutureExt;
        let (tx, rx) = futures_channel::oneshot::channel::<u32>();
        let shared = rx.shared();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let (s, d) = (shared.clone(), done_tx.clone());
            spawn(async move {
                d.send(s.await.unwrap()).unwrap();
            });
        }
        std::thread::spawn(move || drain_point(|| tx.send(9).unwrap()));
        for _ in 0..4 {
            assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(9));
        }
    }

    /// Woken many times from many threads while it runs, a task is polled
    /// by one thread at a time and sees every wake-up's effect.
    #[test]
    fn wakes_during_a_poll_are_not_lost() {
        use std::sync::atomic::AtomicUsize;
        struct Count {
            seen: Arc<AtomicUsize>,
            target: usize,
            polls: Arc<AtomicUsize>,
            wakers: Arc<Mutex<Option<Waker>>>,
        }
        impl Future for Count {
            type Output = ();
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                self.polls.fetch_add(1, Ordering::SeqCst);
                *self.wakers.lock().unwrap() = Some(cx.waker().clone());
                if self.seen.load(Ordering::SeqCst) >= self.target {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
        }
        let seen = Arc::new(AtomicUsize::new(0));
        let wakers = Arc::new(Mutex::new(None::<Waker>));
        let polls = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let f = Count {
            seen: seen.clone(),
            target: 4000,
            polls: polls.clone(),
            wakers: wakers.clone(),
        };
        spawn(async move {
            f.await;
            done_tx.send(()).unwrap();
        });
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (seen, wakers) = (seen.clone(), wakers.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        seen.fetch_add(1, Ordering::SeqCst);
                        let w = wakers.lock().unwrap().clone();
                        if let Some(w) = w {
                            w.wake();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the last wake-up was seen");
    }
}
