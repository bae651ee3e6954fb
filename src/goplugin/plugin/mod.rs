//! The plugin side: [`serve`] turns a process into a go-plugin gRPC plugin.
//!
//! Lifecycle (the prose version is `docs/PROTOCOL.md`):
//! 1. check the magic cookie (missing/wrong: go-plugin's message, exit 1);
//! 2. capture stdout/stderr (nothing reaches stdout before the handshake) and
//!    install the JSON logger on the real stderr;
//! 3. negotiate the app version from `PLUGIN_PROTOCOL_VERSIONS`;
//! 4. build the plugin's services, given its [`Plugin`] context (broker, version);
//! 5. listen on a unix socket in a fresh 0700 directory, or on 127.0.0.1 in
//!    `PLUGIN_MIN_PORT..=PLUGIN_MAX_PORT` when `LOOPP_NETWORK=tcp`: the
//!    plugin's own socket ([`accept`]), before gRPC is set up;
//! 6. print the handshake line and flush, start the accept thread (a
//!    framing host's framed connection is served at once: every service
//!    of the plugin's own, as object 0); then build and start the gRPC
//!    server and give it to the accept thread (a host that connected
//!    meanwhile waits), or, for a framing host, let the accept thread
//!    build it at the first gRPC connection, if one comes; and what the
//!    host does not wait for: the parent's watch and the `/metrics`
//!    server's threads (its port is bound before the handshake);
//! 7. serve until Shutdown, SIGTERM or the host's death, then close the service,
//!    the broker and the server, remove the socket directory and return 0.
//!
//! Invariants: the plugin never listens on a non-loopback address; it exits by
//! itself when its host dies (SIGINT is ignored, as in go-plugin: the host decides).

pub mod accept;
mod builtin;
pub mod jsonlog;
pub mod metrics;
mod parent;
pub mod stdio;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::goplugin::broker::Broker;
use crate::goplugin::error::{Error, Result};
use crate::goplugin::handshake::{
    negotiate_version, Cookie, Handshake, Network, NOT_A_PLUGIN_MESSAGE,
};
use crate::goplugin::sockdir::SocketDir;
use crate::proto::{
    grpc_broker_grpc, grpc_controller_grpc, grpc_stdio_grpc, health_grpc, loopp_broker_grpc,
};

/// How long `serve` waits for the service's `close` and the server's shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The same, when the host is gone: nobody waits for answers any more, and the
/// plugin must be gone well within 2 s of its host.
pub const HOST_GONE_GRACE: Duration = Duration::from_millis(250);

/// The least time servers get to stop when the service's close used up the
/// grace period.
const MIN_SERVER_STOP: Duration = Duration::from_millis(100);

/// How long a connection to the plugin may take to send its HTTP/2
/// preface: a host sends it as it connects (see `accept`).
const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// go-plugin's default TCP port range.
pub const DEFAULT_PORT_RANGE: (u16, u16) = (10000, 25000);

/// What a plugin is.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Name for logs, e.g. `median`.
    pub name: String,
    /// The magic cookie of this kind of plugin.
    pub cookie: Cookie,
    /// App protocol versions this plugin speaks (LOOP plugins: `[0]`).
    pub versions: Vec<u32>,
    /// Whether `CL_PROMETHEUS_PORT` must be set (LOOP plugins) or `/metrics`
    /// is served only when it is (plugins that also run under plain
    /// go-plugin hosts).
    pub metrics: MetricsPort,
}

/// How a plugin treats `CL_PROMETHEUS_PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsPort {
    /// Missing is a start error naming the variable.
    Required,
    /// Missing means no `/metrics`; malformed is still an error.
    IfSet,
}

/// `CL_PROMETHEUS_PORT`, checked.
fn metrics_port(policy: MetricsPort) -> Result<Option<u16>> {
    let err = |what: String| Error::Serve { what, source: None };
    match std::env::var("CL_PROMETHEUS_PORT") {
        Err(_) if policy == MetricsPort::IfSet => Ok(None),
        Err(_) => Err(err(
            "CL_PROMETHEUS_PORT is not set; the host must give each plugin the port for its /metrics".into(),
        )),
        Ok(v) => match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(Some(p)),
            _ => Err(err(format!("CL_PROMETHEUS_PORT={v:?} is not a TCP port (1-65535)"))),
        },
    }
}

