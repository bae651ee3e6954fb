//! One thread per out-of-process plugin that owns its process: start,
//! handshake, health checks, restart with exponential backoff and jitter,
//! graceful stop. A handle ([`Supervisor`]) and an actor thread, as in
//! rust-analyzer's flycheck.
//!
//! The actor reports [`Event`]s to the node and publishes the live connection
//! in a [`Link`], which clients read on every call: after a restart they use
//! the new process; meanwhile they fail fast with [`Error::Restarting`].
//!
//! Stopping: dropping the handle's stop sender disconnects the actor's stop
//! channel, which every wait in the actor (handshake included) selects on; the
//! actor then closes the service, kills the plugin (Shutdown, grace, SIGKILL)
//! and exits.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use crate::goplugin::error::Error;
use crate::goplugin::host::{Client, HostConfig, Link};
use crate::node::config::Supervision;
use crate::node::loopenv::METRICS_PORT_VAR;
use crate::node::ports::Ports;
use crate::node::registry::Event;
use crate::services::service::{Service, ServiceClient};

/// The handle of one plugin's supervisor thread. Dropping it stops the plugin.
pub struct Supervisor {
    name: String,
    link: Link,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts supervising the plugin `host.name`.
    pub fn spawn(host: HostConfig, sup: Supervision, events: Sender<Event>) -> Supervisor {
        Supervisor::spawn_with_link(host, sup, events, Link::default(), None)
    }

