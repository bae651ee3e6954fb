//! The node: runs every configured plugin, out of process under a
//! [`Supervisor`] or in-process, keeps the [`Registry`] current, allocates
//! each LOOPP's metrics port, serves HTTP, aggregates readiness and health,
//! and shuts everything down in parallel.
//!
//! Data flow: config → supervisors → (events channel) → registry; callers reach
//! a plugin's service through [`Node::service`], the same trait either way;
//! HTTP → [`Plugins`] (registry, services) → proxy.

//!
//! Layer 4, the top: it may use every layer below. Submodules:
//! [`config`] (job file and environment → [`config::NodeConfig`]),
//! [`kinds`] (the implementations the node can run in-process),
//! [`supervisor`], [`registry`], [`ports`], [`http`], [`metrics`],
//! [`keystore`] (the node's keys), [`feeds`] (median feeds and the round
//! driver).

pub mod config;
pub mod dotenv;
pub mod feeds;
pub mod http;
pub mod keystore;
pub mod kinds;
pub mod logwriter;
pub mod loopenv;
pub mod metrics;
pub mod openfiles;
pub mod ports;
pub mod registry;
pub mod supervisor;

use crate::services::median::factory::PluginMedian;
use crate::services::median::factory_grpc::PluginMedianClient;
use crate::services::relay::grpc::PluginRelayerClient;
use crate::services::relay::PluginRelayer;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::goplugin::host::HostConfig;
use crate::goplugin::http::HttpServer;
use crate::node::config::{Mode, NodeConfig, Supervision};
use crate::node::http::NodeHttpConfig;
use crate::node::ports::Ports;
use crate::node::registry::{Event, PluginStatus, Registry};
use crate::node::supervisor::Supervisor;
use crate::services::service::LinkedService;
use crate::services::service::Service;

/// The node's plugins as the rest of the node sees them: their services (the
/// same trait in-process or not) and their states. Shared with the HTTP server.
pub struct Plugins {
    registry: Registry,
    services: Vec<(String, Arc<dyn Service>)>,
    rpc_timeout: Duration,
}

impl Plugins {
    /// The plugins' states.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A plugin's service.
    pub fn service(&self, name: &str) -> Option<Arc<dyn Service>> {
        self.services
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    }