/// What the plugin's code gets while building its services.
pub struct Plugin {
    /// The negotiated app protocol version.
    pub app_version: u32,
    /// The broker, to serve or dial sub-services.
    pub broker: Broker,
}

/// What the plugin serves.
pub struct Served {
    /// The plugin's own gRPC services.
    pub grpc: Vec<crate::goplugin::route::Offer>,
    /// Closed once when serving ends (e.g. the plugin's `loop.Service`: see
    /// `crate::services::service::served`), bounded by the grace period.
    pub closer: Option<Arc<dyn Closer>>,
}

/// Something to close when the plugin stops serving. The plugin side knows
/// nothing else of the services it serves.
pub trait Closer: Send + Sync {
    /// Stops its work; an error is logged.
    fn close(&self) -> std::result::Result<(), String>;
}

/// Why serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The host called `GRPCController/Shutdown`.
    ShutdownRpc,
    /// SIGTERM.
    Terminated,
    /// The host process is gone.
    HostGone,
}

/// The error type plugin code returns from its build step.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs this process as a plugin; returns the exit code for `main`.
///
/// Call it first thing in `main`: anything printed on stdout before it could
/// break the handshake. `build` creates the plugin's services.
pub fn serve<F>(config: ServeConfig, build: F) -> ExitCode
where
    F: FnOnce(&Plugin) -> std::result::Result<Served, BoxError>,
{
    if !config.cookie.is_present_in_env() {
        eprint!("{NOT_A_PLUGIN_MESSAGE}");
        return ExitCode::from(1);
    }
    match run(&config, build) {
        Ok(stop) => {
            log::info!(reason:? = stop; "plugin {} exited", config.name);
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("plugin {}: {e}", config.name);
            ExitCode::from(1)
        }
    }
}

/// A start error: what failed, and why.
fn serve_err(what: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Serve {
        what: what.into(),
        source: Some(Box::new(e)),
    }
}

