//! The only place that sets grpcio up: the process-wide environment, channels
//! and servers with a message bound (16 MiB by default, where go-plugin
//! allows 2 GiB), the named timeouts, and the helper that runs blocking
//! handler code off grpcio's completion-queue threads (in the caller's lane,
//! else the process's).
//!
//! Invariants: every channel and server is built here (so limits and
//! `SO_REUSEPORT` are set once); no handler blocks a completion-queue thread on
//! plugin code: [`respond_blocking`] moves that work to a [`crate::goplugin::pool`] thread,
//! and always within a lane's bound, never one thread per call a peer sends.
//! What [`respond`] answers on the completion-queue thread is at hand by
//! contract (a health status, a value a source has in memory:
//! `DataSource::observe_now`), never I/O, a call or a wait.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::goplugin::call::{Ctx, Sink};
use grpcio::{
    Channel, ChannelBuilder, EnvBuilder, Environment, RpcStatus, RpcStatusCode, ServerBuilder,
};

use crate::goplugin::handshake::Network;

/// Largest message a channel or server takes by default, either way: 16 MiB.
/// OCR reports and configs are kilobytes; go-plugin's `math.MaxInt32` would
/// let one reply make a process hold 2 GiB. A bigger message fails with
/// RESOURCE_EXHAUSTED, which the host names with plugin and method.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

/// The environment variable that sets a plugin process's bound (the node
/// sets it from the job's `rpc.max_message_bytes`).
pub const MAX_MESSAGE_VAR: &str = "LOOPP_MAX_MESSAGE_BYTES";

/// The least bound accepted: below it, not even a handshake's calls fit.
pub const MIN_MAX_MESSAGE: usize = 4 << 10;

/// This process's default bound: `LOOPP_MAX_MESSAGE_BYTES` when it is a
/// number within `MIN_MAX_MESSAGE..=i32::MAX` (else a warning), else
/// [`DEFAULT_MAX_MESSAGE`].
pub fn max_message() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| match std::env::var(MAX_MESSAGE_VAR) {
        Err(_) => DEFAULT_MAX_MESSAGE,
        Ok(v) => match parse_max_message(&v) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("{e}; using {DEFAULT_MAX_MESSAGE}");
                DEFAULT_MAX_MESSAGE
            }
        },
    })
}

/// A message bound from text, or what is wrong with it.
pub fn parse_max_message(v: &str) -> Result<usize, String> {
    match v.trim().parse::<usize>() {
        Ok(n) if (MIN_MAX_MESSAGE..=i32::MAX as usize).contains(&n) => Ok(n),
        _ => Err(format!(
            "{MAX_MESSAGE_VAR}={v:?}: give a byte count from {MIN_MAX_MESSAGE} to {}",
            i32::MAX
        )),
    }
}

/// Deadline of the calls that open the broker and stdio streams. They live as
/// long as the plugin and are cancelled when it is killed; the deadline is only
/// there so that no call is without one.
pub const STREAM_DEADLINE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Completion-queue threads when `LOOPP_GRPC_THREADS` is not set. One is the
/// fastest for a plugin's traffic (measured: p50 of a health check ~30% lower
/// than with two, as threads on few cores stop handing work to each other);
/// handlers never block it (see [`respond_blocking`]).
pub const DEFAULT_CQ_THREADS: usize = 1;

static ENV: OnceLock<Arc<Environment>> = OnceLock::new();

