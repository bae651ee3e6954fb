//! The plugin's own listener: bound before gRPC is set up, its connections
//! handed to the gRPC server once it runs.
//!
//! Setting gRPC up (its init, then building the server) takes about half
//! a millisecond of a plugin's start, and the host could only connect
//! after it, once the handshake line named the address. So the plugin
//! binds and listens itself, prints the handshake, and then builds and
//! starts the server while the host connects and sends its first call;
//! the accept thread, started with the handshake, hands every connection
//! to the server once it runs (`grpc_server_add_channel_from_fd`), as
//! gRPC's own listener would. A host sees the same socket and the same
//! HTTP/2 server, sooner. A loopp host that frames connects with the
//! framed transport's preface instead: that connection goes at once to
//! the plugin's own framed services (`framed::server::Handoff`), and the
//! gRPC server is built only if a gRPC connection comes
//! ([`Acceptor::build_on_demand`]).
//!
//! Invariants: only loopback or a unix socket in the plugin's 0700
//! directory is listened on; a connection reaches gRPC only once it has
//! sent the HTTP/2 preface and the server runs, and the framed server
//! only once it has sent the framed preface (and only when the host
//! offered framing); one that does neither within a bound is closed, with
//! at most [`MAX_WAITING`] waiting, and as many waiting for the server
//! (gRPC's own listener closes one that sends nothing; the fd path has no
//! such timer).

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use grpcio::Server;

use crate::goplugin::error::{Error, Result};
use crate::goplugin::framed::server::Handoff;
use crate::goplugin::handshake::Network;
use crate::goplugin::sockdir::SocketDir;

use super::serve_err;

/// Connections waiting to be accepted: as many as the kernel allows
/// (`net.core.somaxconn`; -1 asks for that), as Go's listeners do.
const BACKLOG: libc::c_int = -1;

/// How long the accept thread waits before trying again after an error
/// that may last (no descriptor left, no memory): the connection waits in
/// the backlog meanwhile, and the thread never spins.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A listening socket and the address the handshake names.
pub struct Listener {
    socket: Socket,
    address: String,
}

enum Socket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Listens on `network`: `plugin.sock` in `sockets`, or a free port of the
/// range `ports` gives on 127.0.0.1 (starting at one that depends on the
/// pid, so concurrent plugins rarely collide; asked only for TCP).
pub fn listen(
    network: Network,
    sockets: &SocketDir,
    ports: impl FnOnce() -> Result<(u16, u16)>,
) -> Result<Listener> {
    let listener = match network {
        Network::Unix => {
            let path = sockets
                .path("plugin.sock")
                .map_err(|e| serve_err("cannot create the socket directory", e))?;
            let address = path.to_string_lossy().into_owned();
            let socket = UnixListener::bind(&path)
                .map_err(|e| serve_err(format!("cannot listen on {address}"), e))?;
            Listener {
                socket: Socket::Unix(socket),
                address,
            }
        }
        Network::Tcp => {
            let (min, max) = ports()?;
            let span = u32::from(max - min) + 1;
            let start = std::process::id().wrapping_mul(7919) % span;
            let bound = (0..span).find_map(|i| {
                let port = min + ((start + i) % span) as u16;
                let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
                TcpListener::bind(addr).ok().map(|s| (s, addr.to_string()))
            });
            let Some((socket, address)) = bound else {
                return Err(Error::Serve {
                    what: format!(
                        "no free TCP port on 127.0.0.1 in PLUGIN_MIN_PORT..=PLUGIN_MAX_PORT ({min}..={max}); widen the range"
                    ),
                    source: None,
                });
            };
            Listener {
                socket: Socket::Tcp(socket),
                address,
            }
        }
    };
    // std listens on TCP with a backlog of 128; a host that opens many
    // connections at once must not find it full. Listening again only
    // changes the backlog.
    // SAFETY: listen(2) on a socket this listener owns.
    unsafe { libc::listen(listener.fd(), BACKLOG) };
    Ok(listener)
}