fn run<F>(config: &ServeConfig, build: F) -> Result<Stop>
where
    F: FnOnce(&Plugin) -> std::result::Result<Served, BoxError>,
{
    // Read first: a host that dies from here on is noticed by the watch.
    let ppid = parent::parent();
    let (stdio, real_stderr) =
        stdio::Stdio::capture().map_err(|e| serve_err("cannot capture stdio", e))?;
    jsonlog::init(real_stderr);
    // A loopp host offered routing: accept (see `goplugin::route`).
    let routed = crate::goplugin::route::plugin_offered();
    // And framing, only with routing (see `goplugin::framed`).
    let framed = routed && crate::goplugin::framed::plugin_offered();
    // gRPC's set-up (its threads, ~0.5 ms) overlaps with ours until the
    // server is built; started once fds 1 and 2 are pipes. Not for a host
    // that frames: it may never need gRPC here (see below).
    if !framed {
        crate::goplugin::rpc::prewarm();
    }
    install_panic_hook();
    // SIGTERM is handled from the start, so a plugin told to stop while it is
    // still starting cleans up its socket directory too.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<Stop>(8);
    let sigterm = crate::goplugin::signals::notify(&[libc::SIGTERM])
        .map_err(|e| serve_err("cannot install the SIGTERM handler", e))?;
    // go-plugin plugins ignore interrupts: Ctrl-C reaches the whole process
    // group and the host decides how its plugins stop.
    // SAFETY: setting a signal disposition to SIG_IGN is always sound.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    // A write past the file size limit (RLIMIT_FSIZE) is an error the
    // plugin reports (EFBIG), not a signal that kills it.
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };

    let host_versions = std::env::var("PLUGIN_PROTOCOL_VERSIONS").ok();
    let app_version = negotiate_version(&config.versions, host_versions.as_deref())
        .map_err(|what| Error::Serve { what, source: None })?;
    if std::env::var_os("PLUGIN_CLIENT_CERT").is_some_and(|v| !v.is_empty()) {
        return Err(Error::Serve {
            what: "the host asked for AutoMTLS (PLUGIN_CLIENT_CERT), which loopp plugins do not support; \
                   disable AutoMTLS in the host (plugins listen on private unix sockets or loopback)"
                .into(),
            source: None,
        });
    }
    let metrics_port = metrics_port(config.metrics)?;
    let network = match std::env::var("LOOPP_NETWORK").as_deref() {
        Err(_) | Ok("") | Ok("unix") => Network::Unix,
        Ok("tcp") => Network::Tcp,
        Ok(other) => {
            return Err(Error::Serve {
                what: format!(
                    "LOOPP_NETWORK={other:?} is not a network; use \"unix\" (default) or \"tcp\""
                ),
                source: None,
            })
        }
    };

    // Its owner file is written once the start has settled (below).
    let sockets = SocketDir::create_unowned()
        .map_err(|e| serve_err("cannot create the socket directory", e))?;
    let broker = Broker::new(sockets.clone());
    if framed {
        broker.frame();
    } else if routed {
        broker.route();
    }
    let plugin = Plugin {
        app_version,
        broker: broker.clone(),
    };
    let served = build(&plugin).map_err(|e| Error::Serve {
        what: format!("plugin {} could not start", config.name),
        source: Some(e),
    })?;

    // Listening before gRPC is set up: the handshake goes out now, and the
    // server is built while the host connects (see `accept`).
    let listener = accept::listen(network, &sockets, port_range)?;
    let address = listener.address().to_string();
    // Bound before the handshake, so a taken port fails the start; served
    // (threads started) after it, with the parent's watch: the host waits
    // for the handshake line, not for these.
    let metrics = match metrics_port {
        Some(port) => Some((
            port,
            crate::goplugin::plugin::metrics::bind_metrics(port).map_err(|e| {
                serve_err(
                    format!("CL_PROMETHEUS_PORT={port}: cannot serve /metrics"),
                    e,
                )
            })?,
        )),
        None => None,
    };

    // On a unix socket the accept thread hands framed connections to the
    // plugin's own services (see `accept`), and the handshake says so.
    let framed_self = framed && network == Network::Unix;
    let line = Handshake {
        app_version,
        network,
        address: address.clone(),
        server_cert: None,
        multiplex: false,
        routed,
        framed,
        framed_self,
    }
    .to_string();
    stdio
        .print_handshake(&line)
        .map_err(|e| serve_err("cannot print the handshake on stdout", e))?;

    let stopping = Arc::new(AtomicBool::new(false));
    // The built-in unary services, served to a framing host and over gRPC.
    let builtins = vec![
        health_grpc::offer_health(builtin::Health {
            stopping: stopping.clone(),
        }),
        grpc_controller_grpc::offer_grpc_controller(builtin::Controller {
            stop: stop_tx.clone(),
        }),
        loopp_broker_grpc::offer_broker(builtin::FramedBroker {
            broker: broker.clone(),
        }),
    ];
    // A host that frames calls every service of the plugin's own framed,
    // on this socket (see `accept`): object 0 of their own table.
    let own_framed = framed_self.then(|| {
        let table = crate::goplugin::route::Table::default();
        table.add(crate::goplugin::framed::PLUGIN_OBJECT, &builtins);
        table.add(crate::goplugin::framed::PLUGIN_OBJECT, &served.grpc);
        crate::goplugin::framed::server::Handoff::new(
            std::path::Path::new(&address),
            table,
            crate::goplugin::rpc::max_message(),
            crate::goplugin::framed::PLUGIN_CONNECTIONS,
        )
    });
    // gRPC's server: built now for a host that does not frame; for one
    // that does, only if a gRPC connection comes (a host of an earlier
    // loopp version), so gRPC's core never starts in this process
    // otherwise. The streams are gRPC's only.
    let grpc = {
        let (broker, stdio) = (broker.clone(), stdio.clone());
        let offers = served.grpc;
        move || -> Result<grpcio::Server> {
            let mut builder = crate::goplugin::rpc::server_builder()
                .register_service(grpc_broker_grpc::create_grpc_broker(
                    builtin::BrokerService { broker },
                ))
                .register_service(grpc_stdio_grpc::create_grpc_stdio(builtin::StdioService {
                    stdio,
                }));
            for s in builtins.into_iter().chain(offers) {
                builder = builder.register_service(s.into_service());
            }
            let mut server = builder
                .build()
                .map_err(|e| serve_err("cannot build the gRPC server", e))?;
            server.start();
            Ok(server)
        }
    };
    let framing_host = own_framed.is_some();
    let acceptor = listener.serve(own_framed, PREFACE_TIMEOUT)?;
    if framing_host {
        acceptor.build_on_demand(Box::new(grpc));
    } else {
        acceptor.give(grpc()?);
    }
    log::debug!(network = network.as_str(), address = address.as_str(), version = app_version; "plugin {} serving", config.name);
    parent::watch(stop_tx.clone(), ppid);
    // Kept until the process exits.
    let _metrics = match metrics {
        Some((port, listener)) => Some(
            crate::goplugin::plugin::metrics::serve_metrics(listener).map_err(|e| {
                serve_err(
                    format!("CL_PROMETHEUS_PORT={port}: cannot serve /metrics"),
                    e,
                )
            })?,
        ),
        None => None,
    };

    // Settled: the host has had time to set up what it uses. The socket
    // directory gets its owner file now, off the start's path (see
    // `sockdir`; without it, the pid in the directory's name still marks it
    // as this process's), and the code only start-up ran is given back (see
    // `pages`).
    let mut settled = crossbeam_channel::after(crate::pages::SETTLE);
    let stop = loop {
        crossbeam_channel::select! {
            recv(stop_rx) -> s => break s.unwrap_or(Stop::HostGone),
            recv(sigterm) -> _ => break Stop::Terminated,
            recv(settled) -> _ => {
                if let Err(e) = sockets.own() {
                    log::warn!("plugin {}: {e}", config.name);
                }
                let released = crate::pages::release_code();
                log::debug!("gave back {} KiB of start-up code", released / 1024);
                settled = crossbeam_channel::never();
            }
        }
    };
    log::debug!(reason:? = stop; "plugin {} stopping", config.name);
    stopping.store(true, Ordering::Relaxed);
    let grace = if stop == Stop::HostGone {
        HOST_GONE_GRACE
    } else {
        SHUTDOWN_GRACE
    };
    // One budget for the whole stop: the service's close, then every server
    // (the broker's and ours) together, so the host's grace is never
    // outlasted however many objects were served.
    let deadline = std::time::Instant::now() + grace;
    if let Some(closer) = &served.closer {
        close_bounded(closer.clone(), grace);
    }
    let servers_by = deadline.max(std::time::Instant::now() + MIN_SERVER_STOP);
    broker.close_by(servers_by);
    crate::goplugin::rpc::shutdown_servers(acceptor.stop().into_iter().collect(), servers_by);
    // Now, whoever still holds the directory: the broker's servers may
    // still be finishing on their own thread, and the process exits next.
    sockets.remove();
    Ok(stop)
}

