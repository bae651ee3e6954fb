//! The median plugin's entry points over gRPC: `loop.PluginMedian` (dial the
//! host's sub-services, serve a factory) and `loop.ReportingPluginFactory`
//! (serve one [`MedianPlugin`] per oracle config), all through the broker.
//!
//! Config encodings (devchain's, until the OnchainConfigCodec service exists):
//! onchain config `{"min": "<i128>", "max": "<i128>"}`, offchain config
//! `{"deviationPpb": u64, "heartbeatSeconds": u64}`, as JSON.

use std::sync::Arc;
use std::time::Duration;

use grpcio::{RpcContext, RpcStatusCode, UnarySink};
use protobuf::MessageField;
use serde::{Deserialize, Serialize};

use super::contract::MedianContractClient;
use super::math::Bounds;
use super::plugin::{FeedSettings, MedianPlugin};
use crate::broker::{Broker, DEFAULT_DIAL_TIMEOUT};
use crate::datasource::DataSourceClient;
use crate::proto::median_plugin::*;
use crate::proto::median_plugin_grpc;
use crate::rpc;

/// Deadline of the plugin's calls to the contract view.
pub const CONTRACT_TIMEOUT: Duration = Duration::from_secs(1);

/// The onchain config: the contract's bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnchainConfig {
    /// Smallest valid median, decimal.
    pub min: String,
    /// Largest valid median, decimal.
    pub max: String,
}

/// The offchain config: when to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OffchainConfig {
    /// Deviation threshold, parts per billion.
    pub deviation_ppb: u64,
    /// Heartbeat, seconds.
    pub heartbeat_seconds: u64,
}

/// Serves `loop.PluginMedian` for a plugin whose broker is `broker`.
pub fn plugin_median(broker: Broker) -> grpcio::Service {
    median_plugin_grpc::create_plugin_median(PluginMedianServer { broker })
}

#[derive(Clone)]
struct PluginMedianServer {
    broker: Broker,
}

fn unavailable(e: impl std::fmt::Display) -> grpcio::RpcStatus {
    rpc::status(RpcStatusCode::UNAVAILABLE, e.to_string())
}

impl median_plugin_grpc::PluginMedian for PluginMedianServer {
    fn new_median_factory(
        &mut self,
        ctx: RpcContext,
        req: NewMedianFactoryRequest,
        sink: UnarySink<NewMedianFactoryReply>,
    ) {
        let broker = self.broker.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let dial = |what: &str, id: u32| {
                broker
                    .dial(id, DEFAULT_DIAL_TIMEOUT)
                    .map_err(|e| unavailable(format!("{what} (broker id {id}): {e}")))
            };
            let provider = dial("median provider", req.medianProviderID)?;
            let factory = Factory {
                broker: broker.clone(),
                codec: Arc::new(crate::devchain::provider::ProviderClient::new(
                    provider.clone(),
                    CONTRACT_TIMEOUT,
                )),
                contract: Arc::new(MedianContractClient::new(
                    "median-provider",
                    provider,
                    CONTRACT_TIMEOUT,
                )),
                source: Arc::new(DataSourceClient::new(
                    "data-source",
                    dial("data source", req.dataSourceID)?,
                )),
                juels: Arc::new(DataSourceClient::new(
                    "juels-data-source",
                    dial(
                        "juels-per-fee-coin data source",
                        req.juelsPerFeeCoinDataSourceID,
                    )?,
                )),
                errors: match req.errorLogID {
                    0 => None,
                    id => Some(Arc::new(crate::keystore::ErrorLogClient::new(
                        dial("error log", id)?,
                        CONTRACT_TIMEOUT,
                    ))),
                },
            };
            let id = broker.next_id();
            broker
                .serve(
                    id,
                    vec![median_plugin_grpc::create_reporting_plugin_factory(factory)],
                )
                .map_err(unavailable)?;
            Ok(NewMedianFactoryReply {
                reportingPluginFactoryID: id,
                ..Default::default()
            })
        });
    }
}

#[derive(Clone)]
struct Factory {
    broker: Broker,
    codec: Arc<crate::devchain::provider::ProviderClient>,
    contract: Arc<MedianContractClient>,
    source: Arc<DataSourceClient>,
    juels: Arc<DataSourceClient>,
    errors: Option<Arc<crate::keystore::ErrorLogClient>>,
}

