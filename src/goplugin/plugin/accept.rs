//! The plugin's own listener: bound before gRPC is set up, its connections
//! handed to the gRPC server once it runs.
//!
//! Setting gRPC up (its init, then building the server) takes about half
//! a millisecond of a plugin's start, and the host could only connect
//! after it, once the handshake line named the address. So the plugin
//! binds and listens itself, prints the handshake, and then builds and
//! starts the server while the host connects (the connection waits in the
//! backlog) and sends its first call; an accept thread hands every
//! connection to the started server (`grpc_server_add_channel_from_fd`), as
//! gRPC's own listener would. A host sees the same socket and the same
//! HTTP/2 server, sooner.
//!
//! Invariant: only loopback or a unix socket in the plugin's 0700
//! directory is listened on.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grpcio::Server;

use crate::goplugin::error::{Error, Result};
use crate::goplugin::handshake::Network;
use crate::goplugin::sockdir::SocketDir;

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

fn serve_err(what: impl Into<String>, e: std::io::Error) -> Error {
    Error::Serve {
        what: what.into(),
        source: Some(Box::new(e)),
    }
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

    /// One connection, non-blocking and ready for gRPC (TCP without
    /// Nagle's delay, as gRPC sets its own).
    fn accept(&self) -> std::io::Result<RawFd> {
        match &self.socket {
            Socket::Unix(s) => {
                let (c, _) = s.accept()?;
                c.set_nonblocking(true)?;
                Ok(c.into_raw_fd())
            }
            Socket::Tcp(s) => {
                let (c, _) = s.accept()?;
                c.set_nonblocking(true)?;
                c.set_nodelay(true)?;
                Ok(c.into_raw_fd())
            }
        }
    }

    /// Hands every connection to `server`, which must be started, on a
    /// thread of its own, until [`Acceptor::stop`].
    pub fn serve(self, server: Server) -> Result<Acceptor> {
        let stopping = Arc::new(AtomicBool::new(false));
        let fd = self.fd();
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("plugin-accept".into())
            .spawn(move || self.accept_until(server, &stop))
            .map_err(|e| serve_err("cannot start the accept thread", e))?;
        Ok(Acceptor {
            fd,
            stopping,
            thread,
        })
    }

    fn accept_until(self, mut server: Server, stopping: &AtomicBool) -> Server {
        let mut failing = false;
        loop {
            let accepted = self.accept();
            if stopping.load(Ordering::Acquire) {
                if let Ok(fd) = accepted {
                    // SAFETY: a descriptor accept gave us and nobody else.
                    unsafe { libc::close(fd) };
                }
                return server;
            }
            match accepted {
                Ok(fd) => {
                    failing = false;
                    // SAFETY: `fd` is a connected, non-blocking stream
                    // socket of ours; gRPC owns and closes it from here on.
                    unsafe { server.add_channel_from_fd(fd) };
                }
                // A connection reset before it was taken, a signal: the
                // next one.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    if !failing {
                        let remedy = match e.raw_os_error() {
                            Some(libc::EMFILE | libc::ENFILE) => {
                                "; raise the open-file limit (ulimit -n)"
                            }
                            _ => "",
                        };
                        log::warn!(
                            "cannot accept a connection on {}: {e}{remedy}; trying again",
                            self.address
                        );
                        failing = true;
                    }
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        }
    }
}

/// The thread that hands connections to the server.
pub struct Acceptor {
    fd: RawFd,
    stopping: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Server>,
}

impl Acceptor {
    /// Stops accepting and gives the server back (None if the thread
    /// panicked). Connections not yet accepted are refused when the
    /// listener closes.
    pub fn stop(self) -> Option<Server> {
        self.stopping.store(true, Ordering::Release);
        // Wakes the thread from accept(2), which then fails (EINVAL); the
        // thread still owns and closes the listener.
        // SAFETY: shutdown(2) on the listener, open until the thread ends.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        self.thread.join().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goplugin::rpc;
    use std::time::Instant;

    fn health_server(stopping: &Arc<AtomicBool>) -> Server {
        let mut server = rpc::server_builder()
            .register_service(crate::proto::health_grpc::create_health(
                super::super::builtin::Health {
                    stopping: stopping.clone(),
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
        let acceptor = listener
            .serve(health_server(&Arc::new(AtomicBool::new(false))))
            .unwrap();
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
        let acceptor = listener
            .serve(health_server(&Arc::new(AtomicBool::new(false))))
            .unwrap();
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
}
