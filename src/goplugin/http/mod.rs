//! The HTTP server of plugins (their own `/metrics`,
//! [`crate::goplugin::plugin::metrics`]) and of the node (discovery, metrics
//! proxy, health: `crate::node::http`), and the reply helpers.
//!
//! Bounded by [`Limits`], never by what clients do: one I/O thread
//! ([`reactor`]) holds every connection without blocking, a fixed set of
//! workers runs the handler, and a bounded queue sits between them (full:
//! 503). Slow heads, idle keep-alives and slow readers are closed at their
//! deadlines; at the connection limit the oldest connection that waits for a
//! request makes room. Requests are parsed by `httparse`.
//!
//! (tiny_http, used before, starts a thread for every connection, has no
//! read deadlines, and stops accepting for good on its first accept error,
//! such as running out of file descriptors.)

mod reactor;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use wire::{Header, Reply, Request};

/// What bounds a server. The defaults suit the node's and the plugins'
/// endpoints, which answer small GETs.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once (each costs a file descriptor and its
    /// buffers, no thread). At the limit a new connection evicts the oldest
    /// one waiting for a request.
    pub max_connections: usize,
    /// From a connection's first byte of a request (or its accept) to the
    /// end of the head.
    pub header_timeout: Duration,
    /// A kept-alive connection's wait for its next request.
    pub idle_timeout: Duration,
    /// A reply's time to go out, whole.
    pub write_timeout: Duration,
    /// Longest request head (request line and headers), bytes.
    pub max_head: usize,
    /// Requests waiting for a worker; beyond it, 503. A connection has at
    /// most one request with the workers, so at `max_connections` no
    /// client is refused for a busy server, only delayed.
    pub queue: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(10),
            max_head: 16 << 10,
            queue: 1024,
        }
    }
}

/// A running HTTP server; [`HttpServer::stop`] (or drop) closes its
/// connections and ends its threads.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    threads: Vec<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `addr` and answers with `handle` on `workers` threads,
    /// within the default [`Limits`].
    pub fn start<H>(
        addr: &str,
        workers: usize,
        name: &str,
        handle: H,
    ) -> std::io::Result<HttpServer>
    where
        H: Fn(&Request) -> Reply + Send + Sync + 'static,
    {
        HttpServer::start_on(
            HttpServer::bind(addr)?,
            workers,
            name,
            Limits::default(),
            handle,
        )
    }

    /// Listens on `addr`: what [`HttpServer::start_on`] serves. Binding
    /// first lets a program fail on a taken port before it starts threads.
    pub fn bind(addr: &str) -> std::io::Result<std::net::TcpListener> {
        std::net::TcpListener::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
    }

    /// As [`HttpServer::start`], on a bound `listener` (see
    /// [`HttpServer::bind`]), within `limits`.
    pub fn start_on<H>(
        listener: std::net::TcpListener,
        workers: usize,
        name: &str,
        limits: Limits,
        handle: H,
    ) -> std::io::Result<HttpServer>
    where
        H: Fn(&Request) -> Reply + Send + Sync + 'static,
    {
        deepen_backlog(&listener);
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        let listener = mio::net::TcpListener::from_std(listener);
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), reactor::WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<reactor::Job>(limits.queue.max(1));
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<reactor::Done>();
        let handle = Arc::new(handle);
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let (jobs, done, waker, handle) = (
                jobs_rx.clone(),
                done_tx.clone(),
                waker.clone(),
                handle.clone(),
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        for job in jobs.iter() {
                            let reply =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    handle(&job.request)
                                }))
                                .unwrap_or_else(|_| {
                                    text(500, "internal error: the handler panicked")
                                });
                            let _ = done.send(reactor::Done {
                                slot: job.slot,
                                seq: job.seq,
                                reply,
                            });
                            let _ = waker.wake();
                        }
                    })?,
            );
        }
        let reactor = reactor::Reactor::new(
            name.to_string(),
            poll,
            listener,
            limits,
            jobs_tx,
            done_rx,
            stop.clone(),
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("{name}-io"))
                .spawn(move || reactor.run())?,
        );
        Ok(HttpServer {
            addr: bound,
            stop,
            waker,
            threads,
        })
    }

    /// The bound address (the port is real even if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and joins the threads (a worker first
    /// finishes the request it is on).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Lets connections queue in the kernel up to `net.core.somaxconn` (std
/// listens with 128): under a flood of connections, a full queue drops new
/// SYNs, and each drop costs a client a one-second retransmit.
fn deepen_backlog(listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen on a socket we own; on Linux a second listen() only
    // changes the backlog.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
}

