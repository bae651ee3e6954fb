//! The host side: launch a go-plugin gRPC plugin, connect, ping, kill.
//!
//! Lifecycle of a [`Client`] (prose in `docs/PROTOCOL.md`):
//! 1. spawn the command with the cookie, port range and protocol versions;
//! 2. read the first stdout line within `start_timeout` and parse it strictly;
//! 3. connect and ping (`grpc.health.v1.Health/Check{"plugin"}`) with a deadline:
//!    framed on the plugin's own socket when a loopp plugin frames its own
//!    services (`Handshake::framed_self`: every later call of the host to
//!    them goes there too, and gRPC is not started for it), else over gRPC;
//! 4. open the broker stream and the stdio stream (Unimplemented: no stdio);
//!    framed: watch the plugin's announcements instead (`loopp.Broker`),
//!    and no stdio stream (the plugin writes to its stdout and stderr);
//! 5. [`Client::kill`]: close the broker, call Shutdown, wait `shutdown_grace`,
//!    SIGKILL, reap, remove the socket the plugin may have left.
//!
//! Invariant: every call carries a deadline (`rpc_timeout`, or
//! [`crate::goplugin::rpc::STREAM_DEADLINE`] for the two lifelong streams); a failed start
//! leaves no process and no socket behind.

mod link;
pub mod process;
pub mod program;
mod spawn;
mod stdio;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use grpcio::Channel;

use crate::goplugin::broker::Broker;
use crate::goplugin::error::{Error, Result};
use crate::goplugin::handshake::{Cookie, Handshake, Network};
use crate::goplugin::route::Conn;
use crate::goplugin::rpc;
use crate::goplugin::sockdir::{self, SocketDir};
use crate::proto::grpc_broker_grpc::GRPCBrokerClient;
use crate::proto::grpc_controller::Empty;
use crate::proto::grpc_controller_grpc::GRPCControllerClient;
use crate::proto::health::{health_check_response::ServingStatus, HealthCheckRequest};
use crate::proto::health_grpc::HealthClient;
use crate::proto::loopp_broker_grpc::BrokerClient;
pub use link::Link;
pub use process::Limit;
use process::PinError;
use process::{FirstLine, Process, Spawn};

/// go-plugin's default start timeout.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Default deadline of the host's unary calls (as the Go LOOP host).
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a plugin has to exit after Shutdown before SIGKILL (as go-plugin).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for a failing plugin's last stderr lines.
const STDERR_SETTLE: Duration = Duration::from_millis(300);

/// How to launch and talk to one plugin.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Plugin name for logs and errors, e.g. `median`.
    pub name: String,
    /// The executable.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables for the plugin.
    pub env: Vec<(OsString, OsString)>,
    /// The magic cookie for this kind of plugin.
    pub cookie: Cookie,
    /// App protocol versions the host speaks (LOOP: `[0]`).
    pub versions: Vec<u32>,
    /// Ask for TCP on loopback instead of a unix socket (loopp plugins only).
    pub network: Network,
    /// `PLUGIN_MIN_PORT..=PLUGIN_MAX_PORT`.
    pub port_range: (u16, u16),
    /// Time from spawn to the handshake line.
    pub start_timeout: Duration,
    /// Deadline of each unary call (ping, Shutdown, service calls).
    pub rpc_timeout: Duration,
    /// Time between Shutdown and SIGKILL.
    pub shutdown_grace: Duration,
    /// Where sockets go (the host's broker sockets, and the plugin's through
    /// `PLUGIN_UNIX_SOCKET_DIR`); None: `$PLUGIN_UNIX_SOCKET_DIR`, `$TMPDIR`, `/tmp`.
    pub socket_dir: Option<PathBuf>,
    /// Resource limits for the plugin process (none by default).
    pub limits: Vec<Limit>,
    /// The executable's pinned SHA-256, checked before every start on the
    /// very file that is executed (as go-plugin's SecureConfig, without its
    /// gap between hashing and exec); None: not pinned.
    pub sha256: Option<[u8; 32]>,
    /// Largest gRPC message either way, on the plugin's channel and every
    /// brokered one (and the plugin's own bound, `LOOPP_MAX_MESSAGE_BYTES`).
    pub max_message: usize,
    /// Calls of the plugin to what the host serves it (keystore, data
    /// sources, ...) that run at once; more wait.
    pub concurrent_calls: usize,
    /// Calls that wait; beyond, RESOURCE_EXHAUSTED.
    pub queued_calls: usize,
}