impl Listener {
    /// What the handshake line names: the socket's path, or `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn fd(&self) -> RawFd {
        match &self.socket {
            Socket::Unix(s) => s.as_raw_fd(),
            Socket::Tcp(s) => s.as_raw_fd(),
        }
    }

    /// One connection, non-blocking (TCP without Nagle's delay, as gRPC
    /// sets its own); None when none is waiting.
    fn accept(&self) -> std::io::Result<Option<OwnedFd>> {
        let accepted = match &self.socket {
            Socket::Unix(s) => s.accept().and_then(|(c, _)| {
                c.set_nonblocking(true)?;
                Ok(OwnedFd::from(c))
            }),
            Socket::Tcp(s) => s.accept().and_then(|(c, _)| {
                c.set_nonblocking(true)?;
                c.set_nodelay(true)?;
                Ok(OwnedFd::from(c))
            }),
        };
        match accepted {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Hands every connection to `server`, which must be started, on a
    /// thread of its own, until [`Acceptor::stop`]: once it has sent the
    /// HTTP/2 preface, as gRPC's own listener waits for a client's first
    /// frames. One that has not within `preface_within` is closed, and at
    /// most [`MAX_WAITING`] wait at once (the oldest is closed for a new
    /// one): whoever can reach the socket holds nothing for long by
    /// connecting and saying nothing.
    ///
    /// With `framed` (a loopp host that frames, on a unix socket), a
    /// connection that starts with the framed transport's preface goes to
    /// it instead: the plugin's own services, framed (see
    /// `goplugin::framed::PLUGIN_OBJECT`).
    ///
    /// The gRPC server may come later ([`Acceptor::give`]): connections
    /// that sent their preface meanwhile wait for it (at most
    /// [`MAX_WAITING`], the oldest closed for a new one), framed ones are
    /// served at once.
    pub fn serve(self, framed: Option<Handoff>, preface_within: Duration) -> Result<Acceptor> {
        let err = |e| serve_err("cannot start the accept thread", e);
        let (wake, woken) = std::os::unix::net::UnixStream::pair().map_err(err)?;
        self.set_nonblocking().map_err(err)?;
        woken.set_nonblocking(true).map_err(err)?;
        let framed = match self.socket {
            Socket::Unix(_) => framed,
            Socket::Tcp(_) => None,
        };
        let (give, given) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("plugin-accept".into())
            .spawn(move || {
                let mut to = Destinations {
                    grpc: None,
                    build: None,
                    given,
                    early: Default::default(),
                    framed,
                };
                self.accept_until(&mut to, woken, preface_within);
                to.grpc
            })
            .map_err(err)?;
        Ok(Acceptor { wake, give, thread })
    }

    fn set_nonblocking(&self) -> std::io::Result<()> {
        match &self.socket {
            Socket::Unix(s) => s.set_nonblocking(true),
            Socket::Tcp(s) => s.set_nonblocking(true),
        }
    }

    fn accept_until(
        self,
        to: &mut Destinations,
        mut woken: std::os::unix::net::UnixStream,
        preface_within: Duration,
    ) {
        let mut waiting: std::collections::VecDeque<Waiting> = Default::default();
        let mut failing = false;
        loop {
            // Wait for a stop, a connection, or a waiting one's bytes; wake
            // for the first deadline, and soon for one with part of the
            // preface (readable already, so not polled).
            let now = Instant::now();
            let mut fds = vec![
                pollfd(woken.as_raw_fd()),
                pollfd(if failing { -1 } else { self.fd() }),
            ];
            fds.extend(
                waiting
                    .iter()
                    .map(|w| pollfd(if w.partial { -1 } else { w.fd.as_raw_fd() })),
            );
            let mut wait = waiting
                .iter()
                .map(|w| w.until.saturating_duration_since(now))
                .min();
            if waiting.iter().any(|w| w.partial) {
                wait = Some(wait.map_or(PARTIAL_RECHECK, |d| d.min(PARTIAL_RECHECK)));
            }
            if failing {
                wait = Some(wait.map_or(RETRY_PAUSE, |d| d.min(RETRY_PAUSE)));
            }
            // Rounded up: a deadline under a millisecond away must not
            // make poll return at once until it passes.
            let timeout = wait.map_or(-1, |d| {
                d.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            });
            // SAFETY: `fds` is a valid array of its length for the call.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if fds[0].revents != 0 {
                // A byte: the server was given; the end: stop (connections
                // still waiting close with `waiting`).
                let mut bytes = [0u8; 16];
                match std::io::Read::read(&mut woken, &mut bytes) {
                    Ok(n) if n > 0 => to.take_given(),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    _ => return,
                }
            }
            let retrying = std::mem::take(&mut failing);
            loop {
                match self.accept() {
                    // A host's preface is usually there already.
                    Ok(Some(fd)) => match preface(&fd, to.framed.is_some()) {
                        Preface::Sent => to.hand_over(fd),
                        Preface::Framed => to.hand_framed(fd),
                        Preface::Closed => {}
                        seen => {
                            if waiting.len() == MAX_WAITING {
                                waiting.pop_front();
                            }
                            waiting.push_back(Waiting {
                                fd,
                                until: Instant::now() + preface_within,
                                partial: matches!(seen, Preface::Partly),
                            });
                        }
                    },
                    Ok(None) => break,
                    // A connection reset before it was taken, a signal: the
                    // next one.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        let remedy = match e.raw_os_error() {
                            Some(libc::EMFILE | libc::ENFILE) => {
                                "; raise the open-file limit (ulimit -n)"
                            }
                            _ => "",
                        };
                        if !retrying {
                            log::warn!(
                                "cannot accept a connection on {}: {e}{remedy}; trying again every {RETRY_PAUSE:?}",
                                self.address
                            );
                        }
                        failing = true;
                        break;
                    }
                }
            }
            let now = Instant::now();
            let mut still = std::collections::VecDeque::with_capacity(waiting.len());
            for mut w in waiting.drain(..) {
                match preface(&w.fd, to.framed.is_some()) {
                    Preface::Sent => to.hand_over(w.fd),
                    Preface::Framed => to.hand_framed(w.fd),
                    Preface::Closed => {}
                    Preface::Partly | Preface::Nothing if now >= w.until => log::debug!(
                        "closed a connection to {} that sent no preface (HTTP/2's, or a framing host's) within {preface_within:?}",
                        self.address
                    ),
                    Preface::Partly => {
                        w.partial = true;
                        still.push_back(w);
                    }
                    Preface::Nothing => still.push_back(w),
                }
            }
            waiting = still;
        }
    }
}