/// The process-wide grpcio environment, with `LOOPP_GRPC_THREADS`
/// completion-queue threads (default [`DEFAULT_CQ_THREADS`], at most 64).
pub fn env() -> Arc<Environment> {
    ENV.get_or_init(|| {
        let threads = std::env::var("LOOPP_GRPC_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| (1..=64).contains(n))
            .unwrap_or(DEFAULT_CQ_THREADS);
        Arc::new(
            EnvBuilder::new()
                .cq_count(threads)
                .name_prefix("grpc")
                .build(),
        )
    })
    .clone()
}

/// Starts creating the environment (gRPC init and its threads, about a
/// millisecond) on a thread, so it overlaps with other start-up work; once
/// per process (a host calls it at every plugin start).
///
/// Making a throw-away channel there too, to start gRPC's event engine
/// early, made starts slower (handshake p50 2.36/2.54 -> 2.57/2.94 ms,
/// 60 starts each, interleaved): it is left to the first real channel.
pub fn prewarm() {
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if STARTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("grpc-init".into())
        .spawn(|| drop(env()));
}

fn channel_builder(max_message: usize) -> ChannelBuilder {
    let max = max_message.min(i32::MAX as usize) as i32;
    ChannelBuilder::new(env())
        .max_receive_message_len(max)
        .max_send_message_len(max)
        // Channelz keeps a node and a trace buffer for every channel,
        // subchannel, server and socket, for a channelz service that loopp
        // does not serve. Off, a connection costs both ends 54 instead of
        // 57 KiB, and 100 LOOPP feeds 4-5 MB less in the node and 2-4 MB
        // less in the median plugin (scale benchmark, runs interleaved).
        .raw_cfg_int(std::ffi::CString::from(c"grpc.enable_channelz"), 0)
        // gRPC's retry filter sits in every client call, keeping each sent
        // message for a retry, though loopp configures no retry policy: it
        // only ever retried a call that never reached the wire (a
        // connection lost meanwhile), which without it fails UNAVAILABLE
        // at once, as any call to a plugin that went away does (the
        // supervisor restarts it; a feed's round fails and the next one
        // runs). Off, a LOOPP round costs 8-17% less CPU (300 feeds, three
        // interleaved pairs: 3.36/3.34/3.37 -> 3.10/3.08/2.79 ms).
        .enable_retry(false)
        // Every target is a plugin or a brokered object on a unix socket or
        // loopback: never through a proxy. gRPC otherwise takes one from
        // `grpc_proxy`, `https_proxy` or `http_proxy` for TCP targets not
        // listed in `no_proxy`, so on a host with a proxy set (common behind
        // a corporate gateway) a LOOPP on TCP was unreachable.
        .raw_cfg_int(std::ffi::CString::from(c"grpc.enable_http_proxy"), 0)
}

/// The grpc target for a handshake address.
pub fn target(network: Network, address: &str) -> String {
    match network {
        Network::Unix => format!("unix:{address}"),
        Network::Tcp => address.to_string(),
    }
}

/// A channel to a plugin (or brokered) server, with this process's message
/// bound ([`max_message`]). Connects lazily; the first call fails fast with
/// UNAVAILABLE when nothing listens there.
pub fn connect(network: Network, address: &str) -> Channel {
    connect_bounded(network, address, max_message())
}

/// [`connect`], with messages of at most `max_message` bytes either way.
pub fn connect_bounded(network: Network, address: &str, max_message: usize) -> Channel {
    channel_builder(max_message)
        // Each plugin gets its own connection even if addresses repeat over time.
        .use_local_subchannel_pool(true)
        .connect(&target(network, address))
}

/// A gRPC client made at its first gRPC call: between loopp processes that
/// frame, a connection's calls may all go framed, and making a channel
/// starts gRPC's core in the process (its threads and its timers, which
/// wake several times a second for as long as the process lives). Cheap
/// to clone; clones share the one client, made once.
#[derive(Clone)]
pub struct LazyClient(Arc<Lazy>);

struct Lazy {
    made: OnceLock<(Channel, grpcio::Client)>,
    make: Option<Box<dyn Fn() -> Channel + Send + Sync>>,
}

impl LazyClient {
    /// A client on `channel`, made now.
    pub fn of(channel: Channel) -> LazyClient {
        let made = OnceLock::new();
        let _ = made.set((channel.clone(), grpcio::Client::new(channel)));
        LazyClient(Arc::new(Lazy { made, make: None }))
    }

    /// A client whose channel `make` makes at the first call.
    pub fn later(make: impl Fn() -> Channel + Send + Sync + 'static) -> LazyClient {
        LazyClient(Arc::new(Lazy {
            made: OnceLock::new(),
            make: Some(Box::new(make)),
        }))
    }

    /// A client of [`connect_bounded`] to `address`, made at the first call.
    pub fn to(network: Network, address: &str, max_message: usize) -> LazyClient {
        let address = address.to_string();
        LazyClient::later(move || connect_bounded(network, &address, max_message))
    }

    fn made(&self) -> &(Channel, grpcio::Client) {
        self.0.made.get_or_init(|| {
            let channel = (self.0.make.as_ref().expect("made at once, or told how"))();
            (channel.clone(), grpcio::Client::new(channel))
        })
    }

    /// The client, made now if it was not.
    pub fn get(&self) -> &grpcio::Client {
        &self.made().1
    }

    /// Its channel, made now if it was not.
    pub fn channel(&self) -> &Channel {
        &self.made().0
    }
}

/// The environment variable that, set to `0`, makes [`connect_now`] a
/// [`connect_bounded`].
pub const DIRECT_VAR: &str = "LOOPP_DIRECT_CHANNELS";

/// A host's channel to its plugin, which carries calls for as long as the
/// plugin lives: connected now and handed to gRPC as a direct channel,
/// which sends every call straight to that connection's transport. A
/// [`connect_bounded`] channel runs each call through gRPC's client
/// channel first (a load-balancing pick, a subchannel call and its
/// filters), and waits for the server's SETTINGS before a first call. Measured (plugin benchmark, runs alternated): CPU of a
/// health RPC, host and plugin, 122-141 -> 111-119 µs; spawn to ready less
/// the handshake 0.54-1.02 -> 0.36-0.56 ms. Routed channels made so too
/// gained a LOOPP round at 1,000 feeds little (1.08 -> 1.05 ms, five
/// interleaved pairs, within the noise).
///
/// What a direct channel gives up: it never reconnects, and it holds its
/// connection until dropped. Both fit a host's channel, which ends with
/// its plugin (a plugin that restarts gets a new client and channel). A
/// channel cached for the next dial of an address (routed brokering) does
/// not fit: after its peer went, it would keep a dead connection, so those
/// stay [`connect_bounded`]. When connecting fails now (nothing listens,
/// a full backlog, no descriptor left), or with `LOOPP_DIRECT_CHANNELS=0`,
/// this is a [`connect_bounded`] channel too, whose calls fail UNAVAILABLE
/// as before.
pub fn connect_now(network: Network, address: &str, max_message: usize) -> Channel {
    static ON: OnceLock<bool> = OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var_os(DIRECT_VAR).is_none_or(|v| v != "0"));
    on.then(|| connect_direct(network, address, max_message))
        .flatten()
        .unwrap_or_else(|| connect_bounded(network, address, max_message))
}

