//! The framed server: one per routed broker that frames, serving its
//! [`Table`] of objects. A broker's also takes gRPC connections on the
//! same socket (told apart by their first byte) and builds its gRPC server
//! for them at the first ([`Server::start_with_grpc`]): between loopp
//! processes that frame, none comes, and gRPC's core never starts.
//!
//! Each connection has one reader thread, which reads calls and runs their
//! handlers right there, as a gRPC completion-queue thread does: handlers
//! answer at once, hand blocking work to the pool
//! ([`crate::goplugin::rpc::respond_blocking`], in the object's lane; a
//! lane of short local work may run it on a reader with nothing else to
//! read, [`crate::goplugin::pool::quiet`]), or
//! answer with a future ([`crate::goplugin::rpc::respond_async`]) that
//! whoever wakes it drives on. Answers are written by whichever thread has
//! them, one frame at a time.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use grpcio::{RpcStatus, RpcStatusCode};

use super::wire::{self, Frame, PREFACE};
use super::{RawAnswer, Served, Writer};
use crate::goplugin::metrics::FRAMED_CONNECTIONS;
use crate::goplugin::route::Table;

/// The glue of one unary method (generated from `proto/`): decodes the
/// message, finds the object in the table and calls its implementation.
pub type Handler = fn(&Table, u32, Served, &[u8], RawAnswer);

/// The most connections a server keeps at once (each has a thread and
/// three fds). Its peers are the processes that dialed or were forwarded
/// its objects, one connection each: a host and its plugins (a relayer's
/// is also dialed by every median process of a feed of its own, so the
/// node's limit on feeds bounds them first). A connection beyond it is
/// closed before it is acknowledged, and that client calls over gRPC.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long a new connection has to send the [`PREFACE`].
const PREFACE_WITHIN: Duration = Duration::from_secs(10);

/// Every unary method of `proto/`, by full name.
static HANDLERS: LazyLock<HashMap<&'static str, Handler>> =
    LazyLock::new(|| crate::proto::framed_handlers().into_iter().collect());

/// A framed server on a unix socket. Dropping it (or [`Server::stop`])
/// stops accepting, ends every connection and removes the socket.
pub struct Server {
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
    listener: UnixListener,
    path: PathBuf,
}

struct Shared {
    table: Table,
    max_message: usize,
    path: PathBuf,
    stopped: AtomicBool,
    max_connections: usize,
    next: AtomicU64,
    /// The open connections, to end them at the stop.
    conns: Mutex<HashMap<u64, UnixStream>>,
    /// gRPC's connections on the same socket, if it takes them.
    grpc: Mutex<Grpc>,
}

/// The gRPC server of a framed server's socket: how to build it, until
/// the first gRPC connection comes; then the server.
#[derive(Default)]
struct Grpc {
    build: Option<BuildGrpc>,
    built: Option<grpcio::Server>,
}

/// Builds and starts a gRPC server of the same objects; None when it
/// cannot (logged).
pub type BuildGrpc = Box<dyn FnOnce() -> Option<grpcio::Server> + Send>;

impl Server {
    /// Serves `table` on a new socket at `path`, messages up to
    /// `max_message` bytes each way, at most `max_connections` at once
    /// ([`MAX_CONNECTIONS`] for a broker's).
    pub fn start(
        path: &Path,
        table: Table,
        max_message: usize,
        max_connections: usize,
    ) -> std::io::Result<Server> {
        Server::start_with_grpc(path, table, max_message, max_connections, None)
    }

