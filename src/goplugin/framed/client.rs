//! The framed client: one connection to one framed server, shared by
//! every object dialed there and every thread calling them.
//!
//! A call is a frame written by the caller's thread, and a slot its
//! answer fills. The connection's one reader thread reads answers, fills
//! their slots and wakes their waiters: a future spawned on
//! [`crate::goplugin::framed::spawn`] is polled right there (a round goes
//! on to its next call on the thread that read the last answer), a thread
//! that waits (`spinwait::block_on`) is unparked. The caller's deadline
//! goes with the call, and the caller stops waiting at it (a
//! [`crate::goplugin::timer`] deadline); an answer after it is dropped.

use std::collections::HashMap;
use std::future::Future;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use grpcio::{RpcStatus, RpcStatusCode};

use super::wire::{self, Frame, PREFACE};
use super::Writer;
use crate::goplugin::timer;

/// How long [`Channel::connect`] waits for the server to accept.
pub const ACK_WITHIN: Duration = Duration::from_secs(2);

/// A connection to a framed server. Clones share it; when the last is
/// dropped the connection ends (calls still waiting fail UNAVAILABLE).
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
    _end: Arc<EndOnDrop>,
}

struct Shared {
    address: String,
    max_message: usize,
    writer: Writer,
    next: AtomicU32,
    calls: Mutex<Calls>,
}

#[derive(Default)]
struct Calls {
    /// Why the connection ended, once it has.
    ended: Option<String>,
    slots: HashMap<u32, Slot>,
}

enum Slot {
    Waiting(Option<Waker>),
    Done(Result<Vec<u8>, RpcStatus>),
}

struct EndOnDrop(Arc<Shared>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.writer.end();
    }
}

impl Channel {
    /// Connects to the framed server at `address` (a unix socket), with
    /// messages up to `max_message` bytes each way.
    pub fn connect(address: &str, max_message: usize) -> std::io::Result<Channel> {
        let mut stream = UnixStream::connect(address)?;
        let writer = Writer::new(stream.try_clone()?);
        writer.write(PREFACE)?;
        // The server acknowledges with the same line, or closes (it is
        // full, or not a framed server).
        let mut ack = [0u8; PREFACE.len()];
        stream.set_read_timeout(Some(ACK_WITHIN))?;
        std::io::Read::read_exact(&mut stream, &mut ack).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("the server did not accept the connection within {ACK_WITHIN:?}: {e}"),
            )
        })?;
        if ack != PREFACE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the server answered {:?}, not a framed server's {:?}",
                    String::from_utf8_lossy(&ack),
                    String::from_utf8_lossy(PREFACE)
                ),
            ));
        }
        stream.set_read_timeout(None)?;
        let shared = Arc::new(Shared {
            address: address.to_string(),
            max_message,
            writer,
            next: AtomicU32::new(1),
            calls: Mutex::new(Calls::default()),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("framed-out".into())
            .spawn(move || read_answers(&s, stream))?;
        Ok(Channel {
            _end: Arc::new(EndOnDrop(shared.clone())),
            shared,
        })
    }

    /// The server's socket.
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// Whether the connection is still up: it ends when the server goes,
    /// or when a write has waited [`super::WRITE_WITHIN`] for the server
    /// to read; calls on it then fail UNAVAILABLE.
    pub fn is_open(&self) -> bool {
        self.shared.lock().ended.is_none()
    }

    /// Calls `method` of `object` with `message` (a request's encoding);
    /// the answer's encoding, or the call's error, DeadlineExceeded after
    /// `timeout`. The call is sent before this returns.
    pub fn call(&self, object: u32, method: &str, message: &[u8], timeout: Duration) -> Pending {
        let shared = self.shared.clone();
        let at = Instant::now().checked_add(timeout);
        let mut pending = Pending {
            shared,
            call: 0,
            deadline: at.map(timer::at),
            early: None,
        };
        if message.len() > self.shared.max_message {
            pending.early = Some(status(
                RpcStatusCode::RESOURCE_EXHAUSTED,
                format!(
                    "{method}: a request of {} bytes, over this side's bound of {} ({})",
                    message.len(),
                    self.shared.max_message,
                    crate::goplugin::rpc::MAX_MESSAGE_VAR
                ),
            ));
            return pending;
        }
        let call = loop {
            let c = self.shared.next.fetch_add(1, Ordering::Relaxed);
            if c != 0 {
                break c;
            }
        };
        {
            let mut calls = self.shared.lock();
            if let Some(why) = &calls.ended {
                pending.early = Some(self.shared.unavailable(why));
                return pending;
            }
            calls.slots.insert(call, Slot::Waiting(None));
        }
        pending.call = call;
        let frame = wire::call(call, object, timeout, method, message);
        if let Err(e) = self.shared.writer.write(&frame) {
            // The reader sees the end and fails every waiting call, this
            // one included.
            let why = format!("cannot send: {e}");
            self.shared.end(&why);
        }
        pending
    }
}

