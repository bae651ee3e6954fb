//! The I/O thread: one `mio` poll over the listener and every connection.
//! It accepts, reads request heads, hands complete requests to the workers
//! and writes their replies, all without blocking, so an open connection
//! costs a file descriptor and its buffers, never a thread.
//!
//! Each connection is in one state, with a deadline in all but `Busy`:
//! - `Head`: reading a request head; [`Limits::header_timeout`] from its
//!   start (a slow client is closed, however it trickles bytes);
//! - `Busy`: its request is with a worker;
//! - `Writing`: its reply goes out; [`Limits::write_timeout`] for all of it;
//! - `Idle`: kept alive between requests; [`Limits::idle_timeout`].
//!
//! At [`Limits::max_connections`] a new connection evicts the oldest
//! connection that is not being served (`Head` or `Idle`), so clients that
//! hold connections open cannot lock others out; if every connection is
//! being served, the new one is closed.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::wire::{self, Parsed, Reply, Request};
use super::Limits;

pub const LISTENER: Token = Token(0);
pub const WAKER: Token = Token(1);
const FIRST: usize = 2;

/// How long accepting pauses after an error such as EMFILE.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A request for a worker.
pub struct Job {
    pub slot: usize,
    pub seq: u64,
    pub request: Request,
}

/// A worker's reply for the connection in `slot`.
pub struct Done {
    pub slot: usize,
    pub seq: u64,
    pub reply: Reply,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum State {
    Head,
    Busy,
    Writing,
    Idle,
}

struct Conn {
    stream: TcpStream,
    state: State,
    /// Accept order: the oldest evictable connection goes first.
    seq: u64,
    deadline: Instant,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    /// The request being served was HEAD.
    head_only: bool,
    /// Keep the connection after the reply being served.
    keep_alive: bool,
    /// The client shut its side; close after the reply being served.
    peer_closed: bool,
}

/// Why a connection was closed (a label of `loopp_http_connections_closed_total`).
#[derive(Clone, Copy)]
enum Why {
    Done,
    Peer,
    HeaderTimeout,
    IdleTimeout,
    WriteTimeout,
    Evicted,
    Refused,
    Error,
}

impl Why {
    fn label(self) -> &'static str {
        match self {
            Why::Done => "done",
            Why::Peer => "peer",
            Why::HeaderTimeout => "header_timeout",
            Why::IdleTimeout => "idle_timeout",
            Why::WriteTimeout => "write_timeout",
            Why::Evicted => "evicted",
            Why::Refused => "refused",
            Why::Error => "error",
        }
    }
}

pub struct Reactor {
    pub name: String,
    pub poll: Poll,
    pub listener: TcpListener,
    pub limits: Limits,
    pub jobs: Sender<Job>,
    pub done: Receiver<Done>,
    pub stop: Arc<AtomicBool>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    open: usize,
    seq: u64,
    accept_paused_until: Option<Instant>,
    accept_errors: u64,
    /// At or before every connection's deadline: before the earliest
    /// when a deadline moved on or its connection closed since (the sweep
    /// then finds nothing and sets it right); `None`: no deadline.
    due: Option<Instant>,
}

impl Reactor {
    pub fn new(
        name: String,
        poll: Poll,
        listener: TcpListener,
        limits: Limits,
        jobs: Sender<Job>,
        done: Receiver<Done>,
        stop: Arc<AtomicBool>,
    ) -> Reactor {
        Reactor {
            name,
            poll,
            listener,
            limits,
            jobs,
            done,
            stop,
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            seq: 0,
            accept_paused_until: None,
            accept_errors: 0,
            due: None,
        }
    }