/// Default [`HostConfig::concurrent_calls`].
pub const DEFAULT_CONCURRENT_CALLS: usize = 16;
/// Default [`HostConfig::queued_calls`].
pub const DEFAULT_QUEUED_CALLS: usize = 1024;

impl HostConfig {
    /// A config with go-plugin's defaults and app version 0.
    pub fn new(name: &str, program: impl Into<OsString>, cookie: Cookie) -> HostConfig {
        HostConfig {
            name: name.to_string(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cookie,
            versions: vec![0],
            network: Network::Unix,
            port_range: crate::goplugin::plugin::DEFAULT_PORT_RANGE,
            start_timeout: DEFAULT_START_TIMEOUT,
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            socket_dir: None,
            limits: Vec::new(),
            sha256: None,
            max_message: rpc::DEFAULT_MAX_MESSAGE,
            concurrent_calls: DEFAULT_CONCURRENT_CALLS,
            queued_calls: DEFAULT_QUEUED_CALLS,
        }
    }

    fn plugin_env(&self) -> Vec<(OsString, OsString)> {
        let versions: Vec<String> = self.versions.iter().map(u32::to_string).collect();
        let mut env: Vec<(OsString, OsString)> = vec![
            (
                self.cookie.key.clone().into(),
                self.cookie.value.clone().into(),
            ),
            (
                "PLUGIN_MIN_PORT".into(),
                self.port_range.0.to_string().into(),
            ),
            (
                "PLUGIN_MAX_PORT".into(),
                self.port_range.1.to_string().into(),
            ),
            ("PLUGIN_PROTOCOL_VERSIONS".into(), versions.join(",").into()),
            (
                rpc::MAX_MESSAGE_VAR.into(),
                self.max_message.to_string().into(),
            ),
        ];
        if crate::goplugin::route::host_offers() {
            env.push((crate::goplugin::route::OFFER_VAR.into(), "1".into()));
            if crate::goplugin::framed::host_offers() {
                env.push((crate::goplugin::framed::OFFER_VAR.into(), "1".into()));
            }
        }
        if let Some(dir) = &self.socket_dir {
            env.push(("PLUGIN_UNIX_SOCKET_DIR".into(), dir.clone().into()));
        }
        if self.network == Network::Tcp {
            env.push(("LOOPP_NETWORK".into(), "tcp".into()));
        }
        env.extend(self.env.iter().cloned());
        env
    }

    /// Where the plugin makes its socket directory: its
    /// `PLUGIN_UNIX_SOCKET_DIR` (ours unless its environment sets one),
    /// else its `TMPDIR`, else `/tmp`, as [`SocketDir::create`] picks.
    fn plugin_socket_base(&self) -> PathBuf {
        let env = self.plugin_env();
        let set = |k: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var_os(k))
        };
        set("PLUGIN_UNIX_SOCKET_DIR")
            .filter(|v| !v.is_empty())
            .or_else(|| set("TMPDIR").filter(|v| !v.is_empty()))
            .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
    }
}

const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// What a host's ping asks: the health of the service "plugin", as
/// go-plugin's host asks.
fn health_request() -> HealthCheckRequest {
    HealthCheckRequest {
        service: "plugin".to_string(),
        ..Default::default()
    }
}

/// A ping's answer (asked at `t0`), counted in the host's call metrics: Ok
/// only when the plugin answers SERVING.
fn health_answer(
    plugin: &str,
    result: grpcio::Result<crate::proto::health::HealthCheckResponse>,
    t0: Instant,
) -> Result<()> {
    crate::goplugin::metrics::client_observe(
        plugin,
        HEALTH_CHECK,
        crate::goplugin::metrics::code_of(&result),
        t0.elapsed(),
    );
    let resp = result.map_err(|e| Error::rpc(plugin, HEALTH_CHECK, &e))?;
    match resp.status.enum_value() {
        Ok(ServingStatus::SERVING) => Ok(()),
        other => Err(Error::Rpc {
            plugin: plugin.to_string(),
            method: HEALTH_CHECK,
            status: format!("plugin reports {:?}, not SERVING", other),
        }),
    }
}