    /// As [`Supervisor::spawn`], publishing the connection in `link` (made
    /// beforehand so clients can hold it before the plugin starts). With
    /// `ports`, the plugin's `CL_PROMETHEUS_PORT` is checked before each start
    /// and replaced (from `ports`) if something else took it.
    pub fn spawn_with_link(
        host: HostConfig,
        sup: Supervision,
        events: Sender<Event>,
        link: Link,
        ports: Option<Arc<Ports>>,
    ) -> Supervisor {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        link.set(None, "starting");
        let name = host.name.clone();
        let actor = Actor {
            host,
            sup,
            events,
            stop: stop_rx,
            link: link.clone(),
            ports,
        };
        let thread = std::thread::Builder::new()
            .name(format!("sup-{name}"))
            .spawn(move || actor.run())
            .expect("spawn a supervisor thread");
        Supervisor {
            name,
            link,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The live connection, for clients.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Asks the supervisor to stop, without waiting.
    pub fn request_stop(&mut self) {
        self.stop.take();
    }

    /// Stops and waits for the thread (it bounds itself: close deadline plus
    /// shutdown grace plus reaping).
    pub fn stop(mut self) {
        self.request_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.request_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Actor {
    host: HostConfig,
    sup: Supervision,
    events: Sender<Event>,
    stop: Receiver<()>,
    link: Link,
    ports: Option<Arc<Ports>>,
}

/// Why a running plugin's watch ended.
enum Ended {
    Stop,
    Exited,
    Unhealthy(String),
}

/// Whether a call with deadline `timeout` that took `took` ran into its
/// deadline because this process could not run, rather than because the
/// other side did not answer: it ended later than its deadline by more
/// than the deadline itself (and at least 1 s), which gRPC's timers never
/// are while the process runs.
pub fn host_stalled(took: Duration, timeout: Duration) -> bool {
    took.saturating_sub(timeout) > timeout.max(Duration::from_secs(1))
}

/// Logs that `what` (a start, the supervision) of plugin `name` panicked,
/// and gives the error the plugin's status then shows.
fn panicked(name: &str, what: &str, payload: &(dyn std::any::Any + Send)) -> String {
    let message = crate::goplugin::error::panic_message(payload);
    log::error!("plugin {name}: its {what} panicked ({message}); starting it again");
    format!("its {what} panicked: {message}")
}

/// A restart delay: `initial * 2^n`, capped, with ±20% jitter (never past the cap).
pub fn backoff_delay(sup: &Supervision, failures: u32) -> Duration {
    let base = sup
        .backoff_initial
        .saturating_mul(1u32 << failures.min(20))
        .min(sup.backoff_max);
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let factor = 0.8 + (r % 4001) as f64 / 10_000.0;
    base.mul_f64(factor).min(sup.backoff_max)
}

impl Actor {
    fn send(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// Before a start: if the plugin's metrics port is no longer free,
    /// take a new one (the old one is someone else's now).
    fn check_metrics_port(&mut self) {
        let Some(ports) = &self.ports else { return };
        let Some(slot) = self
            .host
            .env
            .iter_mut()
            .find(|(k, _)| k == METRICS_PORT_VAR)
        else {
            return;
        };
        let Some(old) = slot.1.to_str().and_then(|v| v.parse::<u16>().ok()) else {
            return;
        };
        if crate::node::ports::is_free(old) {
            return;
        }
        match ports.allocate() {
            Ok(new) => {
                log::warn!(
                    "plugin {}: metrics port {old} was taken by another process; using {new}",
                    self.host.name
                );
                ports.release(old);
                slot.1 = new.to_string().into();
                self.send(Event::MetricsPort {
                    name: self.host.name.clone(),
                    port: new,
                });
            }
            Err(e) => log::warn!(
                "plugin {}: metrics port {old} is taken and {e}",
                self.host.name
            ),
        }
    }

    fn run(mut self) {
        let name = self.host.name.clone();
        let mut attempt = 0u64;
        let mut failures = 0u32;
        loop {
            self.check_metrics_port();
            self.send(Event::Starting {
                name: name.clone(),
                attempt,
            });
            attempt += 1;
            let mut host = self.host.clone();
            host.start_timeout = self.sup.start_timeout;
            host.rpc_timeout = self.sup.rpc_timeout;
            host.shutdown_grace = self.sup.shutdown_grace;
            // A panic while starting (a bug here or in a library under the
            // first health check) is a failed start: unwinding out of this
            // thread would leave the plugin with nobody to start it again.
            let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Client::start_cancellable(&host, &self.stop)
            }));
            let (exit, error) = match started {
                Err(payload) => (None, panicked(&name, "start", &*payload)),
                Ok(Err(Error::Cancelled { .. })) => break self.stopped(None),
                Ok(Err(e)) => (None, e.to_string()),
                Ok(Ok(mut client)) => {
                    self.link
                        .set(Some((client.conn().clone(), client.broker().clone())), "");
                    self.send(Event::Running {
                        name: name.clone(),
                        pid: client.pid(),
                        started_in: client.started_in(),
                    });
                    let since = Instant::now();
                    let ended = self.watch_unless_panic(&client);
                    self.link.set(None, "its process is being replaced");
                    if let Ended::Stop = ended {
                        self.close(&client);
                        let exit = client.kill();
                        break self.stopped(exit.status.map(|s| s.to_string()));
                    }
                    if since.elapsed() >= self.sup.stable_after {
                        failures = 0;
                    }
                    let exit = client.kill();
                    let status = exit.status.map(|s| s.to_string());
                    let error = match ended {
                        Ended::Unhealthy(e) => format!("unhealthy: {e}"),
                        _ => format!(
                            "exited unexpectedly ({})",
                            status.as_deref().unwrap_or("unknown status")
                        ),
                    };
                    (status, error)
                }
            };
            let delay = backoff_delay(&self.sup, failures);
            failures = failures.saturating_add(1);
            // Start errors name the plugin already.
            let prefix = format!("plugin {name}: ");
            log::warn!(
                "{prefix}{}; restarting in {delay:?}",
                error.strip_prefix(&prefix).unwrap_or(&error)
            );
            self.link.set(
                None,
                &format!("next start in {delay:?}; last error: {error}"),
            );
            self.send(Event::Backoff {
                name: name.clone(),
                exit,
                error,
                delay,
            });
            select! {
                recv(self.stop) -> _ => break self.stopped(None),
                recv(crossbeam_channel::after(delay)) -> _ => {}
            }
        }
    }

    fn stopped(&self, exit: Option<String>) {
        self.link.set(None, "stopped");
        self.send(Event::Stopped {
            name: self.host.name.clone(),
            exit,
        });
    }

    /// [`Self::watch`]; a panic while watching (a bug here or in a library
    /// under a health check) makes the plugin unhealthy, so it is replaced
    /// as after a failed check. Unwinding out of this thread would drop the
    /// client, shutting the plugin down with nobody left to start it again.
    fn watch_unless_panic(&self, client: &Client) -> Ended {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.watch(client)))
            .unwrap_or_else(|payload| {
                Ended::Unhealthy(panicked(&self.host.name, "supervision", &*payload))
            })
    }