/// Builds and starts the gRPC server.
pub type Build = Box<dyn FnOnce() -> Result<Server> + Send>;

/// What the accept thread is given for gRPC's connections.
enum Given {
    /// The server, started.
    Server(Server),
    /// How to build it, at the first connection that needs it.
    Build(Build),
}

/// Where the accept thread hands connections.
struct Destinations {
    /// The gRPC server, once given (or built).
    grpc: Option<Server>,
    /// How to build it, until it is.
    build: Option<Build>,
    given: std::sync::mpsc::Receiver<Given>,
    /// Connections that sent their preface before the server was given.
    early: std::collections::VecDeque<OwnedFd>,
    framed: Option<Handoff>,
}

impl Destinations {
    /// Gives gRPC a connection that sent its preface, or keeps it until
    /// the server is given.
    fn hand_over(&mut self, fd: OwnedFd) {
        if self.grpc.is_none() {
            if let Some(build) = self.build.take() {
                // The host waits meanwhile: gRPC's set-up and the server's,
                // about a millisecond, once.
                match build() {
                    Ok(server) => self.grpc = Some(server),
                    Err(e) => log::error!("{e}; gRPC connections to this plugin are closed"),
                }
            }
        }
        match &mut self.grpc {
            // SAFETY: a connected, non-blocking stream socket of ours;
            // gRPC owns and closes it from here on.
            Some(server) => unsafe { server.add_channel_from_fd(fd.into_raw_fd()) },
            None => {
                if self.early.len() == MAX_WAITING {
                    self.early.pop_front();
                }
                self.early.push_back(fd);
            }
        }
    }