/// A plain-text reply.
pub fn text(status: u16, body: impl Into<String>) -> Reply {
    let mut body: String = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    Reply::new(status, body.into_bytes())
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

/// A reply with a body and content type.
pub fn body(status: u16, content_type: &str, data: Vec<u8>) -> Reply {
    Reply::new(status, data).with_header(header("Content-Type", content_type))
}

/// A response header (CR and LF are dropped from name and value).
pub fn header(name: &str, value: &str) -> Header {
    Header::new(name, value)
}

/// GET and HEAD are served; anything else gets 405 with an `Allow` header.
pub fn method_allowed(r: &Request) -> Result<(), Reply> {
    match r.method() {
        "GET" | "HEAD" => Ok(()),
        other => Err(text(405, format!("method {other} not allowed; use GET"))
            .with_header(header("Allow", "GET, HEAD"))),
    }
}

/// A request header's value.
pub fn request_header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
    r.header(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    fn quick() -> Limits {
        Limits {
            max_connections: 8,
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
            write_timeout: Duration::from_secs(2),
            max_head: 1024,
            queue: 4,
        }
    }

    fn echo(limits: Limits, workers: usize) -> HttpServer {
        HttpServer::start_on(
            HttpServer::bind("127.0.0.1:0").unwrap(),
            workers,
            "t",
            limits,
            |r| {
                if let Err(reply) = method_allowed(r) {
                    return reply;
                }
                if r.url() == "/panic" {
                    panic!("handler panics on purpose");
                }
                text(200, format!("you asked for {}", r.url()))
            },
        )
        .unwrap()
    }

    fn connect(s: &HttpServer) -> TcpStream {
        let c = TcpStream::connect(s.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c
    }

    /// Reads one response: (status, headers text, body).
    fn response(c: &mut TcpStream) -> (u16, String, String) {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(c.read(&mut byte).unwrap(), 1, "closed mid-head: {buf:?}");
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        let status = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0u8; if head.starts_with("HEAD") { 0 } else { len }];
        c.read_exact(&mut body).unwrap();
        (status, head, String::from_utf8(body).unwrap())
    }

    /// True if the server closed `c` (EOF or reset) within 5 s.
    fn closed(c: &mut TcpStream) -> bool {
        let mut rest = Vec::new();
        match c.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    #[test]
    fn keep_alive_pipelining_head_and_refused_methods() {
        let s = echo(quick(), 2);
        let mut c = connect(&s);
        for path in ["/a", "/b"] {
            write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let (status, head, body) = response(&mut c);
            assert_eq!(
                (status, body.as_str()),
                (200, format!("you asked for {path}\n").as_str())
            );
            assert!(!head.contains("Connection: close"), "{head}");
        }
        // Two requests in one write: two replies, in order.
        c.write_all(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
            .unwrap();
        assert_eq!(response(&mut c).2, "you asked for /1\n");
        assert_eq!(response(&mut c).2, "you asked for /2\n");
        // HEAD: the length of the body, not the body.
        c.write_all(b"HEAD /h HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(String::from_utf8_lossy(&head).contains("Content-Length: 17\r\n"));
        assert_eq!(response(&mut c).2, "you asked for /after\n");
        // A body is never read: 405, then the connection closes.
        c.write_all(b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nab")
            .unwrap();
        let (status, head, _) = response(&mut c);
        assert_eq!(status, 405);
        assert!(head.contains("Allow: GET, HEAD") && head.contains("Connection: close"));
        assert!(closed(&mut c));
    }

    /// Context switches of this process's thread named `name`.
    fn switches_of(name: &str) -> u64 {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| t.ok())
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .map(|t| {
                let status = std::fs::read_to_string(t.path().join("status")).unwrap();
                status
                    .lines()
                    .filter(|l| l.contains("ctxt_switches"))
                    .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }

    /// With no connection the I/O thread sleeps until one comes (its
    /// deadline sweep, every 75 ms here, runs only while connections are
    /// open); and a connection's deadlines are swept again once one comes.
    #[test]
    fn an_idle_server_does_not_wake_and_sweeps_again_with_a_connection() {
        let s = HttpServer::start_on(
            HttpServer::bind("127.0.0.1:0").unwrap(),
            1,
            "idle",
            quick(),
            |_| text(200, "ok"),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let before = switches_of("idle-io");
        std::thread::sleep(Duration::from_millis(600));
        let idle = switches_of("idle-io") - before;
        assert!(idle <= 1, "the idle I/O thread woke {idle} times in 600 ms");
        // A connection that sends nothing is closed at the header timeout.
        let mut c = connect(&s);
        let t0 = std::time::Instant::now();
        assert!(closed(&mut c));
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        s.stop();
    }

    /// A kept-alive connection between requests (a scraper's, through the
    /// node's proxy) does not wake the I/O thread before its idle
    /// timeout: the thread sleeps to the earliest deadline, not a tick
    /// (75 ms here, 250 ms by default); it still closes at that timeout.
    #[test]
    fn a_kept_alive_connection_waits_without_waking_the_server() {
        let limits = Limits {
            idle_timeout: Duration::from_millis(1500),
            ..quick()
        };
        let s = HttpServer::start_on(
            HttpServer::bind("127.0.0.1:0").unwrap(),
            1,
            "kept",
            limits,
            |_| text(200, "ok"),
        )
        .unwrap();
        let mut c = connect(&s);
        c.write_all(b"GET /once HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(response(&mut c).0, 200);
        std::thread::sleep(Duration::from_millis(100));
        let before = switches_of("kept-io");
        std::thread::sleep(Duration::from_millis(900));
        let woke = switches_of("kept-io") - before;
        assert!(
            woke <= 1,
            "the I/O thread woke {woke} times in 900 ms with one idle connection"
        );
        let t0 = Instant::now();
        assert!(closed(&mut c));
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        s.stop();
    }

    #[test]
    fn slow_heads_idle_connections_and_long_heads_are_closed() {
        let s = echo(quick(), 1);
        // A head trickled a byte at a time is closed at the header timeout,
        // counted from its first byte, not reset by each byte.
        let mut slow = connect(&s);
        let t0 = Instant::now();
        let mut cut = false;
        for b in b"GET /slowly HTTP/1.1\r\nHost: x\r\n"
            .iter()
            .cycle()
            .take(200)
        {
            if slow.write_all(&[*b]).is_err() {
                cut = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(cut || closed(&mut slow), "a trickled head was never cut");
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "cut late: {:?}",
            t0.elapsed()
        );
        // Kept alive with nothing more to ask: closed at the idle timeout.
        let mut idle = connect(&s);
        idle.write_all(b"GET /once HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(response(&mut idle).0, 200);
        assert!(closed(&mut idle));
        // Never a byte: closed too.
        let mut mute = connect(&s);
        assert!(closed(&mut mute));
        // A head over the limit: 431, closed.
        let mut long = connect(&s);
        let _ = write!(long, "GET /{} HTTP/1.1\r\n\r\n", "x".repeat(2000));
        let (status, _, body) = response(&mut long);
        assert_eq!(status, 431, "{body}");
        assert!(closed(&mut long));
        // Not HTTP: 400, closed.
        let mut tls = connect(&s);
        tls.write_all(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
            .unwrap();
        assert_eq!(response(&mut tls).0, 400);
        assert!(closed(&mut tls));
    }

    #[test]
    fn at_the_connection_limit_the_oldest_waiting_connection_makes_room() {
        let limits = Limits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            ..quick()
        };
        let s = echo(limits, 1);
        // Fill every slot with connections that never finish a head.
        let mut hogs: Vec<TcpStream> = (0..8)
            .map(|_| {
                let mut c = connect(&s);
                c.write_all(b"GET /never").unwrap();
                c
            })
            .collect();
        // Each hog is accepted before the next one connects.
        std::thread::sleep(Duration::from_millis(100));
        // Fresh clients, kept open (idle), each get a slot: the oldest hog
        // is closed for it, not the fresh clients before it.
        let mut fresh = Vec::new();
        for (i, hog) in hogs.iter_mut().take(3).enumerate() {
            let mut c = connect(&s);
            write!(c, "GET /fresh{i} HTTP/1.1\r\n\r\n").unwrap();
            assert_eq!(response(&mut c).2, format!("you asked for /fresh{i}\n"));
            assert!(closed(hog), "hog {i} still open");
            fresh.push(c);
        }
        for (i, c) in fresh.iter_mut().enumerate() {
            write!(c, "GET /again{i} HTTP/1.1\r\n\r\n").unwrap();
            assert_eq!(response(c).0, 200);
        }
    }

    #[test]
    fn a_panicking_handler_gets_500_and_a_full_queue_503() {
        let s = echo(quick(), 1);
        let mut c = connect(&s);
        c.write_all(b"GET /panic HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(response(&mut c).0, 500);
        c.write_all(b"GET /still HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(response(&mut c).0, 200);

        // One worker held by a request, a queue of one: the third waits for
        // nothing and gets 503.
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let limits = Limits {
            queue: 1,
            ..quick()
        };
        let s = HttpServer::start_on(
            HttpServer::bind("127.0.0.1:0").unwrap(),
            1,
            "t",
            limits,
            move |r| {
                if r.url() == "/hold" {
                    let _ = release_rx.recv_timeout(Duration::from_secs(5));
                }
                text(200, "ok")
            },
        )
        .unwrap();
        let mut held = connect(&s);
        held.write_all(b"GET /hold HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut queued = connect(&s);
        queued.write_all(b"GET /q HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut over = connect(&s);
        over.write_all(b"GET /over HTTP/1.1\r\n\r\n").unwrap();
        let (status, _, body) = response(&mut over);
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("retry"), "{body}");
        release_tx.send(()).unwrap();
        assert_eq!(response(&mut held).0, 200);
        assert_eq!(response(&mut queued).0, 200);
    }
}
