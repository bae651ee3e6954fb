//! The one place the node keeps each plugin's state. Supervisors report
//! [`Event`]s over a channel; the node applies them here in order; everything
//! else (HTTP, health, the console) reads [`Registry::snapshot`].

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Where a plugin is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Being launched (spawn, handshake, first ping).
    Starting,
    /// Serving.
    Running,
    /// Waiting before the next start.
    Backoff,
    /// Stopped for good (node shutdown).
    Stopped,
}

impl State {
    /// Lower-case name: `starting`, `running`, `backoff`, `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "backoff",
            State::Stopped => "stopped",
        }
    }
}

/// What a supervisor reports.
#[derive(Clone, Debug)]
pub enum Event {
    /// Launching (attempt 0 is the first start; later ones are restarts).
    Starting {
        /// Plugin name.
        name: String,
        /// 0 for the first start.
        attempt: u64,
    },
    /// Serving after a successful start.
    Running {
        /// Plugin name.
        name: String,
        /// Its pid.
        pid: u32,
        /// Spawn to first successful ping.
        started_in: Duration,
    },
    /// A health check failed (it may recover).
    HealthFailed {
        /// Plugin name.
        name: String,
        /// Why.
        error: String,
    },
    /// The process ended or was ended; a restart follows after `delay`.
    Backoff {
        /// Plugin name.
        name: String,
        /// Exit status, if it ran.
        exit: Option<String>,
        /// Why it is not running.
        error: String,
        /// Until the next start.
        delay: Duration,
    },
    /// Its metrics port was taken by something else; it got a new one.
    MetricsPort {
        /// Plugin name.
        name: String,
        /// The new port.
        port: u16,
    },
    /// Stopped for good.
    Stopped {
        /// Plugin name.
        name: String,
        /// Exit status, if it ran.
        exit: Option<String>,
    },
}

impl Event {
    /// The plugin it is about.
    pub fn name(&self) -> &str {
        match self {
            Event::Starting { name, .. }
            | Event::Running { name, .. }
            | Event::HealthFailed { name, .. }
            | Event::Backoff { name, .. }
            | Event::MetricsPort { name, .. }
            | Event::Stopped { name, .. } => name,
        }
    }
}

/// One plugin's state.
#[derive(Clone, Debug)]
pub struct PluginStatus {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// `false` when it runs in the node's process.
    pub out_of_process: bool,
    /// Lifecycle state.
    pub state: State,
    /// Starts after the first.
    pub restarts: u64,
    /// Current pid while running.
    pub pid: Option<u32>,
    /// How its last process ended.
    pub last_exit: Option<String>,
    /// The last error (start failure, crash, failed health check).
    pub last_error: Option<String>,
    /// When it entered `Running` (for uptime).
    pub running_since: Option<Instant>,
    /// When a `Backoff` ends.
    pub next_start: Option<Instant>,
    /// The last restart delay chosen.
    pub last_delay: Option<Duration>,
    /// Health checks failed in a row.
    pub health_failures: u32,
    /// The port of its `/metrics` (LOOPPs), kept across restarts.
    pub metrics_port: Option<u16>,
}

impl PluginStatus {
    /// A fresh entry.
    pub fn new(name: &str, kind: &str, out_of_process: bool) -> PluginStatus {
        PluginStatus {
            name: name.to_string(),
            kind: kind.to_string(),
            out_of_process,
            state: if out_of_process {
                State::Starting
            } else {
                State::Running
            },
            restarts: 0,
            pid: (!out_of_process).then(std::process::id),
            last_exit: None,
            last_error: None,
            running_since: (!out_of_process).then(Instant::now),
            next_start: None,
            last_delay: None,
            health_failures: 0,
            metrics_port: None,
        }
    }

    /// Time in `Running`, if running.
    pub fn uptime(&self) -> Option<Duration> {
        self.running_since.map(|t| t.elapsed())
    }

    /// Whether it is running and its last health check passed.
    pub fn healthy(&self) -> bool {
        self.state == State::Running && self.health_failures == 0
    }

    /// One line for people: state, pid, restarts, last error.
    pub fn describe(&self) -> String {
        let mut s = self.state.as_str().to_string();
        if let Some(pid) = self.pid {
            s.push_str(&format!(", pid {pid}"));
        }
        if self.restarts > 0 {
            s.push_str(&format!(", {} restarts", self.restarts));
        }
        if let Some(e) = &self.last_error {
            s.push_str(&format!(", last error: {e}"));
        }
        s
    }
}

/// The registry; cheap to clone, shared by the node's threads.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<BTreeMap<String, PluginStatus>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a plugin.
    pub fn insert(&self, status: PluginStatus) {
        self.inner
            .write()
            .unwrap()
            .insert(status.name.clone(), status);
    }

    /// Applies a supervisor's event.
    pub fn apply(&self, event: &Event) {
        let mut map = self.inner.write().unwrap();
        let Some(p) = map.get_mut(event.name()) else {
            return;
        };
        match event {
            Event::Starting { attempt, .. } => {
                p.state = State::Starting;
                p.restarts = *attempt;
                p.pid = None;
                p.running_since = None;
                p.next_start = None;
            }
            Event::Running { pid, .. } => {
                p.state = State::Running;
                p.pid = Some(*pid);
                p.running_since = Some(Instant::now());
                p.health_failures = 0;
            }
            Event::HealthFailed { error, .. } => {
                p.health_failures += 1;
                p.last_error = Some(error.clone());
            }
            Event::Backoff {
                exit, error, delay, ..
            } => {
                p.state = State::Backoff;
                p.pid = None;
                p.running_since = None;
                if exit.is_some() {
                    p.last_exit = exit.clone();
                }
                p.last_error = Some(error.clone());
                p.next_start = Some(Instant::now() + *delay);
                p.last_delay = Some(*delay);
            }
            Event::MetricsPort { port, .. } => p.metrics_port = Some(*port),
            Event::Stopped { exit, .. } => {
                p.state = State::Stopped;
                p.pid = None;
                p.running_since = None;
                if exit.is_some() {
                    p.last_exit = exit.clone();
                }
            }
        }
    }

    /// Every plugin's state, sorted by name.
    pub fn snapshot(&self) -> Vec<PluginStatus> {
        self.inner.read().unwrap().values().cloned().collect()
    }

    /// One plugin's state.
    pub fn get(&self, name: &str) -> Option<PluginStatus> {
        self.inner.read().unwrap().get(name).cloned()
    }
}