    /// As [`Server::start`]; with `grpc`, a connection that starts with
    /// HTTP/2's preface goes to the gRPC server `grpc` builds at the first
    /// such connection.
    pub fn start_with_grpc(
        path: &Path,
        table: Table,
        max_message: usize,
        max_connections: usize,
        grpc: Option<BuildGrpc>,
    ) -> std::io::Result<Server> {
        let listener = UnixListener::bind(path)?;
        let shared = Arc::new(Shared {
            table,
            max_message,
            path: path.to_path_buf(),
            stopped: AtomicBool::new(false),
            max_connections,
            next: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            grpc: Mutex::new(Grpc {
                build: grpc,
                built: None,
            }),
        });
        let accepting = listener.try_clone()?;
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("framed-accept".into())
            .spawn(move || accept_loop(&s, accepting))?;
        Ok(Server {
            shared,
            accept: Some(accept),
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The gRPC server built for gRPC's connections, if one came: what
    /// a broker stops with its others, within their grace.
    pub fn take_grpc(&self) -> Option<grpcio::Server> {
        self.shared.grpc.lock().unwrap().built.take()
    }

    /// How many connections are open.
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }

    /// Stops accepting, ends every connection (calls in progress answer
    /// into a closed socket) and removes the socket.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopped.store(true, Ordering::Release);
        // SAFETY: shutting down a socket this server owns; the accept
        // thread's `accept` then fails and it ends.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = accept.join();
        for (_, c) in self.shared.conns.lock().unwrap().drain() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// A framed server without a socket of its own: another listener hands it
/// the connections that start with the [`PREFACE`] (a plugin's own socket,
/// which takes its host's gRPC connections too: see
/// `goplugin::plugin::accept`). Dropping it ends every connection.
pub struct Handoff {
    shared: Arc<Shared>,
}

impl Handoff {
    /// Serves `table` to the connections handed over, messages up to
    /// `max_message` bytes each way, at most `max_connections` at once;
    /// `place` names the listener in logs.
    pub fn new(place: &Path, table: Table, max_message: usize, max_connections: usize) -> Handoff {
        Handoff {
            shared: Arc::new(Shared {
                table,
                max_message,
                path: place.to_path_buf(),
                stopped: AtomicBool::new(false),
                max_connections,
                next: AtomicU64::new(0),
                conns: Mutex::new(HashMap::new()),
                grpc: Mutex::new(Grpc::default()),
            }),
        }
    }

    /// Serves a connection whose first bytes (not yet read) are the
    /// [`PREFACE`].
    pub fn serve(&self, conn: UnixStream) {
        if conn.set_nonblocking(false).is_ok() {
            admit(&self.shared, conn);
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        for (_, c) in self.shared.conns.lock().unwrap().drain() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: UnixListener) {
    for conn in listener.incoming() {
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
        let conn = match conn {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!(
                    "framed server {}: cannot accept a connection: {e}",
                    shared.path.display()
                );
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        admit(shared, conn);
    }
}

/// Serves `conn` on a reader thread of its own, unless the server has
/// as many connections as it keeps (then it is closed unacknowledged, and
/// its client calls over gRPC).
fn admit(shared: &Arc<Shared>, conn: UnixStream) {
    let key = shared.next.fetch_add(1, Ordering::Relaxed);
    {
        let mut conns = shared.conns.lock().unwrap();
        if conns.len() >= shared.max_connections {
            log::warn!(
                "framed server {}: refused a connection: {} are open already (one per peer process is expected); that peer calls over gRPC",
                shared.path.display(),
                shared.max_connections
            );
            return;
        }
        match conn.try_clone() {
            Ok(c) => conns.insert(key, c),
            Err(_) => return,
        };
    }
    let s = shared.clone();
    let started = std::thread::Builder::new()
        .name("framed-in".into())
        .spawn(move || {
            let open = FRAMED_CONNECTIONS.with_label_values(&["in"]);
            open.inc();
            serve_connection(&s, conn);
            s.conns.lock().unwrap().remove(&key);
            open.dec();
        });
    if started.is_err() {
        shared.conns.lock().unwrap().remove(&key);
    }
}

fn serve_connection(shared: &Shared, conn: UnixStream) {
    let place = shared.path.display();
    let conn = match to_grpc(shared, conn) {
        Some(conn) => conn,
        None => return,
    };
    let mut preface = [0u8; PREFACE.len()];
    let started = conn
        .set_read_timeout(Some(PREFACE_WITHIN))
        .and_then(|()| (&conn).read_exact(&mut preface))
        .and_then(|()| conn.set_read_timeout(None));
    if let Err(e) = started {
        log::warn!("framed server {place}: a connection sent no preface within {PREFACE_WITHIN:?} ({e}); closed");
        return;
    }
    if preface != PREFACE {
        log::warn!(
            "framed server {place}: a connection did not start with {:?} but {:?}: not a loopp framed client; closed",
            String::from_utf8_lossy(PREFACE),
            String::from_utf8_lossy(&preface)
        );
        return;
    }
    let writer = match conn.try_clone() {
        Ok(w) => Arc::new(Writer::new(w)),
        Err(_) => return,
    };
    // Accepted: the client calls only once it reads this back.
    if writer.write(PREFACE).is_err() {
        return;
    }
    let mut reader = BufReader::with_capacity(16 * 1024, conn);
    loop {
        match wire::read(&mut reader, shared.max_message) {
            Ok(Frame::Call {
                call,
                object,
                timeout: _,
                method,
                message,
            }) => {
                let answer = RawAnswer::new(writer.clone(), call, shared.max_message);
                let Some((name, handler)) = HANDLERS.get_key_value(method.as_str()) else {
                    answer.send_status(RpcStatus::with_message(
                        RpcStatusCode::UNIMPLEMENTED,
                        format!("{method}: no such method is served here"),
                    ));
                    continue;
                };
                if message.len() > shared.max_message {
                    answer.send_status(RpcStatus::with_message(
                        RpcStatusCode::RESOURCE_EXHAUSTED,
                        format!(
                            "{method}: a request of {} bytes, over this server's bound of {} ({})",
                            message.len(),
                            shared.max_message,
                            crate::goplugin::rpc::MAX_MESSAGE_VAR
                        ),
                    ));
                    continue;
                }
                // The caller's timeout is its own to keep (it stops waiting
                // then); handlers bound their work themselves, as over gRPC.
                let served = Served { method: name };
                // With nothing else to read, this thread would only wait
                // for the next call: a short blocking job the handler
                // starts may run here (`pool::quiet`).
                let _quiet = reader
                    .buffer()
                    .is_empty()
                    .then(|| crate::goplugin::pool::quiet(reader.get_ref().as_raw_fd()));
                super::task::drain_point(|| {
                    handler(&shared.table, object, served, &message, answer)
                });
            }
            Ok(Frame::Answer { call, .. }) => {
                log::warn!("framed server {place}: a client sent an answer (to call {call}), which only a server sends; closing the connection");
                break;
            }
            Err(e) if e.is_end() => break,
            Err(e) => {
                if !shared.stopped.load(Ordering::Acquire) {
                    log::warn!("framed server {place}: {e}; closing the connection");
                }
                break;
            }
        }
    }
    writer.end();
}

/// Hands `conn` to the gRPC server (built now if it is the first) when it
/// starts as HTTP/2's preface does and this socket takes gRPC's
/// connections; else gives it back, for the framed preface.
fn to_grpc(shared: &Shared, conn: UnixStream) -> Option<UnixStream> {
    {
        let grpc = shared.grpc.lock().unwrap();
        if grpc.build.is_none() && grpc.built.is_none() {
            return Some(conn);
        }
    }
    // The first byte tells them apart: HTTP/2's `PRI * ...`, ours `loopp...`.
    let mut first = [0u8; 1];
    let _ = conn.set_read_timeout(Some(PREFACE_WITHIN));
    // SAFETY: `first` is valid for its length; MSG_PEEK leaves the byte.
    let n = unsafe {
        libc::recv(
            conn.as_raw_fd(),
            first.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK,
        )
    };
    if n != 1 {
        // Nothing within the bound, or closed: not waited for again by
        // the framed preface's read.
        log::warn!(
            "framed server {}: a connection closed, or sent nothing within {PREFACE_WITHIN:?}; closed",
            shared.path.display()
        );
        return None;
    }
    if first[0] != b'P' {
        return Some(conn);
    }
    let mut grpc = shared.grpc.lock().unwrap();
    if grpc.built.is_none() {
        if let Some(build) = grpc.build.take() {
            grpc.built = build();
        }
    }
    let server = grpc.built.as_mut()?;
    if conn.set_read_timeout(None).is_err() || conn.set_nonblocking(true).is_err() {
        return None;
    }
    // SAFETY: a connected, non-blocking stream socket of ours; gRPC owns
    // and closes it from here on.
    unsafe { server.add_channel_from_fd(std::os::fd::IntoRawFd::into_raw_fd(conn)) };
    None
}

/// Every unary method of `proto/` on a routed broker's shared gRPC server:
/// each call's bytes, and the object its route header names, go to the
/// same glue as a framed call's ([`Handler`]), so a routed object is
/// served by one dispatch whichever way its calls come (a peer that does
/// not frame, or framing turned off).
pub fn routed_unary_service(table: &Table) -> grpcio::Service {
    let mut builder = grpcio::ServiceBuilder::new();
    for (&path, &handler) in HANDLERS.iter() {
        let method = grpcio::Method {
            ty: grpcio::MethodType::Unary,
            name: path,
            req_mar: grpcio::Marshaller {
                ser: bytes_out,
                de: bytes_in,
            },
            resp_mar: grpcio::Marshaller {
                ser: bytes_out,
                de: bytes_in,
            },
        };
        let table = table.clone();
        builder = builder.add_unary_handler(&method, move |ctx, req: Vec<u8>, sink| {
            let answer = RawAnswer::grpc(sink);
            let object = match crate::goplugin::route::route_of(&ctx) {
                Ok(id) => id,
                Err(status) => return answer.send_status(status),
            };
            let served = Served { method: path };
            super::task::drain_point(|| handler(&table, object, served, &req, answer));
        });
    }
    builder.build()
}

fn bytes_out(b: &Vec<u8>, buf: &mut grpcio::GrpcSlice) -> grpcio::Result<()> {
    *buf = grpcio::GrpcSlice::from(b.as_slice());
    Ok(())
}

fn bytes_in(mut reader: grpcio::MessageReader) -> grpcio::Result<Vec<u8>> {
    let mut b = Vec::with_capacity(reader.len());
    reader
        .read_to_end(&mut b)
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goplugin::call::{Ctx, Sink};
    use crate::goplugin::framed::client::Channel;
    use crate::proto::health::{
        health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse,
    };
    use crate::proto::health_grpc::{offer_health, Health};
    use protobuf::Message;
    use std::io::Write;
    use std::time::Instant;

    #[derive(Clone)]
    struct Serving;

    impl Health for Serving {
        fn check(&mut self, ctx: Ctx, _req: HealthCheckRequest, sink: Sink<HealthCheckResponse>) {
            let mut r = HealthCheckResponse::new();
            r.status = ServingStatus::SERVING.into();
            crate::goplugin::rpc::respond(&ctx, sink, Ok(r));
        }
    }

    const CHECK: &str = "/grpc.health.v1.Health/Check";
    /// The test servers' bound on connections.
    const BOUND: usize = 16;
    const T: Duration = Duration::from_secs(5);

    /// A server of one Health object, id 7, in a fresh socket directory.
    fn serving() -> (crate::goplugin::sockdir::SocketDir, Server) {
        let dir = crate::goplugin::sockdir::SocketDir::create().unwrap();
        let table = Table::default();
        table.insert(7, vec![offer_health(Serving)]);
        let server = Server::start(&dir.path("f.sock").unwrap(), table, 1024, BOUND).unwrap();
        (dir, server)
    }

    fn check(channel: &Channel, object: u32, bytes: &[u8]) -> grpcio::Result<Vec<u8>> {
        crate::goplugin::spinwait::block_on(channel.call(object, CHECK, bytes, T))
    }

    fn code(r: grpcio::Result<Vec<u8>>) -> (RpcStatusCode, String) {
        match r {
            Err(grpcio::Error::RpcFailure(s)) => (s.code(), s.message().to_string()),
            other => panic!("expected a status, got {other:?}"),
        }
    }

    fn serving_answer(r: grpcio::Result<Vec<u8>>) -> bool {
        let r = HealthCheckResponse::parse_from_bytes(&r.unwrap()).unwrap();
        r.status.enum_value_or_default() == ServingStatus::SERVING
    }

    /// Until the server closes `conn` (a read gives 0 bytes), at most 5 s.
    fn closed(mut conn: UnixStream) -> bool {
        conn.set_read_timeout(Some(T)).unwrap();
        let mut buf = [0u8; 64];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    /// Each way a call can be wrong gets its own status, named; the
    /// connection goes on serving.
    #[test]
    fn calls_that_cannot_be_served_get_a_status_saying_why() {
        let (_dir, server) = serving();
        let c = Channel::connect(&server.path().to_string_lossy(), 1024).unwrap();
        assert!(serving_answer(check(&c, 7, &[])));
        let (code_, msg) = code(crate::goplugin::spinwait::block_on(c.call(
            7,
            "/no.Such/Method",
            &[],
            T,
        )));
        assert_eq!(code_, RpcStatusCode::UNIMPLEMENTED);
        assert!(msg.contains("/no.Such/Method"), "{msg}");
        let (code_, msg) = code(check(&c, 7, &[0xff]));
        assert_eq!(code_, RpcStatusCode::INVALID_ARGUMENT);
        assert!(msg.contains("HealthCheckRequest"), "{msg}");
        let (code_, msg) = code(check(&c, 8, &[]));
        assert_eq!(code_, RpcStatusCode::UNAVAILABLE);
        assert!(msg.contains("broker id 8"), "{msg}");
        // Over the bound, both ways: refused before it is sent, and (from
        // a client with a larger bound) answered RESOURCE_EXHAUSTED.
        let (code_, _) = code(check(&c, 7, &[0; 2000]));
        assert_eq!(code_, RpcStatusCode::RESOURCE_EXHAUSTED);
        let big = Channel::connect(&server.path().to_string_lossy(), 1 << 20).unwrap();
        let mut req = HealthCheckRequest::new();
        req.service = "x".repeat(2000);
        let (code_, msg) = code(check(&big, 7, &req.write_to_bytes().unwrap()));
        assert_eq!(code_, RpcStatusCode::RESOURCE_EXHAUSTED);
        assert!(msg.contains("LOOPP_MAX_MESSAGE_BYTES"), "{msg}");
        assert!(serving_answer(check(&c, 7, &[])), "still serving");
    }

    /// A connection that does not speak the protocol (no preface, a frame
    /// over the bound, garbage, an answer sent to the server) is closed;
    /// the server and its other connections go on.
    #[test]
    fn a_connection_that_breaks_the_protocol_is_closed_and_only_it() {
        let (_dir, server) = serving();
        let path = server.path().to_path_buf();
        let good = Channel::connect(&path.to_string_lossy(), 1024).unwrap();
        let mut cases: Vec<Vec<u8>> = vec![
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ];
        let framed = |frame: &[u8]| [PREFACE, frame].concat();
        cases.push(framed(&u32::MAX.to_be_bytes()));
        cases.push(framed(&[0, 0, 0, 5, 9, 0, 0, 0, 1]));
        cases.push(framed(&wire::answer(1, Ok(b""))));
        for bytes in cases {
            let mut conn = UnixStream::connect(&path).unwrap();
            conn.write_all(&bytes).unwrap();
            assert!(closed(conn), "{:?}", String::from_utf8_lossy(&bytes));
            assert!(serving_answer(check(&good, 7, &[])));
        }
    }

    /// A server keeps at most its bound of connections; one more is
    /// closed before it is acknowledged (its client calls over gRPC).
    #[test]
    fn connections_are_bounded() {
        let (_dir, server) = serving();
        let path = server.path().to_string_lossy().into_owned();
        let held: Vec<Channel> = (0..BOUND)
            .map(|_| Channel::connect(&path, 1024).unwrap())
            .collect();
        for c in &held {
            assert!(serving_answer(check(c, 7, &[])));
        }
        assert_eq!(server.connections(), BOUND);
        let refused = Channel::connect(&path, 1024).err().expect("refused");
        assert!(refused.to_string().contains("did not accept"), "{refused}");
        drop(held);
        let t0 = Instant::now();
        while server.connections() > 0 && t0.elapsed() < T {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(server.connections(), 0, "ended with their clients");
    }

    /// A call whose server never answers fails DEADLINE_EXCEEDED at its
    /// deadline; one whose server goes away fails UNAVAILABLE at once, and
    /// so does every call after.
    #[test]
    fn a_silent_server_times_out_and_a_gone_one_fails_at_once() {
        let dir = crate::goplugin::sockdir::SocketDir::create().unwrap();
        let path = dir.path("silent.sock").unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // Accepts and acknowledges, then never answers.
        let acker = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut preface = [0u8; PREFACE.len()];
            conn.read_exact(&mut preface).unwrap();
            conn.write_all(PREFACE).unwrap();
            conn
        });
        let c = Channel::connect(&path.to_string_lossy(), 1024).unwrap();
        let conn = acker.join().unwrap();
        let t0 = Instant::now();
        let r =
            crate::goplugin::spinwait::block_on(c.call(7, CHECK, &[], Duration::from_millis(200)));
        assert_eq!(code(r).0, RpcStatusCode::DEADLINE_EXCEEDED);
        assert!(t0.elapsed() >= Duration::from_millis(200));
        let pending = c.call(7, CHECK, &[], T);
        drop(conn);
        let t0 = Instant::now();
        let (code_, msg) = code(crate::goplugin::spinwait::block_on(pending));
        assert_eq!(code_, RpcStatusCode::UNAVAILABLE);
        assert!(msg.contains("silent.sock"), "{msg}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "at once, not at the deadline"
        );
        assert_eq!(code(check(&c, 7, &[])).0, RpcStatusCode::UNAVAILABLE);
    }

    /// Stopping a server ends its connections and removes its socket.
    #[test]
    fn a_stopped_server_ends_its_connections_and_removes_its_socket() {
        let (_dir, server) = serving();
        let path = server.path().to_path_buf();
        let c = Channel::connect(&path.to_string_lossy(), 1024).unwrap();
        assert!(serving_answer(check(&c, 7, &[])));
        assert!(c.is_open());
        server.stop();
        assert!(!path.exists());
        assert_eq!(code(check(&c, 7, &[])).0, RpcStatusCode::UNAVAILABLE);
        assert!(!c.is_open());
    }
}