/// A ping, framed or over gRPC as `health` was made.
fn ping_with(plugin: &str, health: &HealthClient, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    let result = health.check(&health_request(), timeout);
    health_answer(plugin, result, t0)
}

/// A framed connection to a loopp plugin's own socket, when it frames its
/// own services (a unix socket only); None when it does not, or the
/// connection fails (gRPC carries every call then).
fn own_framed(
    config: &HostConfig,
    handshake: &Handshake,
) -> Option<crate::goplugin::framed::Channel> {
    if !handshake.framed_self || handshake.network != Network::Unix {
        return None;
    }
    crate::goplugin::framed::Channel::connect(&handshake.address, config.max_message)
        .map_err(|e| {
            log::debug!(
                "plugin {}: no framed connection to {} ({e}); calling it over gRPC",
                config.name,
                handshake.address
            )
        })
        .ok()
}

/// How a plugin ended.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    /// Its exit status (None only if it could not be reaped in time).
    pub status: Option<ExitStatus>,
    /// Whether it exited by itself after Shutdown, without SIGKILL.
    pub graceful: bool,
    /// From the start of the kill sequence to the reap.
    pub took: Duration,
}

/// A running plugin: its process, its connection and its broker.
pub struct Client {
    config: HostConfig,
    process: Process,
    handshake: Handshake,
    /// The connection to the plugin's own services: framed, to its own
    /// socket, when it frames them (see `goplugin::framed::PLUGIN_OBJECT`);
    /// its gRPC channel is made at the first gRPC call.
    conn: Conn,
    /// The health client, made once: a `grpcio::Client` creates a call
    /// object of its own when made, so one per check cost each check a
    /// second call's set-up.
    health: HealthClient,
    broker: Broker,
    sockets: SocketDir,
    handshake_in: Duration,
    started_in: Duration,
    exit: Option<Exit>,
}

impl Client {
    /// Launches the plugin and returns once it answered a ping.
    ///
    /// The plugin's parent-death signal is tied to the calling thread: call this
    /// from a thread that outlives the plugin (a supervisor or `main`).
    pub fn start(config: &HostConfig) -> Result<Client> {
        let (_keep, never) = crossbeam_channel::bounded::<()>(0);
        Client::start_cancellable(config, &never)
    }