/// `PLUGIN_MIN_PORT`/`PLUGIN_MAX_PORT`, defaulting to go-plugin's 10000..=25000.
fn port_range() -> Result<(u16, u16)> {
    let get = |key: &str, default: u16| -> Result<u16> {
        match std::env::var(key) {
            Err(_) => Ok(default),
            Ok(v) if v.is_empty() => Ok(default),
            Ok(v) => v
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| Error::Serve {
                    what: format!("{key}={v:?} is not a TCP port (1-65535)"),
                    source: None,
                }),
        }
    };
    let min = get("PLUGIN_MIN_PORT", DEFAULT_PORT_RANGE.0)?;
    let max = get("PLUGIN_MAX_PORT", DEFAULT_PORT_RANGE.1)?;
    if min > max {
        return Err(Error::Serve {
            what: format!("PLUGIN_MIN_PORT ({min}) is greater than PLUGIN_MAX_PORT ({max})"),
            source: None,
        });
    }
    Ok((min, max))
}

fn close_bounded(svc: Arc<dyn Closer>, grace: Duration) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let spawned = std::thread::Builder::new()
        .name("service-close".into())
        .spawn(move || {
            let _ = tx.send(svc.close());
        });
    if spawned.is_err() {
        return;
    }
    match rx.recv_timeout(grace) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::warn!("service close failed: {e}"),
        Err(_) => {
            log::warn!("service close did not finish within {grace:?}; exiting anyway")
        }
    }
}

/// Logs panics as JSON error lines on the real stderr, then lets the default
/// hook print as usual (into the captured stderr).
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let payload = crate::goplugin::error::panic_message(info.payload());
        log::error!(location = location.as_str(); "panic: {payload}");
        default(info);
    }));
}