fn connect_direct(network: Network, address: &str, max_message: usize) -> Option<Channel> {
    use std::os::fd::IntoRawFd;
    let (fd, authority) = match network {
        // What gRPC names a unix socket's authority.
        Network::Unix => (unix_connect_now(address)?, "localhost".to_string()),
        Network::Tcp => {
            let addr: std::net::SocketAddr = address.parse().ok()?;
            let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            // As gRPC sets on the connections it makes.
            s.set_nodelay(true).ok()?;
            (s.into(), address.to_string())
        }
    };
    let builder = channel_builder(max_message).default_authority(authority);
    // SAFETY: `fd` is a connected socket of ours, handed over to gRPC,
    // which makes it non-blocking and closes it with the channel.
    Some(unsafe { builder.connect_from_fd(&target(network, address), fd.into_raw_fd()) })
}

/// A connection to the unix socket at `path`, made without waiting: None
/// when nobody listens there, or when its backlog is full (a blocking
/// connect would wait for the listener, without a bound).
fn unix_connect_now(path: &str) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let bytes = std::path::Path::new(path).as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() {
        return None;
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor, ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: addr is a valid sockaddr_un of at least `len` bytes. A unix
    // stream connect does not go in progress: it is made or refused
    // (EAGAIN when the backlog is full).
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    (r == 0).then_some(fd)
}

/// Calls a server has asked gRPC for ahead, per completion queue. grpcio
/// asks for 1,024 when a server starts, each with its own call context;
/// loopp starts a server per brokered object (a feed makes about ten), so
/// that reserve was most of a feed's memory: with 8, the scale benchmark
/// at 100 LOOPP feeds went from 353 to 65 MB in the node, 231 to 50 MB in
/// the median plugin and 88 to 16 MB in the devchain relayer, with no
/// slower rounds (4 and 32 measured alike). More concurrent calls than
/// this are not refused: each call asks for the next as it arrives, and
/// gRPC holds the rest until then.
pub const REQUEST_SLOTS: usize = 8;

/// A server builder with this process's message bound and without
/// `SO_REUSEPORT` (with it, two plugins could both "bind" the same TCP port).
pub fn server_builder() -> ServerBuilder {
    server_builder_bounded(max_message())
}

/// [`server_builder`], with messages of at most `max_message` bytes.
pub fn server_builder_bounded(max_message: usize) -> ServerBuilder {
    let args = channel_builder(max_message).reuse_port(false).build_args();
    ServerBuilder::new(env())
        .channel_args(args)
        .requests_slot_per_cq(REQUEST_SLOTS)
}

/// The environment variable that bounds the calls a process serves at
/// once for all its servers' callers together, blocking ones on pool
/// threads and answers given as futures ([`respond_async`]) alike
/// (default [`DEFAULT_CONCURRENT_CALLS`]).
pub const CONCURRENT_CALLS_VAR: &str = "LOOPP_MAX_CONCURRENT_CALLS";

