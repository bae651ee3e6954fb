//! The `loop.Service` API every LOOP plugin exposes (`Name`, `Close`, `Ready`,
//! `HealthReport`): one Rust trait, a gRPC server adapter for plugins and a gRPC
//! client adapter for hosts, so host code cannot tell an in-process service from
//! a plugin.

use crate::goplugin::call::{Ctx, Sink};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::goplugin::route::Conn as Channel;
use grpcio::RpcStatusCode;
use protobuf::well_known_types::empty::Empty;

use crate::goplugin::error::Error;
use crate::goplugin::host::Link;
use crate::goplugin::plugin::{Closer, Served};
use crate::goplugin::rpc;
use crate::proto::loop_service::{HealthReportReply, NameReply};
use crate::proto::loop_service_grpc;

/// A LOOP service. Errors are text, as on the wire.
pub trait Service: Send + Sync + 'static {
    /// The service's name.
    fn name(&self) -> String;
    /// Stops the service's work.
    fn close(&self) -> Result<(), String>;
    /// `Ok` when ready.
    fn ready(&self) -> Result<(), String>;
    /// Component name → error text (empty text: healthy).
    fn health_report(&self) -> BTreeMap<String, String>;
}

/// The `loop.Service` of a plugin whose real state lives in the objects a
/// host creates through it (a relayer, the median factory): always ready,
/// healthy under its name, nothing to close.
pub struct AlwaysReady(pub &'static str);

impl Service for AlwaysReady {
    fn name(&self) -> String {
        self.0.to_string()
    }

    fn close(&self) -> Result<(), String> {
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    fn health_report(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(self.0.to_string(), String::new())])
    }
}

/// A [`Service`] whose `close` runs at most once; later calls succeed at once.
pub struct CloseOnce {
    inner: Arc<dyn Service>,
    closed: std::sync::atomic::AtomicBool,
}

impl CloseOnce {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Service>) -> CloseOnce {
        CloseOnce {
            inner,
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Service for CloseOnce {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn close(&self) -> Result<(), String> {
        if self.closed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.close()
    }

    fn ready(&self) -> Result<(), String> {
        self.inner.ready()
    }

    fn health_report(&self) -> BTreeMap<String, String> {
        self.inner.health_report()
    }
}

impl Closer for CloseOnce {
    fn close(&self) -> Result<(), String> {
        Service::close(self)
    }
}

/// What a LOOP plugin serves: its `loop.Service` (closed once: by the
/// host's Close call, or when serving ends if the host, a Go host say,
/// never called it) and its own gRPC services.
pub fn served(svc: Arc<dyn Service>, grpc: Vec<crate::goplugin::route::Offer>) -> Served {
    let once = Arc::new(CloseOnce::new(svc));
    let mut all = vec![server(once.clone())];
    all.extend(grpc);
    Served {
        grpc: all,
        closer: Some(once),
    }
}

/// The gRPC service for a [`Service`], to register on a plugin's server.
pub fn server(svc: Arc<dyn Service>) -> crate::goplugin::route::Offer {
    loop_service_grpc::offer_service(ServiceServer(svc))
}

#[derive(Clone)]
struct ServiceServer(Arc<dyn Service>);

impl loop_service_grpc::Service for ServiceServer {
    fn name(&mut self, ctx: Ctx, _req: Empty, sink: Sink<NameReply>) {
        let svc = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            Ok(NameReply {
                name: svc.name(),
                ..Default::default()
            })
        });
    }

    fn close(&mut self, ctx: Ctx, _req: Empty, sink: Sink<Empty>) {
        let svc = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            svc.close()
                .map(|()| Empty::new())
                .map_err(|e| rpc::status(RpcStatusCode::INTERNAL, e))
        });
    }

    fn ready(&mut self, ctx: Ctx, _req: Empty, sink: Sink<Empty>) {
        let svc = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            svc.ready()
                .map(|()| Empty::new())
                .map_err(|e| rpc::status(RpcStatusCode::UNAVAILABLE, e))
        });
    }

    fn health_report(&mut self, ctx: Ctx, _req: Empty, sink: Sink<HealthReportReply>) {
        let svc = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            Ok(HealthReportReply {
                healthReport: svc.health_report().into_iter().collect(),
                ..Default::default()
            })
        });
    }
}