    /// Serves until `stop` is set (and the waker woken); dropping the
    /// reactor then closes every connection and ends the workers.
    pub fn run(mut self) {
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut self.listener, LISTENER, Interest::READABLE)
        {
            log::error!("HTTP {}: cannot poll the listener: {e}", self.name);
            return;
        }
        let tick = self.tick();
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            let now = Instant::now();
            // The thread wakes for the earliest deadline, at most once a
            // tick: an idle server, or one whose connections wait long
            // (a scraper's kept-alive connection), sleeps until a client,
            // a worker or the stop wakes it.
            let mut wake_at = self.due.map(|d| d.max(last_sweep + tick));
            if let Some(t) = self.accept_paused_until {
                wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
            }
            if let Err(e) = self.poll.poll(
                &mut events,
                wake_at.map(|w| w.saturating_duration_since(now)),
            ) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                log::error!("HTTP {}: poll failed, server stops: {e}", self.name);
                return;
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => {
                        if self.accept_paused_until.is_none() {
                            self.accept_all();
                        }
                    }
                    WAKER => {}
                    Token(t) => self.drive(t - FIRST),
                }
            }
            while let Ok(done) = self.done.try_recv() {
                self.finish(done);
            }
            let now = Instant::now();
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
                self.accept_all();
            }
            if self.due.is_some_and(|d| now >= d) && now >= last_sweep + tick {
                self.sweep(now);
                last_sweep = now;
            }
            crate::goplugin::metrics::http_open(&self.name, self.open);
        }
    }

    /// How often deadlines are checked at most: a quarter of the shortest
    /// timeout, within 5..250 ms (a connection is closed up to a tick
    /// after its deadline).
    fn tick(&self) -> Duration {
        let l = &self.limits;
        (l.header_timeout.min(l.idle_timeout).min(l.write_timeout) / 4)
            .clamp(Duration::from_millis(5), Duration::from_millis(250))
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) => {
                    // EMFILE and the like: the pending connections stay in
                    // the backlog; accepting resumes after a pause.
                    self.accept_errors += 1;
                    if self.accept_errors.is_power_of_two() {
                        log::warn!(
                            "HTTP {}: cannot accept a connection ({} times so far): {e}; \
                             retrying every {ACCEPT_PAUSE:?} (raise the open-file limit or \
                             lower the connection limit, now {})",
                            self.name,
                            self.accept_errors,
                            self.limits.max_connections
                        );
                    }
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream) {
        if self.open >= self.limits.max_connections && !self.evict_oldest() {
            crate::goplugin::metrics::http_closed(&self.name, Why::Refused.label());
            return;
        }
        // Replies go out whole; without this, a reply of a few KiB waits for
        // the client's delayed ACK (~40 ms).
        let _ = stream.set_nodelay(true);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(slot + FIRST),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("HTTP {}: cannot poll a new connection: {e}", self.name);
            self.free.push(slot);
            return;
        }
        self.seq += 1;
        let deadline = Instant::now() + self.limits.header_timeout;
        self.due = earlier(self.due, deadline);
        self.conns[slot] = Some(Conn {
            stream,
            state: State::Head,
            seq: self.seq,
            deadline,
            inbuf: Vec::new(),
            out: Vec::new(),
            sent: 0,
            head_only: false,
            keep_alive: false,
            peer_closed: false,
        });
        self.open += 1;
        self.drive(slot);
    }

    /// Closes the oldest connection that waits for a request; false if all
    /// are being served.
    fn evict_oldest(&mut self) -> bool {
        let victim = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
            .filter(|(_, c)| matches!(c.state, State::Head | State::Idle))
            .min_by_key(|(_, c)| c.seq)
            .map(|(i, _)| i);
        match victim {
            Some(i) => {
                self.close(i, Why::Evicted);
                true
            }
            None => false,
        }
    }

    fn close(&mut self, slot: usize, why: Why) {
        if let Some(mut c) = self.conns.get_mut(slot).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.free.push(slot);
            self.open -= 1;
            crate::goplugin::metrics::http_closed(&self.name, why.label());
        }
    }

    /// Closes the connections past their deadline; `due` is then the
    /// earliest deadline left.
    fn sweep(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            let why = match &self.conns[slot] {
                Some(c) if c.state != State::Busy && now >= c.deadline => match c.state {
                    State::Head => Why::HeaderTimeout,
                    State::Idle => Why::IdleTimeout,
                    _ => Why::WriteTimeout,
                },
                _ => continue,
            };
            self.close(slot, why);
        }
        self.due = self
            .conns
            .iter()
            .flatten()
            .filter(|c| c.state != State::Busy)
            .map(|c| c.deadline)
            .min();
    }

    /// A worker's reply: write it out.
    fn finish(&mut self, done: Done) {
        let Some(c) = self.conns.get_mut(done.slot).and_then(Option::as_mut) else {
            return;
        };
        if c.seq != done.seq || c.state != State::Busy {
            return;
        }
        let keep = c.keep_alive && !c.peer_closed;
        self.start_reply(done.slot, &done.reply, keep);
    }

    fn start_reply(&mut self, slot: usize, reply: &Reply, keep_alive: bool) {
        let deadline = Instant::now() + self.limits.write_timeout;
        self.due = earlier(self.due, deadline);
        if let Some(c) = self.conns[slot].as_mut() {
            c.out = reply.encode(c.head_only, keep_alive);
            c.sent = 0;
            c.keep_alive = keep_alive;
            c.state = State::Writing;
            c.deadline = deadline;
        }
        self.drive(slot);
    }

    /// Does whatever the connection's state allows without blocking.
    fn drive(&mut self, slot: usize) {
        loop {
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            match c.state {
                State::Busy => {
                    // Read ahead (a pipelined request, or the client closing).
                    if let Err(why) = read_available(c, self.limits.max_head) {
                        self.close(slot, why);
                    }
                    return;
                }
                State::Writing => match write_available(c) {
                    Err(why) => return self.close(slot, why),
                    Ok(false) => return,
                    Ok(true) if c.keep_alive => {
                        c.out = Vec::new();
                        c.state = State::Idle;
                        c.deadline = Instant::now() + self.limits.idle_timeout;
                        self.due = earlier(self.due, c.deadline);
                    }
                    Ok(true) => return self.close(slot, Why::Done),
                },
                State::Head | State::Idle => {
                    if let Err(why) = read_available(c, self.limits.max_head) {
                        return self.close(slot, why);
                    }
                    match wire::parse(&c.inbuf, self.limits.max_head) {
                        Parsed::Partial => {
                            if c.peer_closed {
                                return self.close(slot, Why::Peer);
                            }
                            if c.state == State::Idle && !c.inbuf.is_empty() {
                                c.state = State::Head;
                                c.deadline = Instant::now() + self.limits.header_timeout;
                                self.due = earlier(self.due, c.deadline);
                            }
                            return;
                        }
                        Parsed::TooLarge => {
                            c.inbuf.clear();
                            let msg = format!(
                                "request head longer than {} bytes or more than {} header lines",
                                self.limits.max_head,
                                wire::MAX_HEADERS
                            );
                            return self.start_reply(slot, &super::text(431, msg), false);
                        }
                        Parsed::Bad(msg) => {
                            c.inbuf.clear();
                            return self.start_reply(slot, &super::text(400, msg), false);
                        }
                        Parsed::Complete(head) => {
                            c.inbuf.drain(..head.len);
                            c.head_only = head.request.method() == "HEAD";
                            c.keep_alive = head.keep_alive && !c.peer_closed;
                            c.state = State::Busy;
                            let job = Job {
                                slot,
                                seq: c.seq,
                                request: head.request,
                            };
                            match self.jobs.try_send(job) {
                                Ok(()) => return,
                                Err(TrySendError::Full(_)) => {
                                    let busy = super::text(
                                        503,
                                        "server busy: every worker is taken and the queue is full; retry",
                                    );
                                    return self.start_reply(slot, &busy, false);
                                }
                                Err(TrySendError::Disconnected(_)) => {
                                    return self.close(slot, Why::Error)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The earlier of a known deadline and `d`: every deadline a connection
/// is given goes through it into `Reactor::due`.
fn earlier(due: Option<Instant>, d: Instant) -> Option<Instant> {
    Some(due.map_or(d, |t| t.min(d)))
}

/// Reads what is there without blocking, keeping at most `max` bytes
/// buffered (the rest stays in the kernel until the buffer drains). A
/// closed read side sets `peer_closed`; an error closes.
fn read_available(c: &mut Conn, max: usize) -> Result<(), Why> {
    let mut chunk = [0u8; 4096];
    while !c.peer_closed && c.inbuf.len() < max {
        let room = (max - c.inbuf.len()).min(chunk.len());
        match c.stream.read(&mut chunk[..room]) {
            Ok(0) => c.peer_closed = true,
            Ok(n) => c.inbuf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Err(Why::Error),
        }
    }
    Ok(())
}

/// Writes what the socket takes; true once the reply is out.
fn write_available(c: &mut Conn) -> Result<bool, Why> {
    while c.sent < c.out.len() {
        match c.stream.write(&c.out[c.sent..]) {
            Ok(0) => return Err(Why::Error),
            Ok(n) => c.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Err(Why::Peer),
        }
    }
    Ok(true)
}