/// The environment variable that bounds the blocking calls waiting for a
/// place (default [`DEFAULT_QUEUED_CALLS`]); beyond, RESOURCE_EXHAUSTED.
pub const QUEUED_CALLS_VAR: &str = "LOOPP_MAX_QUEUED_CALLS";

/// Blocking calls a process runs at once when [`CONCURRENT_CALLS_VAR`] is
/// not set: each holds a pool thread. The node sends its median plugin at
/// most `feed_threads` x oracles (256 by default) at once.
pub const DEFAULT_CONCURRENT_CALLS: usize = 1024;

/// Blocking calls waiting when [`QUEUED_CALLS_VAR`] is not set.
pub const DEFAULT_QUEUED_CALLS: usize = 4096;

/// A bound from the environment: `var` when it is a number in `range`
/// (else a warning), else `default`.
pub(crate) fn bound_from_env(
    var: &str,
    range: std::ops::RangeInclusive<usize>,
    default: usize,
) -> usize {
    match std::env::var(var) {
        Err(_) => default,
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if range.contains(&n) => n,
            _ => {
                log::warn!(
                    "{var}={v:?}: give a number from {} to {}; using {default}",
                    range.start(),
                    range.end()
                );
                default
            }
        },
    }
}

/// The lane of every blocking call this process serves outside a lane of
/// its own: in a plugin, all of them. So a host (or anything that reaches
/// the socket) that sends more slow calls than this at once gets
/// RESOURCE_EXHAUSTED, instead of a thread per call. Named `process` in
/// the `loopp_served_calls_*` metrics.
pub fn process_lane() -> &'static crate::goplugin::pool::Lane {
    static LANE: OnceLock<crate::goplugin::pool::Lane> = OnceLock::new();
    LANE.get_or_init(|| {
        crate::goplugin::pool::Lane::with_remedy(
            "this process's served calls",
            "process",
            &format!("{CONCURRENT_CALLS_VAR} / {QUEUED_CALLS_VAR}"),
            bound_from_env(CONCURRENT_CALLS_VAR, 1..=65_536, DEFAULT_CONCURRENT_CALLS),
            bound_from_env(QUEUED_CALLS_VAR, 0..=1 << 20, DEFAULT_QUEUED_CALLS),
        )
    })
}

/// Runs `f` on a [`crate::goplugin::pool`] thread and answers the call with its result, so plugin
/// code that blocks (on I/O, on another RPC, on a broker dial) never holds a
/// completion-queue thread. In a service created inside a
/// [`crate::goplugin::pool::Lane`] (what the node serves a plugin), `f`
/// runs in that lane, else in the [`process_lane`]; a call over the lane's
/// bound is answered RESOURCE_EXHAUSTED at once.
pub fn respond_blocking<T, F>(ctx: &Ctx, sink: Sink<T>, f: F)
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, RpcStatus> + Send + 'static,
{
    let lane = crate::goplugin::pool::Lane::ambient().unwrap_or_else(|| process_lane().clone());
    let admitted = match lane.admit() {
        Err(busy) => {
            let method = ctx.method();
            let status = status(
                RpcStatusCode::RESOURCE_EXHAUSTED,
                format!("{method}: {busy}"),
            );
            return respond(ctx, sink, Err(status));
        }
        Ok(admitted) => admitted,
    };
    // The reply is sent from the completion-queue thread: the pool thread
    // hands its result over and is free at once, instead of waiting for
    // the send to complete (a wake-up of each thread per call: about a
    // tenth of a LOOPP round's context switches).
    let (tx, rx) = futures_channel::oneshot::channel::<Result<T, RpcStatus>>();
    let method = ctx.method();
    let gone =
        format!("{method}: the handler ended without an answer (it panicked or could not start)");
    respond_when(ctx, sink, async move {
        rx.await
            .unwrap_or_else(|_| Err(status(RpcStatusCode::INTERNAL, gone)))
    });
    let job = move || {
        let _ = tx.send(f());
    };
    admitted.start(job);
}