/// A [`Service`] reached over gRPC; every call has `timeout` as its deadline.
/// Transport failures surface as errors naming the plugin and the method.
#[derive(Clone)]
pub struct ServiceClient {
    plugin: String,
    client: loop_service_grpc::ServiceClient,
    timeout: Duration,
}

impl ServiceClient {
    /// A client for the plugin `plugin` on `channel`.
    pub fn new(plugin: &str, channel: Channel, timeout: Duration) -> ServiceClient {
        ServiceClient {
            plugin: plugin.to_string(),
            client: loop_service_grpc::ServiceClient::new(channel),
            timeout,
        }
    }

    fn err(&self, method: &'static str, e: &grpcio::Error) -> String {
        Error::rpc(&self.plugin, method, e).to_string()
    }

    /// Makes one call, recording it in the host's RPC metrics.
    fn call<T>(
        &self,
        method: &'static str,
        f: impl FnOnce() -> grpcio::Result<T>,
    ) -> Result<T, String> {
        rpc::observed(&self.plugin, method, f)
    }

    /// `Name`, with its error.
    pub fn try_name(&self) -> Result<String, String> {
        self.call("/loop.Service/Name", || {
            self.client.name(&Empty::new(), self.timeout)
        })
        .map(|r| r.name)
    }
}

impl Service for ServiceClient {
    fn name(&self) -> String {
        self.try_name().unwrap_or_else(|_| self.plugin.clone())
    }

    fn close(&self) -> Result<(), String> {
        self.call("/loop.Service/Close", || {
            self.client.close(&Empty::new(), self.timeout)
        })
        .map(|_| ())
    }

    fn ready(&self) -> Result<(), String> {
        self.call("/loop.Service/Ready", || {
            self.client.ready(&Empty::new(), self.timeout)
        })
        .map(|_| ())
    }

    fn health_report(&self) -> BTreeMap<String, String> {
        match self.client.health_report(&Empty::new(), self.timeout) {
            Ok(r) => r.healthReport.into_iter().collect(),
            Err(e) => BTreeMap::from([(
                self.plugin.clone(),
                self.err("/loop.Service/HealthReport", &e),
            )]),
        }
    }
}
/// A [`Service`] reached through a plugin's [`Link`] (kept current by its supervisor): every call
/// uses the current process, or fails fast while it is being replaced.
pub struct LinkedService {
    name: String,
    link: Link,
    timeout: Duration,
}

impl LinkedService {
    /// The service of plugin `name` through `link`, with `timeout` per call.
    pub fn new(name: &str, link: Link, timeout: Duration) -> LinkedService {
        LinkedService {
            name: name.to_string(),
            link,
            timeout,
        }
    }

    fn client(&self) -> std::result::Result<ServiceClient, String> {
        self.link
            .conn(&self.name)
            .map(|conn| ServiceClient::new(&self.name, conn, self.timeout))
            .map_err(|e| e.to_string())
    }
}

impl Service for LinkedService {
    fn name(&self) -> String {
        self.client()
            .map(|c| c.name())
            .unwrap_or_else(|_| self.name.clone())
    }

    fn close(&self) -> std::result::Result<(), String> {
        self.client()?.close()
    }

    fn ready(&self) -> std::result::Result<(), String> {
        self.client()?.ready()
    }

    fn health_report(&self) -> std::collections::BTreeMap<String, String> {
        match self.client() {
            Ok(c) => c.health_report(),
            Err(e) => std::collections::BTreeMap::from([(self.name.clone(), e)]),
        }
    }
}
