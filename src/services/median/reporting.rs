//! `loop.ReportingPlugin` over gRPC: [`server`] serves any
//! [`ReportingPlugin`]; [`ReportingPluginClient`] is the same trait over a
//! channel, each call with its phase's deadline.

use crate::goplugin::call::{Ctx, Sink};
use std::sync::Arc;
use std::time::Duration;

use grpcio::{RpcStatus, RpcStatusCode};
use protobuf::well_known_types::empty::Empty;
use protobuf::MessageField;

use super::plugin::ReportingPlugin;
use crate::goplugin::rpc;
use crate::proto::reporting::*;
use crate::proto::reporting_grpc;
use crate::services::wire::ReportTimestamp;

/// How long the server side lets one call run; the caller's deadline ends
/// the call for the caller earlier, this bounds the work behind it.
pub const SERVE_BOUND: Duration = Duration::from_secs(10);

/// Serves `plugin` as `loop.ReportingPlugin`.
pub fn server(plugin: Arc<dyn ReportingPlugin>) -> crate::goplugin::route::Offer {
    reporting_grpc::offer_reporting_plugin(Server(plugin))
}

#[derive(Clone)]
struct Server(Arc<dyn ReportingPlugin>);

fn ts_of(
    t: &MessageField<crate::proto::loop_types::ReportTimestamp>,
) -> Result<ReportTimestamp, RpcStatus> {
    let invalid = |e: String| rpc::status(RpcStatusCode::INVALID_ARGUMENT, e);
    match t.as_ref() {
        Some(t) => ReportTimestamp::from_wire(t).map_err(invalid),
        None => Err(invalid("request without reportTimestamp".into())),
    }
}

fn failed(e: String) -> RpcStatus {
    rpc::status(RpcStatusCode::UNKNOWN, e)
}

/// Answers one call of `plugin` with `args` (or their error, a request
/// that is not valid, at once): with the future `sent` gives, on the
/// completion-queue thread, when the plugin answers without blocking and
/// the lane has a place ([`rpc::async_place`]: the median plugin, whose
/// sources, contract and codec are the node's and the relayer's, over
/// gRPC); else with `run` on a pool thread.
fn serve<A, R, T>(
    ctx: &Ctx,
    sink: Sink<T>,
    plugin: Arc<dyn ReportingPlugin>,
    args: Result<A, RpcStatus>,
    sent: impl FnOnce(&dyn ReportingPlugin, &A) -> Option<rpc::Reply<R>>,
    run: impl FnOnce(&dyn ReportingPlugin, &A) -> Result<R, String> + Send + 'static,
    reply: fn(R) -> T,
) where
    A: Send + 'static,
    R: Send + 'static,
    T: Send + 'static,
{
    let args = match args {
        Ok(args) => args,
        Err(status) => return rpc::respond(ctx, sink, Err(status)),
    };
    let answer = move |r: Result<R, String>| r.map(reply).map_err(failed);
    if let Some(place) = rpc::async_place() {
        if let Some(sent) = sent(&*plugin, &args) {
            return rpc::respond_async(ctx, sink, place, async move { answer(sent.await) });
        }
    }
    rpc::respond_blocking(ctx, sink, move || answer(run(&*plugin, &args)));
}

impl reporting_grpc::ReportingPlugin for Server {
    fn query(&mut self, ctx: Ctx, req: QueryRequest, sink: Sink<QueryReply>) {
        serve(
            &ctx,
            sink,
            self.0.clone(),
            ts_of(&req.reportTimestamp),
            |p, ts| p.query_async(ts, SERVE_BOUND),
            |p, ts| p.query(ts, SERVE_BOUND),
            |query| QueryReply {
                query,
                ..Default::default()
            },
        );
    }

    fn observation(&mut self, ctx: Ctx, req: ObservationRequest, sink: Sink<ObservationReply>) {
        serve(
            &ctx,
            sink,
            self.0.clone(),
            ts_of(&req.reportTimestamp).map(|ts| (ts, req.query)),
            |p, (ts, q)| p.observation_async(ts, q, SERVE_BOUND),
            |p, (ts, q)| p.observation(ts, q, SERVE_BOUND),
            |observation| ObservationReply {
                observation,
                ..Default::default()
            },
        );
    }