    /// Watches a running plugin until it exits, fails its health checks, or
    /// the supervisor is told to stop.
    fn watch(&self, client: &Client) -> Ended {
        let exited = client.process().exited();
        let ticker = crossbeam_channel::tick(self.sup.health_interval);
        let mut failed = 0u32;
        loop {
            select! {
                recv(self.stop) -> _ => return Ended::Stop,
                recv(exited) -> _ => return Ended::Exited,
                recv(ticker) -> _ => match self.check(client) {
                    Ok(()) => failed = 0,
                    Err(_) if client.process().status().is_some() => return Ended::Exited,
                    Err(e) => {
                        failed += 1;
                        self.send(Event::HealthFailed { name: self.host.name.clone(), error: e.to_string() });
                        if failed >= self.sup.health_failures {
                            return Ended::Unhealthy(e.to_string());
                        }
                    }
                },
            }
        }
    }

    /// One health check. A check that failed long after its deadline says
    /// more about this process than about the plugin: the node was not
    /// running (SIGSTOPped, suspended, starved) while the deadline passed,
    /// and the plugin's answer may have come meanwhile. That one is not
    /// counted: the plugin gets a fresh check at once, which counts.
    fn check(&self, client: &Client) -> Result<(), Error> {
        let timeout = self.sup.health_timeout;
        let t0 = Instant::now();
        let first = client.ping_within(timeout);
        let took = t0.elapsed();
        if first.is_err() && host_stalled(took, timeout) && client.process().status().is_none() {
            log::info!(
                "plugin {}: a health check with a {timeout:?} deadline ended after {took:?}: the node was not running meanwhile (stopped?); checking again",
                self.host.name
            );
            return client.ping_within(timeout);
        }
        first
    }

    /// `loop.Service/Close` with the rpc deadline; plugins without it are fine.
    fn close(&self, client: &Client) {
        let svc = ServiceClient::new(&self.host.name, client.conn().clone(), self.sup.rpc_timeout);
        if let Err(e) = svc.close() {
            if !e.contains("UNIMPLEMENTED") {
                log::warn!("plugin {}: close: {e}", self.host.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_check_far_past_its_deadline_is_the_hosts_stall() {
        let ms = Duration::from_millis;
        assert!(!host_stalled(ms(300), ms(300)));
        assert!(!host_stalled(ms(1200), ms(300)), "late, but not that late");
        assert!(host_stalled(ms(10_300), ms(300)), "a 10 s SIGSTOP");
        assert!(!host_stalled(ms(9_000), ms(5_000)));
        assert!(host_stalled(ms(10_001), ms(5_000)));
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        let sup = Supervision {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            ..Supervision::default()
        };
        for n in 0..30 {
            let d = backoff_delay(&sup, n);
            let base = Duration::from_millis(100)
                .saturating_mul(1 << n.min(20))
                .min(sup.backoff_max);
            assert!(
                d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2).min(sup.backoff_max),
                "n={n}: {d:?}"
            );
        }
        assert!(backoff_delay(&sup, 40) <= sup.backoff_max);
        assert!(backoff_delay(&sup, 40) >= sup.backoff_max.mul_f64(0.8));
    }
}