    /// As [`Client::start`], but gives up (with [`Error::Cancelled`]) as soon as
    /// `cancel` is ready or disconnected, killing what it started.
    pub fn start_cancellable(
        config: &HostConfig,
        cancel: &crossbeam_channel::Receiver<()>,
    ) -> Result<Client> {
        let t0 = Instant::now();
        // gRPC's set-up overlaps the plugin's start, unless the plugin may
        // frame: then it is started only if needed (see below).
        let offers_framing = crate::goplugin::route::offered_with(&config.env)
            && crate::goplugin::framed::offered_with(&config.env);
        if !offers_framing {
            rpc::prewarm();
        }
        let name = config.name.as_str();
        // Made only if the host serves something on its broker.
        let sockets = SocketDir::lazy(config.socket_dir.clone());
        let process = Process::spawn(Spawn {
            name,
            program: &config.program,
            args: &config.args,
            env: &config.plugin_env(),
            limits: &config.limits,
            sha256: config.sha256,
        })
        .map_err(|e| match e {
            PinError::Io(source) => Error::Spawn {
                plugin: name.to_string(),
                command: config.program.to_string_lossy().into_owned(),
                source,
            },
            PinError::Mismatch(expected, actual) => Error::Pinned {
                plugin: name.to_string(),
                path: config.program.to_string_lossy().into_owned(),
                expected: hex(&expected),
                actual: hex(&actual),
            },
        })?;
        let handshake = match read_handshake(config, &process, t0 + config.start_timeout, cancel) {
            Ok(h) => h,
            Err(e) => {
                // A plugin that printed a handshake may have made its socket;
                // ask it to go (SIGTERM cleans up), then make sure.
                process.signal(libc::SIGTERM);
                if process.wait_timeout(config.shutdown_grace).is_none() {
                    process.kill_now();
                }
                // One that died between making its socket directory and
                // printing its address left the directory: nobody else
                // would remove it while the node runs.
                if process.status().is_some() {
                    sockdir::remove_stale_of(&config.plugin_socket_base(), process.pid());
                }
                return Err(e);
            }
        };
        let handshake_in = t0.elapsed();
        // A loopp plugin that frames its own services is called framed, on
        // its own socket: its first ping too, and gRPC is made only if a
        // gRPC call needs it. If that connection or ping fails, gRPC's
        // ping decides.
        let (network, address, max) = (
            handshake.network,
            handshake.address.clone(),
            config.max_message,
        );
        let grpc = move || rpc::connect_now(network, &address, max);
        let framed = own_framed(config, &handshake).and_then(|f| {
            let conn = Conn {
                framed: Some((f, crate::goplugin::framed::PLUGIN_OBJECT)),
                ..Conn::from(rpc::LazyClient::later(grpc.clone()))
            };
            let health = HealthClient::new(conn.clone());
            ping_with(&config.name, &health, config.rpc_timeout)
                .is_ok()
                .then_some((conn, health))
        });
        // From spawn to the first successful ping, whichever way it went.
        let pinged_in = framed.as_ref().map(|_| t0.elapsed());
        let (conn, health) = match framed {
            Some((conn, health)) => (conn, health),
            None => {
                let conn = Conn::from(rpc::LazyClient::of(grpc()));
                let health = HealthClient::new(conn.clone());
                (conn, health)
            }
        };
        let lane = crate::goplugin::pool::Lane::new(
            &config.name,
            config.concurrent_calls,
            config.queued_calls,
        );
        let mut client = Client {
            config: config.clone(),
            process,
            handshake,
            health,
            conn,
            broker: Broker::bounded(sockets.clone(), config.max_message, Some(lane)),
            sockets,
            handshake_in,
            started_in: Duration::ZERO,
            exit: None,
        };
        if client.handshake.framed {
            client.broker.frame();
        } else if client.handshake.routed {
            client.broker.route();
        }
        let checked = if pinged_in.is_some() {
            Ok(())
        } else {
            client.ping()
        };
        if let Err(e) = checked {
            client.kill();
            return Err(match e {
                Error::Rpc { plugin, status, .. } if !status.contains("not SERVING") => {
                    Error::Unreachable {
                        plugin,
                        address: format!(
                            "{}:{}",
                            client.handshake.network, client.handshake.address
                        ),
                        status,
                    }
                }
                other => other,
            });
        }
        client.started_in = pinged_in.unwrap_or_else(|| t0.elapsed());
        client.open_streams();
        Ok(client)
    }

    fn open_streams(&self) {
        if self.conn.framed.is_some() {
            self.broker
                .attach_framed(BrokerClient::new(self.conn.clone()));
            return;
        }
        match GRPCBrokerClient::new(self.conn.clone()).start_stream(rpc::STREAM_DEADLINE) {
            Ok((tx, rx)) => self.broker.attach(tx, rx),
            Err(e) => log::warn!(
                "plugin {}: no broker stream: {}",
                self.config.name,
                crate::goplugin::error::rpc_status_text(&e)
            ),
        }
        stdio::relay(&self.config.name, self.conn.client.channel().clone());
    }

    /// `grpc.health.v1.Health/Check{service: "plugin"}` with the rpc timeout;
    /// Ok only when the plugin answers SERVING.
    pub fn ping(&self) -> Result<()> {
        self.ping_within(self.config.rpc_timeout)
    }

    /// [`Client::ping`] with its own deadline.
    pub fn ping_within(&self, timeout: Duration) -> Result<()> {
        ping_with(&self.config.name, &self.health, timeout)
    }

    /// Whether the plugin's own services (pings included) are called
    /// framed, on its own socket (a loopp plugin that frames them), rather
    /// than over gRPC.
    pub fn pings_framed(&self) -> bool {
        self.conn.framed.as_ref().is_some_and(|(f, _)| f.is_open())
    }