    /// Takes the server, if given, and hands it what waited for it.
    fn take_given(&mut self) {
        match self.given.try_recv() {
            Ok(Given::Server(server)) => self.grpc = Some(server),
            Ok(Given::Build(build)) => self.build = Some(build),
            Err(_) => return,
        }
        for fd in std::mem::take(&mut self.early) {
            self.hand_over(fd);
        }
    }

    /// Gives the framed server a connection that sent the framed preface.
    fn hand_framed(&mut self, fd: OwnedFd) {
        if let Some(framed) = &self.framed {
            framed.serve(std::os::unix::net::UnixStream::from(fd));
        }
    }
}

/// Connections accepted but not handed over at once, at most.
pub const MAX_WAITING: usize = 64;

/// How often a connection that sent part of the preface is looked at again.
const PARTIAL_RECHECK: Duration = Duration::from_millis(5);

/// HTTP/2's client connection preface, which every client sends first.
const PREFACE_LEN: usize = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".len();

/// An accepted connection waiting for its preface.
struct Waiting {
    fd: OwnedFd,
    until: Instant,
    /// Part of the preface is there: readable, so looked at on a timer.
    partial: bool,
}

enum Preface {
    /// All of its bytes are there (gRPC checks them).
    Sent,
    /// The framed transport's preface is there (only looked for when a
    /// framed server takes connections).
    Framed,
    /// Some are.
    Partly,
    /// None yet.
    Nothing,
    /// The peer closed, or the socket failed.
    Closed,
}