    /// Runs `f` on every plugin's service in parallel, each bounded by the rpc
    /// timeout plus a margin: a hung plugin cannot stall the answer.
    fn each<T: Send + 'static>(
        &self,
        f: impl Fn(&dyn Service) -> T + Send + Sync + 'static,
    ) -> Vec<(String, Option<T>)> {
        let f = Arc::new(f);
        let pending: Vec<_> = self
            .services
            .iter()
            .map(|(name, svc)| {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let (svc, f) = (svc.clone(), f.clone());
                let _ = std::thread::Builder::new()
                    .name(format!("ask-{name}"))
                    .spawn(move || {
                        let _ = tx.send(f(svc.as_ref()));
                    });
                (name.clone(), rx)
            })
            .collect();
        let deadline = Instant::now() + self.rpc_timeout + Duration::from_millis(200);
        pending
            .into_iter()
            .map(|(name, rx)| (name, rx.recv_deadline(deadline).ok()))
            .collect()
    }

    /// Node-wide health: every plugin's report with keys prefixed `NAME.`, plus
    /// `NAME` itself (empty when running and answering).
    pub fn health_report(&self) -> BTreeMap<String, String> {
        let bound = self.rpc_timeout;
        let mut out = BTreeMap::new();
        for (name, report) in self.each(|s| s.health_report()) {
            let mut own = match self.registry.get(&name) {
                Some(st) if !st.healthy() => format!("not healthy: {}", st.describe()),
                _ => String::new(),
            };
            match report {
                Some(r) => {
                    for (k, v) in r {
                        if k == name {
                            if own.is_empty() {
                                own = v;
                            }
                        } else {
                            out.insert(format!("{name}.{k}"), v);
                        }
                    }
                }
                None if own.is_empty() => own = format!("no health report within {bound:?}"),
                None => {}
            }
            out.insert(name, own);
        }
        out
    }

    /// Node-wide readiness: Ok when every plugin is ready; else every reason.
    pub fn ready(&self) -> Result<(), String> {
        let bound = self.rpc_timeout;
        let errors: Vec<String> = self
            .each(|s| s.ready())
            .into_iter()
            .filter_map(|(name, r)| match r {
                Some(Ok(())) => None,
                Some(Err(e)) => Some(format!("{name}: {e}")),
                None => Some(format!("{name}: no answer within {bound:?}")),
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// A running node.
pub struct Node {
    plugins: Arc<Plugins>,
    supervisors: Vec<Supervisor>,
    supervision: Supervision,
    applier: Option<JoinHandle<()>>,
    ports: Arc<Ports>,
    http: Option<HttpServer>,
    feeds: Vec<crate::node::feeds::Feed>,
    /// Runs the feeds' rounds; dropped after them.
    scheduler: Option<crate::node::feeds::scheduler::Scheduler>,
}

/// How the job's feeds and plugins load the node's open files.
fn open_file_load(config: &NodeConfig) -> crate::node::openfiles::NodeLoad {
    // Each plugin: whether it is a LOOPP, and whether it will route.
    let plugins: std::collections::HashMap<&str, (bool, bool)> = config
        .plugins
        .iter()
        .map(|p| {
            let facts = match &p.mode {
                Mode::Loopp { command, env } => {
                    (true, crate::node::openfiles::will_route(command, env))
                }
                Mode::InProcess => (false, true),
            };
            (p.name.as_str(), facts)
        })
        .collect();
    let loopp = |name: &str| plugins.get(name).is_some_and(|f| f.0);
    let routes = |name: &str| plugins.get(name).is_none_or(|f| f.1);
    let mut load = crate::node::openfiles::NodeLoad {
        loopps: plugins.values().filter(|f| f.0).count(),
        ..Default::default()
    };
    let mut feeds_of = std::collections::HashMap::<&str, usize>::new();
    for f in &config.feeds {
        *feeds_of.entry(f.median.as_str()).or_default() += 1;
    }
    for f in &config.feeds {
        if !loopp(&f.median) && !loopp(&f.relay) {
            load.in_process_feeds += 1;
        } else if routes(&f.median) && routes(&f.relay) {
            load.routed_feeds += 1;
        } else if loopp(&f.median) && feeds_of[f.median.as_str()] == 1 {
            load.process_feeds += 1;
        } else {
            load.loopp_feeds += 1;
        }
    }
    load
}

impl Node {
    /// Starts the HTTP server (when configured) and every plugin of `config`
    /// (out-of-process ones in the background). Fails, with nothing left
    /// running, if the job needs more open files than the limit allows
    /// (see [`crate::node::openfiles`]), the data directory cannot be
    /// written (with feeds), or the HTTP address or a metrics port cannot
    /// be had.
    pub fn start(config: &NodeConfig) -> std::io::Result<Node> {
        // What plugins or an earlier node that were SIGKILLed left behind.
        // A job too big for the open-file limit fails here, not feed by
        // feed with EMFILE; HTTP clients get what the job leaves.
        let room = crate::node::openfiles::room_for_http(
            &open_file_load(config),
            crate::node::openfiles::raise_soft_limit(),
        )
        .map_err(std::io::Error::other)?;
        let stale = crate::goplugin::sockdir::remove_stale_in_default();
        if stale > 0 {
            log::info!("removed {stale} socket directories of processes that are gone");
        }
        // Feeds keep their keys (and in-process relayers their chains) in
        // the data directory: an unusable one stops the node here.
        if !config.feeds.is_empty() {
            crate::node::feeds::prepare_data_dir(&config.data_dir)
                .map_err(std::io::Error::other)?;
        }
        // A socket dir base too deep for unix socket paths would make every
        // LOOPP fail its start, restart after restart: say so once, here.
        if config
            .plugins
            .iter()
            .any(|p| matches!(p.mode, Mode::Loopp { .. }))
        {
            crate::goplugin::sockdir::check_base(&crate::goplugin::sockdir::default_base())?;
        }
        let registry = Registry::new();
        let ports = Arc::new(Ports::new());
        let mut services: Vec<(String, Arc<dyn Service>)> = Vec::new();
        let mut hosts = Vec::new();
        for p in &config.plugins {
            match &p.mode {
                Mode::Loopp { command, env } => {
                    // Allocated once: the plugin keeps its port across restarts.
                    let port = ports.allocate()?;
                    let mut status = PluginStatus::new(&p.name, p.kind.name, true);
                    status.metrics_port = Some(port);
                    registry.insert(status);
                    let mut host = HostConfig::new(&p.name, command, p.kind.cookie.clone());
                    host.env = crate::node::loopenv::plugin_env(port, env);
                    host.limits = p.limits.clone();
                    host.sha256 = p.sha256;
                    host.max_message = p.rpc.max_message;
                    host.concurrent_calls = p.rpc.concurrent_calls;
                    host.queued_calls = p.rpc.queued_calls;
                    hosts.push(host);
                }
                Mode::InProcess => {
                    registry.insert(PluginStatus::new(&p.name, p.kind.name, false));
                    let make = p
                        .kind
                        .in_process_for(&p.name)
                        .expect("config checked an in-process implementation exists");
                    log::info!("plugin {} running in-process", p.name);
                    services.push((p.name.clone(), make()));
                }
            }
        }
        let (events_tx, events_rx) = crossbeam_channel::unbounded::<Event>();
        // Links first, so clients (and the HTTP server) can hold them before
        // the supervisors start.
        let mut links = Vec::new();
        for host in &hosts {
            let link = crate::goplugin::host::Link::default();
            let service = Arc::new(LinkedService::new(
                &host.name,
                link.clone(),
                config.supervision.rpc_timeout,
            ));
            services.push((host.name.clone(), service));
            links.push(link);
        }
        let plugins = Arc::new(Plugins {
            registry: registry.clone(),
            services,
            rpc_timeout: config.supervision.rpc_timeout,
        });
        // HTTP first: a bad address fails before any plugin starts.
        let http = match &config.http {
            Some(listen) => {
                let mut limits = config.http_limits.clone();
                if limits.max_connections as u64 > room {
                    log::warn!(
                        "http.max_connections {} does not fit the open-file limit with the job's feeds and plugins; serving at most {room} connections (raise `ulimit -n` or LimitNOFILE=)",
                        limits.max_connections
                    );
                    limits.max_connections = room as usize;
                }
                let server = crate::node::http::serve(
                    NodeHttpConfig::from_env(listen, limits),
                    plugins.clone(),
                )?;
                log::info!(
                    "HTTP on http://{} (/discovery, /metrics, /health)",
                    server.addr()
                );
                Some(server)
            }
            None => None,
        };
        let links_by_name: std::collections::HashMap<String, crate::goplugin::host::Link> = hosts
            .iter()
            .map(|h| h.name.clone())
            .zip(links.iter().cloned())
            .collect();
        let supervisors: Vec<Supervisor> = hosts
            .into_iter()
            .zip(links)
            .map(|(host, link)| {
                Supervisor::spawn_with_link(
                    host,
                    config.supervision.clone(),
                    events_tx.clone(),
                    link,
                    Some(ports.clone()),
                )
            })
            .collect();
        drop(events_tx);
        let reg = registry.clone();
        let applier = std::thread::Builder::new()
            .name("registry".into())
            .spawn(move || {
                for e in events_rx.iter() {
                    reg.apply(&e);
                    match &e {
                        Event::Running {
                            name,
                            pid,
                            started_in,
                        } => {
                            log::info!("plugin {name} running (pid {pid}, ready in {started_in:?})")
                        }
                        Event::Stopped { name, exit } => {
                            log::info!(
                                "plugin {name} stopped ({})",
                                exit.as_deref().unwrap_or("not running")
                            )
                        }
                        _ => {}
                    }
                }
            })?;
        // A feed's plugins: the in-process implementation, or the same trait
        // over gRPC to the LOOPP (one relayer object per relay plugin).
        let mut relayers: std::collections::HashMap<String, Arc<dyn PluginRelayer>> =
            std::collections::HashMap::new();
        let mut relayer = |name: &str| -> Arc<dyn PluginRelayer> {
            relayers
                .entry(name.to_string())
                .or_insert_with(|| match links_by_name.get(name) {
                    Some(link) => Arc::new(PluginRelayerClient::new(
                        name,
                        link.clone(),
                        crate::node::feeds::SETUP_TIMEOUT,
                    )),
                    None => Arc::new(crate::devchain::relayer::Devchain::new()),
                })
                .clone()
        };
        let median = |name: &str| -> Arc<dyn PluginMedian> {
            match links_by_name.get(name) {
                Some(link) => Arc::new(PluginMedianClient::new(
                    name,
                    link.clone(),
                    crate::node::feeds::SETUP_TIMEOUT,
                )),
                None => Arc::new(crate::median::factory::Median),
            }
        };
        let scheduler = if config.feeds.is_empty() {
            None
        } else {
            if config.round_slack.is_zero() {
                log::info!("feed rounds start as each is due (round_slack)");
            } else {
                log::info!(
                    "feed rounds start on ticks {:?} apart, so rounds due close together start together (round_slack)",
                    config.round_slack
                );
            }
            match crate::node::feeds::scheduler::Scheduler::start(
                config.feed_threads,
                config.round_slack,
            ) {
                Ok(s) => Some(s),
                Err(e) => {
                    for s in supervisors {
                        s.stop();
                    }
                    return Err(std::io::Error::other(format!(
                        "cannot start the feeds' round threads: {e}"
                    )));
                }
            }
        };
        let mut feeds = Vec::new();
        for f in &config.feeds {
            match crate::node::feeds::Feed::start(
                f.clone(),
                relayer(&f.relay),
                median(&f.median),
                &config.data_dir,
                scheduler.as_ref().expect("made when there are feeds"),
            ) {
                Ok(feed) => feeds.push(feed),
                Err(e) => {
                    drop(feeds);
                    for s in supervisors {
                        s.stop();
                    }
                    return Err(std::io::Error::other(e));
                }
            }
        }
        Ok(Node {
            plugins,
            supervisors,
            supervision: config.supervision.clone(),
            applier: Some(applier),
            ports,
            http,
            feeds,
            scheduler,
        })
    }

    /// The plugins' states.
    pub fn registry(&self) -> &Registry {
        &self.plugins.registry
    }

    /// A plugin's service, in-process or not: the same trait.
    pub fn service(&self, name: &str) -> Option<Arc<dyn Service>> {
        self.plugins.service(name)
    }

    /// Node-wide health (see [`Plugins::health_report`]).
    pub fn health_report(&self) -> BTreeMap<String, String> {
        self.plugins.health_report()
    }

    /// Node-wide readiness (see [`Plugins::ready`]).
    pub fn ready(&self) -> Result<(), String> {
        self.plugins.ready()
    }

    /// The HTTP server's address, if it runs.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(HttpServer::addr)
    }

    /// Stops every plugin in parallel (Close, Shutdown, grace, SIGKILL) and
    /// waits for all of it, then the HTTP server. Returns how long it took.
    pub fn shutdown(mut self) -> Duration {
        let t0 = Instant::now();
        // Feeds first: no new rounds while plugins stop.
        for f in self.feeds.drain(..) {
            f.stop();
        }
        self.scheduler.take();
        // Tell every supervisor at once, then close in-process services.
        for s in &mut self.supervisors {
            s.request_stop();
        }
        let supervised: Vec<String> = self
            .supervisors
            .iter()
            .map(|s| s.name().to_string())
            .collect();
        let (tx, rx) = crossbeam_channel::unbounded();
        for (name, svc) in &self.plugins.services {
            if supervised.contains(name) {
                continue;
            }
            let (tx, svc) = (tx.clone(), svc.clone());
            let _ = std::thread::Builder::new()
                .name("close".into())
                .spawn(move || {
                    if let Err(e) = svc.close() {
                        log::warn!("in-process service {}: close: {e}", svc.name());
                    }
                    let _ = tx.send(());
                });
        }
        drop(tx);
        let deadline = Instant::now() + self.supervision.rpc_timeout;
        while rx.recv_deadline(deadline).is_ok() {}
        for s in self.supervisors.drain(..) {
            s.stop();
        }
        for st in self.plugins.registry.snapshot() {
            if let Some(port) = st.metrics_port {
                self.ports.release(port);
            }
        }
        if let Some(a) = self.applier.take() {
            let _ = a.join();
        }
        if let Some(h) = self.http.take() {
            h.stop();
        }
        t0.elapsed()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.feeds.clear();
        for s in &mut self.supervisors {
            s.request_stop();
        }
        // Supervisors join on drop.
        self.supervisors.clear();
    }
}