    fn report(&mut self, ctx: Ctx, req: ReportRequest, sink: Sink<ReportReply>) {
        let args = (|| {
            let ts = ts_of(&req.reportTimestamp)?;
            let mut obs = Vec::with_capacity(req.observations.len());
            for o in &req.observations {
                let observer = u8::try_from(o.observer).map_err(|_| {
                    rpc::status(
                        RpcStatusCode::INVALID_ARGUMENT,
                        format!("observer {} is not a uint8", o.observer),
                    )
                })?;
                obs.push((observer, o.observation.clone()));
            }
            Ok((ts, req.query, obs))
        })();
        serve(
            &ctx,
            sink,
            self.0.clone(),
            args,
            |p, (ts, q, obs)| p.report_async(ts, q, obs, SERVE_BOUND),
            |p, (ts, q, obs)| p.report(ts, q, obs, SERVE_BOUND),
            |r| ReportReply {
                shouldReport: r.is_some(),
                report: r.unwrap_or_default(),
                ..Default::default()
            },
        );
    }

    fn should_accept_finalized_report(
        &mut self,
        ctx: Ctx,
        req: ShouldAcceptFinalizedReportRequest,
        sink: Sink<ShouldAcceptFinalizedReportReply>,
    ) {
        serve(
            &ctx,
            sink,
            self.0.clone(),
            ts_of(&req.reportTimestamp).map(|ts| (ts, req.report)),
            |p, (ts, r)| p.should_accept_finalized_report_async(ts, r, SERVE_BOUND),
            |p, (ts, r)| p.should_accept_finalized_report(ts, r, SERVE_BOUND),
            |yes| ShouldAcceptFinalizedReportReply {
                shouldAccept: yes,
                ..Default::default()
            },
        );
    }

    fn should_transmit_accepted_report(
        &mut self,
        ctx: Ctx,
        req: ShouldTransmitAcceptedReportRequest,
        sink: Sink<ShouldTransmitAcceptedReportReply>,
    ) {
        serve(
            &ctx,
            sink,
            self.0.clone(),
            ts_of(&req.reportTimestamp).map(|ts| (ts, req.report)),
            |p, (ts, r)| p.should_transmit_accepted_report_async(ts, r, SERVE_BOUND),
            |p, (ts, r)| p.should_transmit_accepted_report(ts, r, SERVE_BOUND),
            |yes| ShouldTransmitAcceptedReportReply {
                shouldTransmit: yes,
                ..Default::default()
            },
        );
    }

    fn close(&mut self, ctx: Ctx, _req: Empty, sink: Sink<Empty>) {
        let p = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            p.close().map(|()| Empty::new()).map_err(failed)
        });
    }
}

/// A [`ReportingPlugin`] over gRPC.
pub struct ReportingPluginClient {
    name: String,
    client: reporting_grpc::ReportingPluginClient,
    _remote: Option<Arc<crate::services::resource::Remote>>,
}

impl ReportingPluginClient {
    /// The plugin instance served on `channel`, named `name` in errors and
    /// metrics.
    pub fn new(name: &str, channel: crate::goplugin::route::Conn) -> ReportingPluginClient {
        ReportingPluginClient {
            name: name.to_string(),
            client: reporting_grpc::ReportingPluginClient::new(channel),
            _remote: None,
        }
    }

    /// Keeps the remote object alive while this client lives (see
    /// [`crate::services::resource::Remote`]).
    pub fn holding(mut self, remote: std::sync::Arc<crate::services::resource::Remote>) -> Self {
        self._remote = Some(remote);
        self
    }

    fn call<T>(
        &self,
        method: &'static str,
        f: impl FnOnce() -> grpcio::Result<T>,
    ) -> Result<T, String> {
        rpc::observed(&self.name, method, f)
    }