    /// The negotiated handshake.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// The connection to the plugin's own services, for app service
    /// clients: framed when the plugin frames them.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// The gRPC channel to the plugin, made now if it was not (a plugin
    /// that frames its own services is called on `conn`, without it).
    pub fn channel(&self) -> &Channel {
        self.conn.client.channel()
    }

    /// The host's broker for this plugin.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The plugin's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// From spawn to the handshake line.
    pub fn handshake_in(&self) -> Duration {
        self.handshake_in
    }

    /// From spawn to the first successful ping.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The process, for exit notifications.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The config it was started with.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Stops the plugin: broker close, Shutdown RPC (errors ignored), up to
    /// `shutdown_grace` for the exit, then SIGKILL; always reaps and removes the
    /// sockets it may leave (its own and those it announced on its broker).
    /// Idempotent.
    pub fn kill(&mut self) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let t0 = Instant::now();
        self.broker.close();
        let mut graceful = false;
        let mut status = self.process.status();
        if status.is_none() {
            let _ = GRPCControllerClient::new(self.conn.clone())
                .shutdown(&Empty::new(), self.config.rpc_timeout);
            status = self.process.wait_timeout(self.config.shutdown_grace);
            graceful = status.is_some();
            if status.is_none() {
                log::warn!(
                    "plugin {}: no exit within {:?} of Shutdown; killing it",
                    self.config.name,
                    self.config.shutdown_grace
                );
                status = self.process.kill_now();
            }
        }
        self.sockets.remove();
        if self.handshake.network == Network::Unix {
            sockdir::remove_leftovers(Path::new(&self.handshake.address));
        }
        // What it served on its broker: a Go plugin (go-plugin) leaves those
        // sockets behind when it exits, one per object, restart after
        // restart. Only those nothing listens on any more go.
        for path in self.broker.peer_sockets() {
            sockdir::remove_if_dead(&path);
        }
        let exit = Exit {
            status,
            graceful,
            took: t0.elapsed(),
        };
        self.exit = Some(exit);
        exit
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for and checks the handshake line.
fn read_handshake(
    config: &HostConfig,
    process: &Process,
    deadline: Instant,
    cancel: &crossbeam_channel::Receiver<()>,
) -> Result<Handshake> {
    let name = &config.name;
    let line = match process.first_line(deadline, cancel) {
        Some(FirstLine::Line(line)) => line,
        Some(FirstLine::Eof) => {
            let status = process.wait_timeout(STDERR_SETTLE);
            return Err(Error::ExitedBeforeHandshake {
                plugin: name.clone(),
                status,
                stderr_tail: process.stderr_tail(STDERR_SETTLE),
            });
        }
        None if Instant::now() < deadline => {
            return Err(Error::Cancelled {
                plugin: name.clone(),
            })
        }
        None => {
            return Err(Error::StartTimeout {
                plugin: name.clone(),
                after: config.start_timeout,
                stderr_tail: process.stderr_tail(Duration::ZERO),
            })
        }
    };
    let handshake = Handshake::parse(&line).map_err(|problem| {
        let mut shown = line.clone();
        if shown.len() > 200 {
            let mut cut = 200;
            while !shown.is_char_boundary(cut) {
                cut -= 1;
            }
            shown.truncate(cut);
            shown.push('…');
        }
        Error::Handshake {
            plugin: name.clone(),
            line: shown,
            problem,
        }
    })?;
    if !config.versions.contains(&handshake.app_version) {
        return Err(Error::IncompatibleVersion {
            plugin: name.clone(),
            plugin_version: handshake.app_version,
            host_versions: config.versions.clone(),
        });
    }
    if handshake.server_cert.is_some() {
        return Err(Error::Unsupported {
            plugin: name.clone(),
            what: "the plugin answered with a TLS certificate (AutoMTLS), which loopp hosts do not speak".into(),
        });
    }
    if handshake.multiplex {
        return Err(Error::Unsupported {
            plugin: name.clone(),
            what: "the plugin asked for gRPC multiplexing, which this host did not offer".into(),
        });
    }
    Ok(handshake)
}

/// Bytes as lower-case hex.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