/// Answers the call with what `outcome` gives when it is ready, driven
/// where the transport's replies arrive ([`Ctx::spawn`]), and records it
/// in the server metrics; used as is by a handler whose answer waits on
/// something else than work (no place in a lane held).
pub fn respond_when<T, Fut>(ctx: &Ctx, sink: Sink<T>, outcome: Fut)
where
    T: Send + 'static,
    Fut: std::future::Future<Output = Result<T, RpcStatus>> + Send + 'static,
{
    let method = ctx.method().into_owned();
    let call = crate::goplugin::metrics::server_call();
    ctx.spawn(async move {
        let outcome = outcome.await;
        let code = code_name(&outcome);
        let sent = match outcome {
            Ok(resp) => sink.success(resp).await,
            Err(status) => sink.fail(status).await,
        };
        call.finish(code);
        if let Err(e) = sent {
            log::debug!(
                "{method}: reply not delivered: {}",
                crate::goplugin::error::rpc_status_text(&e)
            );
        }
    });
}

/// A running place in the caller's lane (the ambient one, else the
/// process's) for an answer that needs no thread, if one is free now
/// ([`crate::goplugin::pool::Lane::try_hold`]): give it to [`respond_async`].
/// None: the lane is at its bound; answer with [`respond_blocking`],
/// which queues or refuses the call.
pub fn async_place() -> Option<crate::goplugin::pool::Held> {
    crate::goplugin::pool::Lane::ambient()
        .unwrap_or_else(|| process_lane().clone())
        .try_hold()
}

/// Answers with what `work` gives, run on the completion-queue thread with
/// no pool thread; `place` ([`async_place`]) is held until it ends, so
/// such calls count against the lane's bound like blocking ones. `work`
/// must never block the thread that polls it: its waits are calls sent
/// without waiting (`<method>_async`) and values at hand. A handler that
/// calls other services this way costs no thread hand-off at all.
pub fn respond_async<T, Fut>(
    ctx: &Ctx,
    sink: Sink<T>,
    place: crate::goplugin::pool::Held,
    work: Fut,
) where
    T: Send + 'static,
    Fut: std::future::Future<Output = Result<T, RpcStatus>> + Send + 'static,
{
    respond_when(ctx, sink, async move {
        let outcome = work.await;
        drop(place);
        outcome
    });
}

/// Answers with `f` at once on the completion-queue thread when `at_hand`
/// (the implementation answers from memory, by its own contract), else on
/// a pool thread ([`respond_blocking`]).
pub fn respond_at_hand_or_blocking<T, F>(ctx: &Ctx, sink: Sink<T>, at_hand: bool, f: F)
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, RpcStatus> + Send + 'static,
{
    if at_hand {
        respond(ctx, sink, f())
    } else {
        respond_blocking(ctx, sink, f)
    }
}

/// Answers a call at once on the completion-queue thread (for cheap handlers).
pub fn respond<T: Send + 'static>(ctx: &Ctx, sink: Sink<T>, r: Result<T, RpcStatus>) {
    let call = crate::goplugin::metrics::server_call();
    let code = code_name(&r);
    let f = match r {
        Ok(resp) => sink.success(resp),
        Err(status) => sink.fail(status),
    };
    finish(ctx, f, call, code);
}

/// Records an answer in the server metrics once it is sent: one copy for
/// every message type.
#[inline(never)]
fn finish(
    ctx: &Ctx,
    f: crate::goplugin::call::Sent,
    call: crate::goplugin::metrics::ServerCall,
    code: &'static str,
) {
    match f {
        // Framed: written already.
        crate::goplugin::call::Sent::Done(_) => call.finish(code),
        f => ctx.spawn(async move {
            let _ = f.await;
            call.finish(code);
        }),
    }
}

/// `OK` or the status code's name, for metrics.
fn code_name<T>(r: &Result<T, RpcStatus>) -> &'static str {
    match r {
        Ok(_) => "OK",
        Err(s) => crate::goplugin::error::status_code_name(s.code()),
    }
}

/// Stops a server: cancels its calls (long streams included), then waits up
/// to `grace` for the shutdown to complete.
pub fn shutdown_server(server: grpcio::Server, grace: std::time::Duration) {
    shutdown_servers(vec![server], std::time::Instant::now() + grace);
}

/// Stops servers together: cancels every call of each, then waits until
/// `deadline` at most for all of them. A call whose handler still runs (say,
/// blocked on a call of its own) keeps its server's shutdown pending; doing
/// them together bounds the wait once, not once per server. The servers are
/// dropped on the thread that awaits their shutdown, never here: grpcio's
/// `Server` blocks in `drop` until its shutdown completes, which would
/// outlast `deadline`.
pub fn shutdown_servers(mut servers: Vec<grpcio::Server>, deadline: std::time::Instant) {
    if servers.is_empty() {
        return;
    }
    // All of it on the thread: cancelling can wait on the completion queue
    // too, and the caller's bound must hold whatever grpcio does.
    let (tx, rx) = crossbeam_channel::bounded(1);
    let spawned = std::thread::Builder::new()
        .name("server-stop".into())
        .spawn(move || {
            let stopping: Vec<_> = servers
                .iter_mut()
                .map(|s| {
                    s.cancel_all_calls();
                    s.shutdown()
                })
                .collect();
            let _ = futures_executor::block_on(futures_util::future::join_all(stopping));
            drop(servers);
            let _ = tx.send(());
        });
    match spawned {
        Ok(_) => {
            let _ = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
        }
        Err(e) => log::warn!("cannot start a thread to stop gRPC servers: {e}"),
    }
}