    /// A call sent without waiting, counted in the metrics when it ends.
    fn send<T: Send + Unpin + 'static, R: Send + 'static>(
        &self,
        method: &'static str,
        start: impl FnOnce(
            &reporting_grpc::ReportingPluginClient,
        ) -> grpcio::Result<crate::goplugin::unary::Unary<T>>,
        answer: impl FnOnce(T) -> R + Send + 'static,
    ) -> Option<rpc::Reply<R>> {
        let reply = rpc::observed_async(&self.name, method, || start(&self.client));
        Some(Box::pin(async move { reply.await.map(answer) }))
    }
}

/// Waits here for a call a client sent.
fn wait<T>(sent: Option<rpc::Reply<T>>) -> Result<T, String> {
    futures_executor::block_on(sent.expect("the client sends every call"))
}

/// Every phase's call is sent without waiting (`<call>_async`); the
/// blocking methods wait for the same calls here.
impl ReportingPlugin for ReportingPluginClient {
    super::plugin::blocking_phases_wait_for_futures!(wait);

    fn close(&self) -> Result<(), String> {
        // Close has no phase of its own; one second is the LOOP host's bound.
        self.call("/loop.ReportingPlugin/Close", || {
            self.client.close(&Empty::new(), Duration::from_secs(1))
        })
        .map(|_| ())
    }

    fn spawner(&self) -> Option<rpc::Spawner> {
        Some(self.client.spawner())
    }

    fn query_async(&self, ts: &ReportTimestamp, deadline: Duration) -> Option<rpc::Reply<Vec<u8>>> {
        let req = QueryRequest {
            reportTimestamp: MessageField::some(ts.to_wire()),
            ..Default::default()
        };
        self.send(
            "/loop.ReportingPlugin/Query",
            |c| c.query_async(&req, deadline),
            |r| r.query,
        )
    }

    fn observation_async(
        &self,
        ts: &ReportTimestamp,
        query: &[u8],
        deadline: Duration,
    ) -> Option<rpc::Reply<Vec<u8>>> {
        let req = ObservationRequest {
            reportTimestamp: MessageField::some(ts.to_wire()),
            query: query.to_vec(),
            ..Default::default()
        };
        self.send(
            "/loop.ReportingPlugin/Observation",
            |c| c.observation_async(&req, deadline),
            |r| r.observation,
        )
    }

    fn report_async(
        &self,
        ts: &ReportTimestamp,
        query: &[u8],
        observations: &[(u8, Vec<u8>)],
        deadline: Duration,
    ) -> Option<rpc::Reply<Option<Vec<u8>>>> {
        let req = ReportRequest {
            reportTimestamp: MessageField::some(ts.to_wire()),
            query: query.to_vec(),
            observations: observations
                .iter()
                .map(|(o, b)| AttributedObservation {
                    observation: b.clone(),
                    observer: u32::from(*o),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        self.send(
            "/loop.ReportingPlugin/Report",
            |c| c.report_async(&req, deadline),
            |r| r.shouldReport.then_some(r.report),
        )
    }

    fn should_accept_finalized_report_async(
        &self,
        ts: &ReportTimestamp,
        report: &[u8],
        deadline: Duration,
    ) -> Option<rpc::Reply<bool>> {
        let req = ShouldAcceptFinalizedReportRequest {
            reportTimestamp: MessageField::some(ts.to_wire()),
            report: report.to_vec(),
            ..Default::default()
        };
        self.send(
            "/loop.ReportingPlugin/ShouldAcceptFinalizedReport",
            |c| c.should_accept_finalized_report_async(&req, deadline),
            |r| r.shouldAccept,
        )
    }

    fn should_transmit_accepted_report_async(
        &self,
        ts: &ReportTimestamp,
        report: &[u8],
        deadline: Duration,
    ) -> Option<rpc::Reply<bool>> {
        let req = ShouldTransmitAcceptedReportRequest {
            reportTimestamp: MessageField::some(ts.to_wire()),
            report: report.to_vec(),
            ..Default::default()
        };
        self.send(
            "/loop.ReportingPlugin/ShouldTransmitAcceptedReport",
            |c| c.should_transmit_accepted_report_async(&req, deadline),
            |r| r.shouldTransmit,
        )
    }
}
