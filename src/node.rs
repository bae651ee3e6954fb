//! The node: runs every configured plugin, out of process under a
//! [`Supervisor`] or in-process, keeps the [`Registry`] current, aggregates
//! readiness and health, and shuts everything down in parallel.
//!
//! Data flow: config → supervisors → (events channel) → registry; callers reach
//! a plugin's service through [`Node::service`], the same trait either way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Mode, NodeConfig, Supervision};
use crate::host::HostConfig;
use crate::registry::{Event, PluginStatus, Registry};
use crate::service::Service;
use crate::supervisor::{LinkedService, Supervisor};

struct Plugin {
    name: String,
    service: Arc<dyn Service>,
    supervisor: Option<Supervisor>,
}

/// A running node.
pub struct Node {
    registry: Registry,
    plugins: Vec<Plugin>,
    supervision: Supervision,
    applier: Option<JoinHandle<()>>,
}

impl Node {
    /// Starts every plugin of `config` (out-of-process ones in the background).
    pub fn start(config: &NodeConfig) -> Node {
        let registry = Registry::new();
        let (events_tx, events_rx) = crossbeam_channel::unbounded::<Event>();
        let mut plugins = Vec::new();
        for p in &config.plugins {
            match &p.mode {
                Mode::Loopp { command, env } => {
                    registry.insert(PluginStatus::new(&p.name, p.kind.name, true));
                    let mut host = HostConfig::new(&p.name, command, p.kind.cookie.clone());
                    host.env = env.clone();
                    host.limits = p.limits.clone();
                    let sup =
                        Supervisor::spawn(host, config.supervision.clone(), events_tx.clone());
                    let service = Arc::new(LinkedService::new(
                        &p.name,
                        sup.link().clone(),
                        config.supervision.rpc_timeout,
                    ));
                    plugins.push(Plugin {
                        name: p.name.clone(),
                        service,
                        supervisor: Some(sup),
                    });
                }
                Mode::InProcess => {
                    registry.insert(PluginStatus::new(&p.name, p.kind.name, false));
                    let make = p
                        .kind
                        .in_process
                        .expect("config checked an in-process implementation exists");
                    log::info!("plugin {} running in-process", p.name);
                    plugins.push(Plugin {
                        name: p.name.clone(),
                        service: make(),
                        supervisor: None,
                    });
                }
            }
        }
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
            })
            .expect("spawn the registry thread");
        Node {
            registry,
            plugins,
            supervision: config.supervision.clone(),
            applier: Some(applier),
        }
    }

    /// The plugins' states.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A plugin's service, in-process or not: the same trait.
    pub fn service(&self, name: &str) -> Option<Arc<dyn Service>> {
        self.plugins
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.service.clone())
    }

    /// Runs `f` on every plugin's service in parallel, each bounded by the rpc
    /// timeout plus a margin: a hung plugin cannot stall the answer.
    fn each<T: Send + 'static>(
        &self,
        f: impl Fn(&dyn Service) -> T + Send + Sync + 'static,
    ) -> Vec<(String, Option<T>)> {
        let f = Arc::new(f);
        let bound = self.supervision.rpc_timeout + Duration::from_millis(200);
        let pending: Vec<_> = self
            .plugins
            .iter()
            .map(|p| {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let (svc, f) = (p.service.clone(), f.clone());
                let _ = std::thread::Builder::new()
                    .name(format!("ask-{}", p.name))
                    .spawn(move || {
                        let _ = tx.send(f(svc.as_ref()));
                    });
                (p.name.clone(), rx)
            })
            .collect();
        let deadline = Instant::now() + bound;
        pending
            .into_iter()
            .map(|(name, rx)| (name, rx.recv_deadline(deadline).ok()))
            .collect()
    }

    /// Node-wide health: every plugin's report with keys prefixed `NAME.`, plus
    /// `NAME` itself (empty when running and answering).
    pub fn health_report(&self) -> BTreeMap<String, String> {
        let bound = self.supervision.rpc_timeout;
        let mut out = BTreeMap::new();
        for (name, report) in self.each(|s| s.health_report()) {
            let status = self.registry.get(&name);
            let mut own = String::new();
            if let Some(st) = &status {
                if !st.healthy() {
                    own = format!("not healthy: {}", st.describe());
                }
            }
            match report {
                Some(r) => {
                    for (k, v) in r {
                        let key = if k == name {
                            name.clone()
                        } else {
                            format!("{name}.{k}")
                        };
                        if key == name && own.is_empty() {
                            own = v;
                        } else if key != name {
                            out.insert(key, v);
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
        let bound = self.supervision.rpc_timeout;
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

    /// Stops every plugin in parallel (Close, Shutdown, grace, SIGKILL) and
    /// waits for all of it. Returns how long it took.
    pub fn shutdown(mut self) -> Duration {
        let t0 = Instant::now();
        // Tell every supervisor at once, then close in-process services.
        for p in &mut self.plugins {
            if let Some(s) = &mut p.supervisor {
                s.request_stop();
            }
        }
        let in_process: Vec<_> = self
            .plugins
            .iter()
            .filter(|p| p.supervisor.is_none())
            .map(|p| p.service.clone())
            .collect();
        let (tx, rx) = crossbeam_channel::unbounded();
        for svc in in_process {
            let tx = tx.clone();
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
        for p in self.plugins.drain(..) {
            if let Some(s) = p.supervisor {
                s.stop();
            }
        }
        if let Some(a) = self.applier.take() {
            let _ = a.join();
        }
        t0.elapsed()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for p in &mut self.plugins {
            if let Some(s) = &mut p.supervisor {
                s.request_stop();
            }
        }
        // Supervisors join on drop.
        self.plugins.clear();
    }
}