/// An RpcStatus with a code and message.
pub fn status(code: RpcStatusCode, message: impl Into<String>) -> RpcStatus {
    RpcStatus::with_message(code, message.into())
}

/// Runs one client call to `plugin`'s `method`, records it in the
/// `loopp_rpc_*` metrics and turns a failure into the error text that names
/// the plugin, the method and the status.
pub fn observed<T>(
    plugin: &str,
    method: &'static str,
    f: impl FnOnce() -> grpcio::Result<T>,
) -> std::result::Result<T, String> {
    let t0 = std::time::Instant::now();
    let r = f();
    crate::goplugin::metrics::client_observe(
        plugin,
        method,
        crate::goplugin::metrics::code_of(&r),
        t0.elapsed(),
    );
    r.map_err(|e| crate::goplugin::error::Error::rpc(plugin, method, &e).to_string())
}

/// A reply on its way, as [`observed_async`] gives it.
pub type Reply<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<T, String>> + Send>>;

/// A [`Reply`] that is at hand already.
pub fn ready<T: Send + 'static>(r: std::result::Result<T, String>) -> Reply<T> {
    Box::pin(std::future::ready(r))
}

/// What `f` gives, as a [`Reply`]: `f` runs on a pool thread at once, so a
/// future that needs something only a blocking call gives (an
/// implementation that cannot answer otherwise) still never blocks the
/// thread polling it. It costs what a blocking handler costs: a hand-off
/// to a pool thread and back. The thread is the pool's, outside any lane:
/// the call it serves holds the lane's place ([`respond_async`]), and
/// takes a few such steps at most (the median plugin: one per source).
pub fn blocking<T, F>(f: F) -> Reply<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::result::Result<T, String> + Send + 'static,
{
    let (tx, rx) = futures_channel::oneshot::channel();
    let started = crate::goplugin::pool::spawn(move || {
        let _ = tx.send(f());
    });
    Box::pin(async move {
        if let Err(e) = started {
            return Err(format!("cannot start a thread: {e}"));
        }
        rx.await
            .unwrap_or_else(|_| Err("the blocking call ended without an answer".into()))
    })
}

/// `obj`'s call as a [`Reply`]: what `send` sends without waiting (its
/// `<call>_async`), else `call` on a pool thread ([`blocking`]).
pub fn sent_or_blocking<S, T>(
    obj: &Arc<S>,
    send: impl FnOnce(&S) -> Option<Reply<T>>,
    call: impl FnOnce(&S) -> std::result::Result<T, String> + Send + 'static,
) -> Reply<T>
where
    S: ?Sized + Send + Sync + 'static,
    T: Send + 'static,
{
    send(obj).unwrap_or_else(|| {
        let obj = obj.clone();
        blocking(move || call(&obj))
    })
}

/// Polls `f` on this thread until it is done, parking between wake-ups
/// (no spinning: a round's wait is throughput work, whose CPU counts).
/// Unlike `futures_executor::block_on`, `f` may make blocking calls
/// (grpcio's blocking methods run a `block_on` of their own, which
/// refuses to run inside another).
pub fn wait<F: std::future::Future>(f: F) -> F::Output {
    crate::goplugin::spinwait::PARK.block_on(f)
}

/// Waits for `replies` together until `until` at most: each one's result,
/// in order, None for those not done by then. A future that never blocks
/// the thread polling it ([`crate::goplugin::timer`] wakes it at `until`);
/// replies are polled as their answers come, each once more per wake-up:
/// for a handful of calls sent together (one per oracle), not thousands.
pub fn join_until<T>(replies: Vec<Reply<T>>, until: std::time::Instant) -> JoinUntil<T> {
    let mut out = Vec::new();
    out.resize_with(replies.len(), || None);
    JoinUntil {
        waiting: replies.into_iter().enumerate().collect(),
        out,
        deadline: crate::goplugin::timer::at(until),
    }
}

