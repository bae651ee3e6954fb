//! [`PluginMedian`] and [`ReportingPluginFactory`] over gRPC, both
//! directions, through the go-plugin broker.
//!
//! Plugin side: [`plugin_median_server`] serves any [`PluginMedian`].
//! `NewMedianFactory` dials the host's provider, data sources and error log
//! by broker id, wraps them in client adapters, asks the implementation for
//! a factory and serves it on a new id; `NewReportingPlugin` serves each
//! plugin it makes ([`super::reporting::server`]) on a new id.
//!
//! Host side: [`PluginMedianClient`] implements [`PluginMedian`] through a
//! supervisor [`Link`]: it serves the provider (any implementation: the
//! node re-serves a LOOPP relayer's provider this way), the data sources and
//! the error log on the host's broker, for as long as the factory client it
//! returns lives. A provider another routing process serves as one object
//! ([`MedianProvider::remote`](crate::services::relay::MedianProvider::remote))
//! is forwarded to a routing plugin instead: the plugin calls it there.

use crate::goplugin::call::{Ctx, Sink};
use std::sync::Arc;
use std::time::Duration;

use grpcio::RpcStatusCode;
use protobuf::MessageField;

use super::deadlines::MaxDurations;
use super::factory::{
    check_deviation_func, MedianFactoryArgs, PluginMedian, ReportingPluginConfig,
    ReportingPluginFactory, ReportingPluginInfo,
};
use super::plugin::ReportingPlugin;
use super::reporting::ReportingPluginClient;
use crate::goplugin::broker::{Broker, Lease, DEFAULT_DIAL_TIMEOUT};
use crate::goplugin::host::Link;
use crate::goplugin::rpc;
use crate::proto::median_plugin as pb;
use crate::proto::median_plugin_grpc as svc;
use crate::services::datasource::DataSourceClient;
use crate::services::keystore::ErrorLog;
use crate::services::resource::Remote;

/// Deadline of the plugin's calls to the host's provider and error log.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(1);