/// Reads a ReportingPluginConfig into the plugin's settings; the onchain
/// config is decoded by the provider's OnchainConfigCodec.
fn decode(
    cfg: &ReportingPluginConfig,
    onchain: &dyn crate::devchain::provider::OnchainConfigCodec,
) -> Result<(u8, usize, Bounds, FeedSettings), String> {
    let bounds = onchain.decode(&cfg.onchainConfig)?;
    let off: OffchainConfig =
        serde_json::from_slice(&cfg.offchainConfig).map_err(|e| format!("offchainConfig: {e}"))?;
    let oracle = u8::try_from(cfg.oracleID)
        .map_err(|_| format!("oracleID {} is not a uint8", cfg.oracleID))?;
    if cfg.n == 0 || cfg.oracleID >= cfg.n || 3 * cfg.f >= cfg.n {
        return Err(format!(
            "n={} f={} oracleID={}: need oracleID < n and n > 3f",
            cfg.n, cfg.f, cfg.oracleID
        ));
    }
    Ok((
        oracle,
        cfg.f as usize,
        bounds,
        FeedSettings {
            deviation_ppb: off.deviation_ppb,
            heartbeat: Duration::from_secs(off.heartbeat_seconds),
        },
    ))
}

impl median_plugin_grpc::ReportingPluginFactory for Factory {
    fn new_reporting_plugin(
        &mut self,
        ctx: RpcContext,
        req: NewReportingPluginRequest,
        sink: UnarySink<NewReportingPluginReply>,
    ) {
        let f = self.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let cfg = req.reportingPluginConfig.as_ref().ok_or_else(|| {
                rpc::status(RpcStatusCode::INVALID_ARGUMENT, "no reportingPluginConfig")
            })?;
            let (oracle, faults, bounds, settings) = decode(cfg, f.codec.as_ref())
                .map_err(|e| rpc::status(RpcStatusCode::INVALID_ARGUMENT, e))?;
            let mut plugin = MedianPlugin::new(
                oracle,
                faults,
                bounds,
                settings,
                f.source.clone(),
                f.juels.clone(),
                f.contract.clone(),
            );
            if let Some(errors) = &f.errors {
                plugin = plugin.with_error_log(errors.clone());
            }
            plugin = plugin.with_codec(f.codec.clone());
            let id = f.broker.next_id();
            f.broker
                .serve(id, vec![super::reporting::server(Arc::new(plugin))])
                .map_err(unavailable)?;
            let n = u64::from(cfg.n);
            Ok(NewReportingPluginReply {
                reportingPluginID: id,
                reportingPluginInfo: MessageField::some(ReportingPluginInfo {
                    name: "median".into(),
                    uniqueReports: false,
                    reportingPluginLimits: MessageField::some(ReportingPluginLimits {
                        maxQueryLength: 0,
                        maxObservationLength: 256,
                        maxReportLength: crate::devchain::codec::max_report_length(n as usize)
                            as u64,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        });
    }
}

/// A ReportingPluginConfig for oracle `oracle` of `n` with the given settings.
#[allow(clippy::too_many_arguments)]
pub fn config(
    digest: &[u8],
    oracle: u8,
    n: u32,
    f: u32,
    bounds: Bounds,
    settings: FeedSettings,
    max: &super::deadlines::MaxDurations,
) -> ReportingPluginConfig {
    let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    ReportingPluginConfig {
        configDigest: digest.to_vec(),
        oracleID: u32::from(oracle),
        n,
        f,
        onchainConfig: serde_json::to_vec(&OnchainConfig {
            min: bounds.min.to_string(),
            max: bounds.max.to_string(),
        })
        .expect("serializable"),
        offchainConfig: serde_json::to_vec(&OffchainConfig {
            deviation_ppb: settings.deviation_ppb,
            heartbeat_seconds: settings.heartbeat.as_secs(),
        })
        .expect("serializable"),
        estimatedRoundInterval: ns(Duration::from_secs(1)),
        maxDurationQuery: ns(max.query),
        maxDurationObservation: ns(max.observation),
        maxDurationReport: ns(max.report),
        maxDurationShouldAcceptFinalizedReport: ns(max.should_accept),
        maxDurationShouldTransmitAcceptedReport: ns(max.should_transmit),
        ..Default::default()
    }
}