/// A generated client's unary call of `method` on `object`, framed: `req`
/// encoded, its reply decoded as `R` (one copy for each method).
#[inline(never)]
pub fn call_unary<Q: protobuf::Message, R: protobuf::Message>(
    channel: &Channel,
    object: u32,
    method: &str,
    req: &Q,
    timeout: Duration,
) -> grpcio::Result<crate::goplugin::unary::Unary<R>> {
    let message = req
        .write_to_bytes()
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(crate::goplugin::unary::Unary::framed(
        channel.call(object, method, &message, timeout),
        |b| R::parse_from_bytes(b),
    ))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unavailable(&self, why: &str) -> RpcStatus {
        status(
            RpcStatusCode::UNAVAILABLE,
            format!("the framed connection to {} ended: {why}", self.address),
        )
    }

    /// Ends the connection: every waiting call fails UNAVAILABLE, and so
    /// does every call after.
    fn end(&self, why: &str) {
        self.writer.end();
        let woken: Vec<Waker> = {
            let mut calls = self.lock();
            if calls.ended.is_none() {
                calls.ended = Some(why.to_string());
            }
            let failed = self.unavailable(calls.ended.as_deref().unwrap_or(why));
            calls
                .slots
                .values_mut()
                .filter_map(|slot| match slot {
                    Slot::Waiting(w) => {
                        let w = w.take();
                        *slot = Slot::Done(Err(failed.clone()));
                        w
                    }
                    Slot::Done(_) => None,
                })
                .collect()
        };
        super::task::drain_point(|| woken.into_iter().for_each(Waker::wake));
    }
}

fn status(code: RpcStatusCode, message: String) -> RpcStatus {
    RpcStatus::with_message(code, message)
}

fn read_answers(shared: &Shared, stream: UnixStream) {
    let open = crate::goplugin::metrics::FRAMED_CONNECTIONS.with_label_values(&["out"]);
    open.inc();
    read(shared, stream);
    open.dec();
}

fn read(shared: &Shared, stream: UnixStream) {
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    let why = loop {
        match wire::read(&mut reader, shared.max_message) {
            Ok(Frame::Answer { call, result }) => {
                let waker = {
                    let mut calls = shared.lock();
                    match calls.slots.get_mut(&call) {
                        Some(slot @ Slot::Waiting(_)) => {
                            let Slot::Waiting(w) = std::mem::replace(slot, Slot::Done(result))
                            else {
                                unreachable!()
                            };
                            w
                        }
                        // Given up (its deadline passed, or its reply was
                        // dropped): the answer goes nowhere.
                        _ => None,
                    }
                };
                // Outside the lock: the future woken may be polled here and
                // make calls of its own.
                if let Some(w) = waker {
                    super::task::drain_point(|| w.wake());
                }
            }
            Ok(Frame::Call { call, .. }) => {
                break format!("the server sent a call ({call}), which only a client sends");
            }
            Err(e) if e.is_end() => break "the server closed it".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    if shared.lock().ended.is_none() && !why.starts_with("the server closed") {
        log::warn!("framed connection to {}: {why}", shared.address);
    }
    shared.end(&why);
}

/// A call's answer, to come: a future of the answer's encoding, or the
/// call's error. Dropping it gives the call up (its answer is dropped).
#[must_use = "dropping the reply gives the call up"]
pub struct Pending {
    shared: Arc<Shared>,
    /// 0: the call was never sent (`early` says why).
    call: u32,
    deadline: Option<timer::Deadline>,
    early: Option<RpcStatus>,
}

impl Future for Pending {
    type Output = grpcio::Result<Vec<u8>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(s) = this.early.take() {
            return Poll::Ready(Err(grpcio::Error::RpcFailure(s)));
        }
        if this.call == 0 {
            return Poll::Ready(Err(grpcio::Error::RpcFinished(None)));
        }
        {
            let mut calls = this.shared.lock();
            match calls.slots.get_mut(&this.call) {
                Some(Slot::Done(_)) => {
                    let Some(Slot::Done(r)) = calls.slots.remove(&this.call) else {
                        unreachable!()
                    };
                    this.call = 0;
                    return Poll::Ready(r.map_err(grpcio::Error::RpcFailure));
                }
                Some(Slot::Waiting(w)) => {
                    if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *w = Some(cx.waker().clone());
                    }
                }
                None => {
                    this.call = 0;
                    return Poll::Ready(Err(grpcio::Error::RpcFinished(None)));
                }
            }
        }
        if let Some(d) = &mut this.deadline {
            if Pin::new(d).poll(cx).is_ready() {
                this.shared.lock().slots.remove(&this.call);
                this.call = 0;
                return Poll::Ready(Err(grpcio::Error::RpcFailure(status(
                    RpcStatusCode::DEADLINE_EXCEEDED,
                    "Deadline Exceeded".into(),
                ))));
            }
        }
        Poll::Pending
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.call != 0 {
            self.shared.lock().slots.remove(&self.call);
        }
    }
}