fn unavailable(e: impl std::fmt::Display) -> grpcio::RpcStatus {
    rpc::status(RpcStatusCode::UNAVAILABLE, e.to_string())
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A config to the wire (durations in nanoseconds).
pub fn config_to_wire(c: &ReportingPluginConfig) -> pb::ReportingPluginConfig {
    pb::ReportingPluginConfig {
        configDigest: c.config_digest.clone(),
        oracleID: u32::from(c.oracle_id),
        n: u32::from(c.n),
        f: u32::from(c.f),
        onchainConfig: c.onchain_config.clone(),
        offchainConfig: c.offchain_config.clone(),
        estimatedRoundInterval: ns(c.estimated_round_interval),
        maxDurationQuery: ns(c.max.query),
        maxDurationObservation: ns(c.max.observation),
        maxDurationReport: ns(c.max.report),
        maxDurationShouldAcceptFinalizedReport: ns(c.max.should_accept),
        maxDurationShouldTransmitAcceptedReport: ns(c.max.should_transmit),
        ..Default::default()
    }
}

/// A config from the wire; counts must fit a uint8 and durations must not
/// be negative.
pub fn config_from_wire(c: &pb::ReportingPluginConfig) -> Result<ReportingPluginConfig, String> {
    let u8_of =
        |what: &str, v: u32| u8::try_from(v).map_err(|_| format!("{what} {v} is not a uint8"));
    let dur = |what: &str, v: i64| {
        u64::try_from(v)
            .map(Duration::from_nanos)
            .map_err(|_| format!("{what} {v} ns is negative"))
    };
    Ok(ReportingPluginConfig {
        config_digest: c.configDigest.clone(),
        oracle_id: u8_of("oracleID", c.oracleID)?,
        n: u8_of("n", c.n)?,
        f: u8_of("f", c.f)?,
        onchain_config: c.onchainConfig.clone(),
        offchain_config: c.offchainConfig.clone(),
        estimated_round_interval: dur("estimatedRoundInterval", c.estimatedRoundInterval)?,
        max: MaxDurations {
            query: dur("maxDurationQuery", c.maxDurationQuery)?,
            observation: dur("maxDurationObservation", c.maxDurationObservation)?,
            report: dur("maxDurationReport", c.maxDurationReport)?,
            should_accept: dur(
                "maxDurationShouldAcceptFinalizedReport",
                c.maxDurationShouldAcceptFinalizedReport,
            )?,
            should_transmit: dur(
                "maxDurationShouldTransmitAcceptedReport",
                c.maxDurationShouldTransmitAcceptedReport,
            )?,
        },
    })
}

/// Serves `median` as `loop.PluginMedian` for a plugin whose broker is
/// `broker`.
pub fn plugin_median_server(
    broker: Broker,
    median: Arc<dyn PluginMedian>,
) -> crate::goplugin::route::Offer {
    svc::offer_plugin_median(PluginMedianServer { broker, median })
}

#[derive(Clone)]
struct PluginMedianServer {
    broker: Broker,
    median: Arc<dyn PluginMedian>,
}

impl svc::PluginMedian for PluginMedianServer {
    fn new_median_factory(
        &mut self,
        ctx: Ctx,
        req: pb::NewMedianFactoryRequest,
        sink: Sink<pb::NewMedianFactoryReply>,
    ) {
        let this = self.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let dial = |what: &str, id: u32| {
                this.broker
                    .dial(id, DEFAULT_DIAL_TIMEOUT)
                    .map_err(|e| unavailable(format!("{what} (broker id {id}): {e}")))
            };
            let provider = crate::services::relay::grpc::median_provider_client(
                "median-provider",
                dial("median provider", req.medianProviderID)?,
                PROVIDER_TIMEOUT,
                None,
            );
            let source = Arc::new(DataSourceClient::new(
                "data-source",
                dial("data source", req.dataSourceID)?,
            ));
            let juels = Arc::new(DataSourceClient::new(
                "juels-data-source",
                dial(
                    "juels-per-fee-coin data source",
                    req.juelsPerFeeCoinDataSourceID,
                )?,
            ));
            let gas_price = Arc::new(DataSourceClient::new(
                "gas-price-data-source",
                dial("gas price data source", req.gasPriceSubunitsDataSourceID)?,
            ));
            let errors: Arc<dyn ErrorLog> = match req.errorLogID {
                // A Go host always sends one; without it, errors go to our log.
                0 => Arc::new(crate::services::keystore::LogErrors {
                    source: "median".into(),
                }),
                id => Arc::new(crate::services::keystore::ErrorLogClient::new(
                    dial("error log", id)?,
                    PROVIDER_TIMEOUT,
                )),
            };
            let deviation_func = req.deviationFuncDefinition.clone();
            if let Some(def) = &deviation_func {
                check_deviation_func(def)
                    .map_err(|e| rpc::status(RpcStatusCode::INVALID_ARGUMENT, e))?;
            }
            let factory = this
                .median
                .new_median_factory(MedianFactoryArgs {
                    provider,
                    contract_id: req.contractID.clone(),
                    data_source: source,
                    juels_per_fee_coin: juels,
                    gas_price_subunits: gas_price,
                    error_log: errors,
                    deviation_func,
                })
                .map_err(|e| rpc::status(RpcStatusCode::INVALID_ARGUMENT, e))?;
            let id = crate::services::resource::serve(
                &this.broker,
                "reporting plugin factory",
                vec![svc::offer_reporting_plugin_factory(FactoryServer {
                    broker: this.broker.clone(),
                    factory,
                })],
            )
            .map_err(unavailable)?;
            Ok(pb::NewMedianFactoryReply {
                reportingPluginFactoryID: id,
                ..Default::default()
            })
        });
    }
}

#[derive(Clone)]
struct FactoryServer {
    broker: Broker,
    factory: Arc<dyn ReportingPluginFactory>,
}