/// What [`join_until`] gives.
pub struct JoinUntil<T> {
    waiting: Vec<(usize, Reply<T>)>,
    out: Vec<Option<std::result::Result<T, String>>>,
    deadline: crate::goplugin::timer::Deadline,
}

// Results are moved, never pinned.
impl<T> Unpin for JoinUntil<T> {}

impl<T> std::future::Future for JoinUntil<T> {
    type Output = Vec<Option<std::result::Result<T, String>>>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        let out = &mut this.out;
        this.waiting
            .retain_mut(|(i, reply)| match reply.as_mut().poll(cx) {
                std::task::Poll::Ready(r) => {
                    out[*i] = Some(r);
                    false
                }
                std::task::Poll::Pending => true,
            });
        if this.waiting.is_empty() || std::pin::Pin::new(&mut this.deadline).poll(cx).is_ready() {
            // Replies not done are dropped: a gRPC call is cancelled.
            this.waiting.clear();
            return std::task::Poll::Ready(std::mem::take(&mut this.out));
        }
        std::task::Poll::Pending
    }
}

/// Where futures that wait on a channel's calls are best polled: its
/// completion-queue thread, where their replies arrive, so a reply wakes
/// no other thread ([`Spawner::spawn`]). Generated clients give theirs
/// (`spawner()`).
#[derive(Clone)]
pub struct Spawner(Option<grpcio::Client>);

impl Spawner {
    /// The spawner of `client`'s channel.
    pub fn new(client: grpcio::Client) -> Spawner {
        Spawner(Some(client))
    }

    /// The spawner of framed connections: a future is polled by whichever
    /// thread wakes it ([`crate::goplugin::framed::spawn`]).
    pub fn framed() -> Spawner {
        Spawner(None)
    }

    /// Polls `f` on this thread until it first waits, then on the
    /// channel's completion-queue thread (framed: on the thread that
    /// wakes it) whenever it is woken. `f` must
    /// never block: its waits are calls sent without waiting, values at
    /// hand, [`blocking`] steps and [`crate::goplugin::timer`] deadlines.
    /// A panic in `f` is caught (it would end the completion-queue thread)
    /// and logged; `f` is dropped then.
    pub fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        use futures_util::FutureExt;
        let Some(client) = &self.0 else {
            return crate::goplugin::framed::spawn(f);
        };
        client.spawn(std::panic::AssertUnwindSafe(f).catch_unwind().map(|r| {
            if let Err(payload) = r {
                let what = crate::goplugin::error::panic_message(&*payload);
                log::error!("a task on the completion queue panicked ({what}); it is dropped");
            }
        }));
    }
}

/// [`observed`] for a call sent without waiting (a generated client's
/// `<method>_async`): `start` sends it, and the future returned gives the
/// reply and records it when it comes. Several such calls are waited for
/// together by one thread.
pub fn observed_async<T: Send + Unpin + 'static>(
    plugin: &str,
    method: &'static str,
    start: impl FnOnce() -> grpcio::Result<crate::goplugin::unary::Unary<T>>,
) -> Reply<T> {
    let t0 = std::time::Instant::now();
    let plugin = plugin.to_string();
    let started = start();
    Box::pin(async move {
        let r = match started {
            Ok(reply) => reply.await,
            Err(e) => Err(e),
        };
        crate::goplugin::metrics::client_observe(
            &plugin,
            method,
            crate::goplugin::metrics::code_of(&r),
            t0.elapsed(),
        );
        r.map_err(|e| crate::goplugin::error::Error::rpc(&plugin, method, &e).to_string())
    })
}

/// Answers a call with `status` before its handler runs (a request that is
/// not a valid message, a routed object that is gone), and records it in
/// the server metrics.
pub fn fail_call<S: FailSink>(ctx: &grpcio::RpcContext, sink: S, status: grpcio::RpcStatus) {
    let code = crate::goplugin::error::status_code_name(status.code());
    let call = crate::goplugin::metrics::server_call();
    let f = sink.fail_with(status);
    ctx.spawn(async move {
        let _ = f.await;
        call.finish(code);
    });
}

/// [`fail_call`] for a unary call, whichever transport carried it.
pub fn fail_unary<T: Send + 'static>(ctx: &Ctx, sink: Sink<T>, status: grpcio::RpcStatus) {
    respond(ctx, sink, Err(status));
}

/// Answers UNIMPLEMENTED: a method the implementation does not serve (the
/// generated traits' default).
pub fn unimplemented<T: Send + 'static>(ctx: &Ctx, sink: Sink<T>) {
    let method = ctx.method().into_owned();
    respond(
        ctx,
        sink,
        Err(status(
            RpcStatusCode::UNIMPLEMENTED,
            format!("{method}: not implemented here"),
        )),
    );
}

