//! The median product plugin's entry points, in-process: [`Median`] is its
//! `PluginMedian`, and the factory it makes its `ReportingPluginFactory`
//! (traits in [`crate::services::median::factory`]; `loopp-median` serves
//! the same objects through [`crate::services::median::factory_grpc`], so
//! the node holds `Arc<dyn PluginMedian>` either way).
//!
//! The median's offchain config is `{"deviationPpb": u64,
//! "heartbeatSeconds": u64}` (JSON, [`OffchainConfig`]); its onchain config
//! is whatever the provider's `OnchainConfigCodec` makes of the bounds.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::plugin::{FeedSettings, MedianPlugin};
use crate::services::datasource::DataSource;
use crate::services::keystore::ErrorLog;
use crate::services::median::factory::{
    check_deviation_func, MedianFactoryArgs, PluginMedian, ReportingPluginConfig,
    ReportingPluginFactory, ReportingPluginInfo,
};
use crate::services::median::plugin::ReportingPlugin;
use crate::services::relay::MedianProvider;

/// The median's offchain config: when to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OffchainConfig {
    /// Deviation threshold, parts per billion.
    pub deviation_ppb: u64,
    /// Heartbeat, seconds.
    pub heartbeat_seconds: u64,
}

impl OffchainConfig {
    /// The config for `settings`, encoded.
    pub fn encode(settings: FeedSettings) -> Vec<u8> {
        serde_json::to_vec(&OffchainConfig {
            deviation_ppb: settings.deviation_ppb,
            heartbeat_seconds: settings.heartbeat.as_secs(),
        })
        .expect("serializable")
    }

    /// The settings in an encoded config.
    pub fn decode(bytes: &[u8]) -> Result<FeedSettings, String> {
        let c: OffchainConfig =
            serde_json::from_slice(bytes).map_err(|e| format!("offchainConfig: {e}"))?;
        Ok(FeedSettings {
            deviation_ppb: c.deviation_ppb,
            heartbeat: Duration::from_secs(c.heartbeat_seconds),
        })
    }
}

/// The median product plugin, in-process.
pub struct Median;

impl PluginMedian for Median {
    fn new_median_factory(
        &self,
        args: MedianFactoryArgs,
    ) -> Result<Arc<dyn ReportingPluginFactory>, String> {
        if let Some(def) = &args.deviation_func {
            check_deviation_func(def)?;
            return Err(format!(
                "deviationFuncDefinition {}: loopp's median evaluates only the standard deviation check (alphaReport); remove the definition",
                String::from_utf8_lossy(def)
            ));
        }
        Ok(Arc::new(MedianFactory {
            provider: args.provider,
            source: args.data_source,
            juels: args.juels_per_fee_coin,
            gas_price: args.gas_price_subunits,
            errors: args.error_log,
        }))
    }
}

struct MedianFactory {
    provider: MedianProvider,
    source: Arc<dyn DataSource>,
    juels: Arc<dyn DataSource>,
    gas_price: Arc<dyn DataSource>,
    errors: Arc<dyn ErrorLog>,
}

impl ReportingPluginFactory for MedianFactory {
    fn new_reporting_plugin(
        &self,
        config: &ReportingPluginConfig,
    ) -> Result<(Arc<dyn ReportingPlugin>, ReportingPluginInfo), String> {
        config.check()?;
        let bounds = self.provider.onchain_codec.decode(&config.onchain_config)?;
        let settings = OffchainConfig::decode(&config.offchain_config)?;
        let plugin = MedianPlugin::new(
            config.oracle_id,
            usize::from(config.f),
            bounds,
            settings,
            self.source.clone(),
            self.juels.clone(),
            self.provider.contract.clone(),
            self.provider.report_codec.clone(),
        )
        .with_gas_price(self.gas_price.clone())
        .with_error_log(self.errors.clone());
        let info = ReportingPluginInfo {
            name: "median".into(),
            unique_reports: false,
            max_query_length: 0,
            max_observation_length: 256,
            max_report_length: self
                .provider
                .report_codec
                .max_report_length(usize::from(config.n))? as u64,
        };
        Ok((Arc::new(plugin), info))
    }
}
