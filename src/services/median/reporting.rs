//! `loop.ReportingPlugin` over gRPC: [`server`] serves any
//! [`ReportingPlugin`]; [`ReportingPluginClient`] is the same trait over a
//! channel, each call with its phase's deadline.

use std::sync::Arc;
use std::time::Duration;

use grpcio::{RpcContext, RpcStatus, RpcStatusCode, UnarySink};
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

impl reporting_grpc::ReportingPlugin for Server {
    fn query(&mut self, ctx: RpcContext, req: QueryRequest, sink: UnarySink<QueryReply>) {
        let p = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let q = p
                .query(&ts_of(&req.reportTimestamp)?, SERVE_BOUND)
                .map_err(failed)?;
            Ok(QueryReply {
                query: q,
                ..Default::default()
            })
        });
    }

    fn observation(
        &mut self,
        ctx: RpcContext,
        req: ObservationRequest,
        sink: UnarySink<ObservationReply>,
    ) {
        let p = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let o = p
                .observation(&ts_of(&req.reportTimestamp)?, &req.query, SERVE_BOUND)
                .map_err(failed)?;
            Ok(ObservationReply {
                observation: o,
                ..Default::default()
            })
        });
    }

    fn report(&mut self, ctx: RpcContext, req: ReportRequest, sink: UnarySink<ReportReply>) {
        let p = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
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
            let r = p
                .report(&ts_of(&req.reportTimestamp)?, &req.query, &obs, SERVE_BOUND)
                .map_err(failed)?;
            Ok(ReportReply {
                shouldReport: r.is_some(),
                report: r.unwrap_or_default(),
                ..Default::default()
            })
        });
    }

    fn should_accept_finalized_report(
        &mut self,
        ctx: RpcContext,
        req: ShouldAcceptFinalizedReportRequest,
        sink: UnarySink<ShouldAcceptFinalizedReportReply>,
    ) {
        let p = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let yes = p
                .should_accept_finalized_report(
                    &ts_of(&req.reportTimestamp)?,
                    &req.report,
                    SERVE_BOUND,
                )
                .map_err(failed)?;
            Ok(ShouldAcceptFinalizedReportReply {
                shouldAccept: yes,
                ..Default::default()
            })
        });
    }

    fn should_transmit_accepted_report(
        &mut self,
        ctx: RpcContext,
        req: ShouldTransmitAcceptedReportRequest,
        sink: UnarySink<ShouldTransmitAcceptedReportReply>,
    ) {
        let p = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let yes = p
                .should_transmit_accepted_report(
                    &ts_of(&req.reportTimestamp)?,
                    &req.report,
                    SERVE_BOUND,
                )
                .map_err(failed)?;
            Ok(ShouldTransmitAcceptedReportReply {
                shouldTransmit: yes,
                ..Default::default()
            })
        });
    }

    fn close(&mut self, ctx: RpcContext, _req: Empty, sink: UnarySink<Empty>) {
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
}

impl ReportingPlugin for ReportingPluginClient {
    fn query(&self, ts: &ReportTimestamp, deadline: Duration) -> Result<Vec<u8>, String> {
        let req = QueryRequest {
            reportTimestamp: MessageField::some(ts.to_wire()),
            ..Default::default()
        };
        self.call("/loop.ReportingPlugin/Query", || {
            self.client.query(&req, deadline)
        })
        .map(|r| r.query)
    }

    fn observation(
        &self,
        ts: &ReportTimestamp,
        query: &[u8],
        deadline: Duration,
    ) -> Result<Vec<u8>, String> {
        let req = ObservationRequest {
            reportTimestamp: MessageField::some(ts.to_wire()),
            query: query.to_vec(),
            ..Default::default()
        };
        self.call("/loop.ReportingPlugin/Observation", || {
            self.client.observation(&req, deadline)
        })
        .map(|r| r.observation)
    }

    fn report(
        &self,
        ts: &ReportTimestamp,
        query: &[u8],
        observations: &[(u8, Vec<u8>)],
        deadline: Duration,
    ) -> Result<Option<Vec<u8>>, String> {
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
        self.call("/loop.ReportingPlugin/Report", || {
            self.client.report(&req, deadline)
        })
        .map(|r| r.shouldReport.then_some(r.report))
    }

    fn should_accept_finalized_report(
        &self,
        ts: &ReportTimestamp,
        report: &[u8],
        deadline: Duration,
    ) -> Result<bool, String> {
        let req = ShouldAcceptFinalizedReportRequest {
            reportTimestamp: MessageField::some(ts.to_wire()),
            report: report.to_vec(),
            ..Default::default()
        };
        self.call("/loop.ReportingPlugin/ShouldAcceptFinalizedReport", || {
            self.client.should_accept_finalized_report(&req, deadline)
        })
        .map(|r| r.shouldAccept)
    }

    fn should_transmit_accepted_report(
        &self,
        ts: &ReportTimestamp,
        report: &[u8],
        deadline: Duration,
    ) -> Result<bool, String> {
        let req = ShouldTransmitAcceptedReportRequest {
            reportTimestamp: MessageField::some(ts.to_wire()),
            report: report.to_vec(),
            ..Default::default()
        };
        self.call("/loop.ReportingPlugin/ShouldTransmitAcceptedReport", || {
            self.client.should_transmit_accepted_report(&req, deadline)
        })
        .map(|r| r.shouldTransmit)
    }

    fn close(&self) -> Result<(), String> {
        // Close has no phase of its own; one second is the LOOP host's bound.
        self.call("/loop.ReportingPlugin/Close", || {
            self.client.close(&Empty::new(), Duration::from_secs(1))
        })
        .map(|_| ())
    }

    fn ends_by_deadline(&self) -> bool {
        true
    }
}