/// The sinks of the four kinds of call, failed alike by [`fail_call`].
pub trait FailSink {
    /// Sends `status` as the call's answer.
    fn fail_with(
        self,
        status: grpcio::RpcStatus,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = grpcio::Result<()>> + Send>>;
}

macro_rules! fail_sink {
    ($($sink:ident),*) => {$(
        impl<T: 'static> FailSink for grpcio::$sink<T> {
            fn fail_with(
                self,
                status: grpcio::RpcStatus,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = grpcio::Result<()>> + Send>> {
                Box::pin(self.fail(status))
            }
        }
    )*};
}
fail_sink!(
    UnarySink,
    ServerStreamingSink,
    ClientStreamingSink,
    DuplexSink
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Replies are waited for together until the deadline: those done by
    /// then give their results, in order, the rest None; a blocking job
    /// runs on a pool thread, not on the waiting one.
    /// `wait` runs a future that makes blocking calls of its own (each a
    /// `block_on`, as grpcio's blocking methods are) between waits that
    /// other threads end; `futures_executor::block_on` panics there.
    #[test]
    fn wait_runs_a_future_that_makes_blocking_calls() {
        let (tx, rx) = futures_channel::oneshot::channel::<u8>();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let _ = tx.send(7);
        });
        let got = wait(async move {
            let inner = futures_executor::block_on(async { 1u8 });
            let later = blocking(|| {
                std::thread::sleep(Duration::from_millis(20));
                Ok(2u8)
            });
            let a = rx.await.unwrap();
            let again = futures_executor::block_on(async { 1u8 });
            inner + a + later.await.unwrap() + again
        });
        assert_eq!(got, 11);
        sender.join().unwrap();
    }

    /// `connect_now` connects at once (the listener has the connection
    /// before any call), and when it cannot (nobody listens, the backlog
    /// is full) returns at once with a channel whose calls fail, instead
    /// of waiting for the listener.
    #[test]
    fn connect_now_connects_at_once_or_falls_back_without_waiting() {
        let dir = crate::testutil::fresh_dir("connect-now");
        struct Gone(std::path::PathBuf);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _gone = Gone(dir.clone());
        let path = dir.join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let at = path.to_string_lossy().to_string();

        let channel = connect_now(Network::Unix, &at, DEFAULT_MAX_MESSAGE);
        let (conn, _) = listener.accept().expect("connected before any call");
        drop(conn);
        drop(channel);

        // Nobody there: a lazy channel, whose call fails UNAVAILABLE.
        let t0 = Instant::now();
        let nobody = dir.join("none.sock").to_string_lossy().to_string();
        let channel = connect_now(Network::Unix, &nobody, DEFAULT_MAX_MESSAGE);
        let health = crate::proto::health_grpc::HealthClient::new(channel);
        let err = health
            .check(&Default::default(), Duration::from_secs(2))
            .unwrap_err();
        assert!(
            matches!(&err, grpcio::Error::RpcFailure(s) if s.code() == RpcStatusCode::UNAVAILABLE),
            "{err:?}"
        );

        // A listener that accepts nothing, its backlog full: a blocking
        // connect would wait for it without end.
        let mut queued = Vec::new();
        while let Some(fd) = unix_connect_now(&at) {
            queued.push(fd);
            assert!(queued.len() < 100_000, "the backlog never filled");
        }
        let _channel = connect_now(Network::Unix, &at, DEFAULT_MAX_MESSAGE);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "connect_now waited {:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn replies_are_waited_for_until_the_deadline_and_blocking_work_runs_on_the_pool() {
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let t0 = Instant::now();
        let got = futures_executor::block_on(join_until(
            vec![
                ready(Ok(1)),
                blocking(|| match std::thread::current().name() {
                    Some("loopp-pool") => Ok(11),
                    _ => Ok(12),
                }),
                blocking(move || {
                    let _ = rx.recv_timeout(Duration::from_secs(5));
                    Ok(3)
                }),
                ready(Err("no".to_string())),
            ],
            Instant::now() + Duration::from_millis(300),
        ));
        assert!(t0.elapsed() >= Duration::from_millis(300));
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "not past the deadline"
        );
        assert_eq!(
            got,
            vec![Some(Ok(1)), Some(Ok(11)), None, Some(Err("no".into()))]
        );
        tx.send(()).unwrap();
    }
}