/// What has arrived of the preface on `fd`, read without taking it; with
/// `framed`, the framed transport's preface is looked for too.
fn preface(fd: &OwnedFd, framed: bool) -> Preface {
    let mut buf = [0u8; PREFACE_LEN];
    // SAFETY: `buf` is valid for its length; MSG_PEEK leaves the bytes.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    let framed_preface = crate::goplugin::framed::wire::PREFACE;
    match usize::try_from(n) {
        Ok(n) if framed && n >= framed_preface.len() && buf.starts_with(framed_preface) => {
            Preface::Framed
        }
        Ok(n) if n >= PREFACE_LEN => Preface::Sent,
        Ok(0) => Preface::Closed,
        Ok(_) => Preface::Partly,
        Err(_) => match std::io::Error::last_os_error().kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Preface::Nothing,
            _ => Preface::Closed,
        },
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// The thread that hands connections to the server.
pub struct Acceptor {
    wake: std::os::unix::net::UnixStream,
    give: std::sync::mpsc::Sender<Given>,
    thread: std::thread::JoinHandle<Option<Server>>,
}

impl Acceptor {
    /// Gives the gRPC server, started, which then gets every connection
    /// that sent the HTTP/2 preface.
    pub fn give(&self, server: Server) {
        self.hand(Given::Server(server));
    }

    /// Gives how to build the gRPC server instead, on the accept thread,
    /// when the first connection that sent the HTTP/2 preface comes: a
    /// plugin whose host frames never starts gRPC's core.
    pub fn build_on_demand(&self, build: Build) {
        self.hand(Given::Build(build));
    }

    fn hand(&self, given: Given) {
        if self.give.send(given).is_ok() {
            let _ = std::io::Write::write(&mut &self.wake, &[1]);
        }
    }

    /// Stops accepting and gives the server back (None if it was never
    /// given or the thread panicked). Connections not yet accepted are
    /// refused when the listener closes, and those waiting are closed.
    pub fn stop(self) -> Option<Server> {
        // The thread's end of the pair sees it close.
        drop(self.wake);
        self.thread.join().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goplugin::rpc;
    use std::time::Instant;

    fn health_server() -> Server {
        let mut server = rpc::server_builder()
            .register_service(crate::proto::health_grpc::create_health(
                super::super::builtin::Health {
                    stopping: Default::default(),
                },
            ))
            .build()
            .unwrap();
        server.start();
        server
    }

    /// The handshake can name the socket before gRPC runs: a host that
    /// connects and calls then is served once the server starts, and
    /// stopping gives the server back and closes the socket.
    #[test]
    fn a_host_that_connects_before_the_server_runs_is_served() {
        let sockets = SocketDir::create().unwrap();
        let listener = listen(Network::Unix, &sockets, || {
            unreachable!("no ports for a unix socket")
        })
        .unwrap();
        let address = listener.address().to_string();
        assert!(address.ends_with("/plugin.sock"), "{address}");
        // Connected now, into the backlog: nothing accepts yet.
        let channel = rpc::connect_now(Network::Unix, &address, rpc::DEFAULT_MAX_MESSAGE);
        let health = crate::proto::health_grpc::HealthClient::new(channel);
        let call =
            std::thread::spawn(move || health.check(&Default::default(), Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(100));
        let acceptor = listener.serve(None, Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        acceptor.give(health_server());
        let reply = call.join().unwrap().expect("served once the server ran");
        assert_eq!(
            reply.status,
            crate::proto::health::health_check_response::ServingStatus::SERVING.into()
        );

        let t0 = Instant::now();
        let server = acceptor.stop().expect("the server back");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        rpc::shutdown_server(server, Duration::from_secs(1));
        let refused = std::os::unix::net::UnixStream::connect(&address).unwrap_err();
        assert_eq!(
            refused.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{refused}"
        );
    }

    /// Every connection is handed over, not only the first; TCP listens on
    /// loopback within the range, and a range with no free port is an error
    /// that says what to do.
    #[test]
    fn tcp_listens_on_loopback_in_the_range_and_serves_every_connection() {
        let sockets = SocketDir::create().unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let Err(e) = listen(Network::Tcp, &sockets, || Ok((port, port))) else {
            panic!("listened on a taken port");
        };
        let text = e.to_string();
        assert!(
            text.contains(&format!("({port}..={port})")) && text.contains("widen the range"),
            "{text}"
        );
        drop(taken);

        let listener = listen(Network::Tcp, &sockets, || Ok((port, port))).unwrap();
        assert_eq!(listener.address(), format!("127.0.0.1:{port}"));
        let acceptor = listener.serve(None, Duration::from_secs(10)).unwrap();
        acceptor.give(health_server());
        for _ in 0..3 {
            let channel = rpc::connect_now(
                Network::Tcp,
                &format!("127.0.0.1:{port}"),
                rpc::DEFAULT_MAX_MESSAGE,
            );
            let health = crate::proto::health_grpc::HealthClient::new(channel);
            health
                .check(&Default::default(), Duration::from_secs(10))
                .expect("each connection served");
        }
        let server = acceptor.stop().expect("the server back");
        rpc::shutdown_server(server, Duration::from_secs(1));
    }

    /// Whoever connects and says nothing holds a connection for the
    /// preface's time at most, and holds up nobody: a silent connection is
    /// closed after it, the oldest of more than [`MAX_WAITING`] at once,
    /// and a client that speaks is served meanwhile.
    #[test]
    fn connections_that_send_no_preface_are_closed_and_hold_up_nobody() {
        use std::io::Read;
        let sockets = SocketDir::create().unwrap();
        let listener = listen(Network::Unix, &sockets, || unreachable!()).unwrap();
        let address = listener.address().to_string();
        let acceptor = listener.serve(None, Duration::from_millis(500)).unwrap();
        acceptor.give(health_server());
        let silent = |n: usize| -> Vec<std::os::unix::net::UnixStream> {
            (0..n)
                .map(|_| std::os::unix::net::UnixStream::connect(&address).unwrap())
                .collect()
        };
        let closed = |c: &mut std::os::unix::net::UnixStream, within: Duration| {
            c.set_read_timeout(Some(within)).unwrap();
            // EOF; a reset when it closed with our bytes unread.
            match c.read(&mut [0u8; 1]) {
                Ok(0) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => false,
            }
        };
        let mut first = silent(1);
        // Part of the preface, then nothing.
        let mut partial = silent(1);
        std::io::Write::write_all(&mut partial[0], b"PRI * HTTP").unwrap();
        let t0 = Instant::now();
        let channel = rpc::connect_now(Network::Unix, &address, rpc::DEFAULT_MAX_MESSAGE);
        crate::proto::health_grpc::HealthClient::new(channel)
            .check(&Default::default(), Duration::from_secs(10))
            .expect("served while others say nothing");
        assert!(
            closed(&mut first[0], Duration::from_secs(5)),
            "a silent connection kept"
        );
        assert!(
            closed(&mut partial[0], Duration::from_secs(5)),
            "a stalled preface kept"
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t0.elapsed()
        );

        // One more than the bound: the oldest goes at once.
        let mut many = silent(MAX_WAITING + 1);
        assert!(
            closed(&mut many[0], Duration::from_millis(400)),
            "the oldest of {} waiting connections kept",
            MAX_WAITING + 1
        );
        assert!(!closed(&mut many[1], Duration::from_millis(50)));
        let server = acceptor.stop().expect("the server back");
        rpc::shutdown_server(server, Duration::from_secs(1));
    }

    /// With a framed server, a framing host is answered on the plugin's
    /// own socket before the gRPC server exists, while a gRPC client that
    /// connected meanwhile waits for it; the framed connection ends when
    /// the acceptor stops, and without a framed server the framed preface
    /// is not served.
    #[test]
    fn a_framing_host_is_answered_before_the_grpc_server_runs() {
        use crate::goplugin::framed;
        use crate::proto::health::{health_check_response::ServingStatus, HealthCheckRequest};
        let ask = HealthCheckRequest::default();
        let health = |f: &framed::Channel| {
            crate::goplugin::unary::wait(framed::client::call_unary::<
                _,
                crate::proto::health::HealthCheckResponse,
            >(
                f,
                framed::PLUGIN_OBJECT,
                "/grpc.health.v1.Health/Check",
                &ask,
                Duration::from_secs(5),
            ))
        };
        let sockets = SocketDir::create().unwrap();
        let listener = listen(Network::Unix, &sockets, || unreachable!()).unwrap();
        let address = listener.address().to_string();
        let table = crate::goplugin::route::Table::default();
        table.insert(
            framed::PLUGIN_OBJECT,
            vec![crate::proto::health_grpc::offer_health(
                super::super::builtin::Health {
                    stopping: Default::default(),
                },
            )],
        );
        let handoff = framed::server::Handoff::new(
            std::path::Path::new(&address),
            table,
            rpc::DEFAULT_MAX_MESSAGE,
            framed::PLUGIN_CONNECTIONS,
        );
        let acceptor = listener
            .serve(Some(handoff), Duration::from_secs(10))
            .unwrap();
        // A gRPC client first: it waits for the server.
        let channel = rpc::connect_now(Network::Unix, &address, rpc::DEFAULT_MAX_MESSAGE);
        let grpc = crate::proto::health_grpc::HealthClient::new(channel);
        let waiting =
            std::thread::spawn(move || grpc.check(&Default::default(), Duration::from_secs(10)));
        let own = framed::Channel::connect(&address, rpc::DEFAULT_MAX_MESSAGE)
            .expect("a framed connection to the plugin's socket");
        let reply = health(&own).expect("answered framed with no gRPC server");
        assert_eq!(reply.status, ServingStatus::SERVING.into());
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !waiting.is_finished(),
            "a gRPC call answered with no server"
        );
        acceptor.give(health_server());
        let reply = waiting
            .join()
            .unwrap()
            .expect("answered once the server was given");
        assert_eq!(reply.status, ServingStatus::SERVING.into());

        let server = acceptor.stop().expect("the server back");
        rpc::shutdown_server(server, Duration::from_secs(1));
        let t0 = Instant::now();
        while own.is_open() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !own.is_open(),
            "the framed connection outlived the acceptor"
        );
        assert!(health(&own).is_err());

        // No framed server: the framed preface goes to gRPC, which closes it.
        let sockets = SocketDir::create().unwrap();
        let listener = listen(Network::Unix, &sockets, || unreachable!()).unwrap();
        let address = listener.address().to_string();
        let acceptor = listener.serve(None, Duration::from_secs(10)).unwrap();
        acceptor.give(health_server());
        let refused = framed::Channel::connect(&address, rpc::DEFAULT_MAX_MESSAGE);
        assert!(
            refused.is_err(),
            "a framed connection served without a framed server"
        );
        let server = acceptor.stop().expect("the server back");
        rpc::shutdown_server(server, Duration::from_secs(1));
    }
}