impl svc::ReportingPluginFactory for FactoryServer {
    fn new_reporting_plugin(
        &mut self,
        ctx: Ctx,
        req: pb::NewReportingPluginRequest,
        sink: Sink<pb::NewReportingPluginReply>,
    ) {
        let this = self.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let invalid = |e: String| rpc::status(RpcStatusCode::INVALID_ARGUMENT, e);
            let cfg = req
                .reportingPluginConfig
                .as_ref()
                .ok_or_else(|| invalid("no reportingPluginConfig".into()))?;
            let (plugin, info) = this
                .factory
                .new_reporting_plugin(&config_from_wire(cfg).map_err(invalid)?)
                .map_err(invalid)?;
            let id = crate::services::resource::serve(
                &this.broker,
                "reporting plugin",
                vec![super::reporting::server(plugin)],
            )
            .map_err(unavailable)?;
            Ok(pb::NewReportingPluginReply {
                reportingPluginID: id,
                reportingPluginInfo: MessageField::some(pb::ReportingPluginInfo {
                    name: info.name,
                    uniqueReports: info.unique_reports,
                    reportingPluginLimits: MessageField::some(pb::ReportingPluginLimits {
                        maxQueryLength: info.max_query_length,
                        maxObservationLength: info.max_observation_length,
                        maxReportLength: info.max_report_length,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        });
    }
}

/// A median LOOPP's `loop.PluginMedian`, as a [`PluginMedian`]: each
/// `new_median_factory` goes to the plugin's current process.
pub struct PluginMedianClient {
    name: String,
    link: Link,
    timeout: Duration,
}

impl PluginMedianClient {
    /// The median plugin `name` behind `link`; every call has `timeout`.
    pub fn new(name: &str, link: Link, timeout: Duration) -> PluginMedianClient {
        PluginMedianClient {
            name: name.to_string(),
            link,
            timeout,
        }
    }
}

impl PluginMedian for PluginMedianClient {
    fn new_median_factory(
        &self,
        args: MedianFactoryArgs,
    ) -> Result<Arc<dyn ReportingPluginFactory>, String> {
        let channel = self.link.conn(&self.name).map_err(|e| e.to_string())?;
        let broker = self.link.broker(&self.name).map_err(|e| e.to_string())?;
        // What is served for the plugin runs in its lane (its bound).
        let _lane = broker.enter_lane();
        let mut lease = broker.lease();
        // A LOOPP relayer's provider goes to a routing median plugin as
        // it is: the plugin calls the relayer, not this process (unless
        // this process's LOOPP_BROKER_FORWARD is 0). Anything else is
        // served here.
        let forwarded = match &args.provider.remote {
            Some(at) if broker.routed() && crate::goplugin::route::host_forwards() => Some(
                lease
                    .forward(at)
                    .map_err(|e| format!("{}: forwarding the provider: {e}", self.name))?,
            ),
            _ => None,
        };
        let mut serve = |what: &str, services| {
            lease
                .serve(services)
                .map_err(|e| format!("{}: serving the {what}: {e}", self.name))
        };
        let provider_id = match forwarded {
            Some(id) => id,
            None => serve(
                "provider",
                crate::services::relay::grpc::median_provider_services(&args.provider),
            )?,
        };
        // Every id is served, as a Go host serves them: a Go median plugin
        // dials all five and fails on a missing one (never send 0).
        let req = pb::NewMedianFactoryRequest {
            medianProviderID: provider_id,
            contractID: args.contract_id.clone(),
            dataSourceID: serve(
                "data source",
                vec![crate::services::datasource::server(args.data_source)],
            )?,
            juelsPerFeeCoinDataSourceID: serve(
                "juels data source",
                vec![crate::services::datasource::server(args.juels_per_fee_coin)],
            )?,
            gasPriceSubunitsDataSourceID: serve(
                "gas price data source",
                vec![crate::services::datasource::server(args.gas_price_subunits)],
            )?,
            errorLogID: serve(
                "error log",
                vec![crate::services::keystore::error_log_server(args.error_log)],
            )?,
            deviationFuncDefinition: args.deviation_func,
            ..Default::default()
        };
        let r = rpc::observed(&self.name, "/loop.PluginMedian/NewMedianFactory", || {
            svc::PluginMedianClient::new(channel).new_median_factory(&req, self.timeout)
        })?;
        let ch = broker
            .dial(r.reportingPluginFactoryID, self.timeout)
            .map_err(|e| {
                format!(
                    "{}: the reporting plugin factory (broker id {}): {e}",
                    self.name, r.reportingPluginFactoryID
                )
            })?;
        Ok(Arc::new(ReportingPluginFactoryClient {
            name: self.name.clone(),
            broker,
            client: svc::ReportingPluginFactoryClient::new(ch.clone()),
            timeout: self.timeout,
            _remote: Remote::new(&self.name, ch),
            _lease: lease,
        }))
    }
}

/// A remote `loop.ReportingPluginFactory`, as a [`ReportingPluginFactory`].
/// Holds what the host serves to the plugin (provider, data sources, error
/// log) until dropped, then closes the remote factory.
pub struct ReportingPluginFactoryClient {
    name: String,
    broker: Broker,
    client: svc::ReportingPluginFactoryClient,
    timeout: Duration,
    _remote: Remote,
    _lease: Lease,
}

impl ReportingPluginFactory for ReportingPluginFactoryClient {
    fn new_reporting_plugin(
        &self,
        config: &ReportingPluginConfig,
    ) -> Result<(Arc<dyn ReportingPlugin>, ReportingPluginInfo), String> {
        let req = pb::NewReportingPluginRequest {
            reportingPluginConfig: MessageField::some(config_to_wire(config)),
            ..Default::default()
        };
        let r = rpc::observed(
            &self.name,
            "/loop.ReportingPluginFactory/NewReportingPlugin",
            || self.client.new_reporting_plugin(&req, self.timeout),
        )?;
        let ch = self
            .broker
            .dial(r.reportingPluginID, self.timeout)
            .map_err(|e| {
                format!(
                    "{}: reporting plugin (broker id {}): {e}",
                    self.name, r.reportingPluginID
                )
            })?;
        let info = r.reportingPluginInfo.get_or_default();
        let limits = info.reportingPluginLimits.get_or_default();
        let remote = Arc::new(Remote::new(&self.name, ch.clone()));
        Ok((
            Arc::new(ReportingPluginClient::new(&self.name, ch).holding(remote)),
            ReportingPluginInfo {
                name: info.name.clone(),
                unique_reports: info.uniqueReports,
                max_query_length: limits.maxQueryLength,
                max_observation_length: limits.maxObservationLength,
                max_report_length: limits.maxReportLength,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_cross_the_wire_unchanged_and_bad_ones_are_named() {
        let ms = Duration::from_millis;
        let c = ReportingPluginConfig {
            config_digest: vec![1; 32],
            oracle_id: 3,
            n: 4,
            f: 1,
            onchain_config: b"on".to_vec(),
            offchain_config: b"off".to_vec(),
            estimated_round_interval: ms(1500),
            max: MaxDurations {
                query: ms(1),
                observation: ms(2),
                report: ms(3),
                should_accept: ms(4),
                should_transmit: Duration::from_nanos(5),
            },
        };
        let wire = config_to_wire(&c);
        assert_eq!(wire.maxDurationObservation, 2_000_000, "nanoseconds");
        assert_eq!(config_from_wire(&wire), Ok(c));
        let mut bad = wire.clone();
        bad.maxDurationReport = -1;
        assert_eq!(
            config_from_wire(&bad),
            Err("maxDurationReport -1 ns is negative".into())
        );
        let mut bad = wire;
        bad.n = 256;
        assert_eq!(config_from_wire(&bad), Err("n 256 is not a uint8".into()));
    }
}
