//! The median product plugin's entry points as Rust traits:
//! [`PluginMedian`] (`loop.PluginMedian`: a factory from a provider and data
//! sources) and [`ReportingPluginFactory`] (`loop.ReportingPluginFactory`: a
//! reporting plugin per oracle config). [`Median`] and its factory are the
//! in-process implementations; [`super::factory_grpc`] carries both traits
//! across processes, so the node holds `Arc<dyn PluginMedian>` either way.
//!
//! The median's offchain config is `{"deviationPpb": u64,
//! "heartbeatSeconds": u64}` (JSON, [`OffchainConfig`]); its onchain config
//! is whatever the provider's `OnchainConfigCodec` makes of the bounds.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::deadlines::MaxDurations;
use super::plugin::{FeedSettings, MedianPlugin, ReportingPlugin};
use crate::datasource::DataSource;
use crate::keystore::ErrorLog;
use crate::relay::MedianProvider;

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

/// One oracle's reporting plugin config (`loop.ReportingPluginConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportingPluginConfig {
    /// The contract config's digest.
    pub config_digest: Vec<u8>,
    /// This oracle.
    pub oracle_id: u8,
    /// Oracles in all.
    pub n: u8,
    /// Faulty oracles tolerated.
    pub f: u8,
    /// The contract's bounds, encoded by the provider's onchain codec.
    pub onchain_config: Vec<u8>,
    /// [`OffchainConfig`], encoded.
    pub offchain_config: Vec<u8>,
    /// How often rounds run.
    pub estimated_round_interval: Duration,
    /// The calls' maximum durations.
    pub max: MaxDurations,
}

impl ReportingPluginConfig {
    /// Checks the oracle counts: `oracle_id < n` and `n > 3f`.
    pub fn check(&self) -> Result<(), String> {
        if self.n == 0 || self.oracle_id >= self.n || 3 * u32::from(self.f) >= u32::from(self.n) {
            return Err(format!(
                "n={} f={} oracleID={}: need oracleID < n and n > 3f",
                self.n, self.f, self.oracle_id
            ));
        }
        Ok(())
    }
}

/// What a factory says about the plugins it makes (`loop.ReportingPluginInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportingPluginInfo {
    /// The plugin's name.
    pub name: String,
    /// Whether reports are unique per round.
    pub unique_reports: bool,
    /// Longest query, bytes.
    pub max_query_length: u64,
    /// Longest observation, bytes.
    pub max_observation_length: u64,
    /// Longest report, bytes.
    pub max_report_length: u64,
}

/// The median product plugin (`loop.PluginMedian`).
pub trait PluginMedian: Send + Sync {
    /// A factory of reporting plugins for contract `contract_id`, reading
    /// the chain through `provider`, values from `source` and
    /// `juels_per_fee_coin`, reporting failures to `errors`.
    fn new_median_factory(
        &self,
        provider: MedianProvider,
        contract_id: &str,
        source: Arc<dyn DataSource>,
        juels_per_fee_coin: Arc<dyn DataSource>,
        errors: Arc<dyn ErrorLog>,
    ) -> Result<Arc<dyn ReportingPluginFactory>, String>;
}

/// Makes one reporting plugin per oracle config (`loop.ReportingPluginFactory`).
pub trait ReportingPluginFactory: Send + Sync {
    /// The plugin for `config`, and what it is.
    fn new_reporting_plugin(
        &self,
        config: &ReportingPluginConfig,
    ) -> Result<(Arc<dyn ReportingPlugin>, ReportingPluginInfo), String>;
}

/// The median product plugin, in-process.
pub struct Median;

impl PluginMedian for Median {
    fn new_median_factory(
        &self,
        provider: MedianProvider,
        _contract_id: &str,
        source: Arc<dyn DataSource>,
        juels_per_fee_coin: Arc<dyn DataSource>,
        errors: Arc<dyn ErrorLog>,
    ) -> Result<Arc<dyn ReportingPluginFactory>, String> {
        Ok(Arc::new(MedianFactory {
            provider,
            source,
            juels: juels_per_fee_coin,
            errors,
        }))
    }
}

struct MedianFactory {
    provider: MedianProvider,
    source: Arc<dyn DataSource>,
    juels: Arc<dyn DataSource>,
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
        )
        .with_error_log(self.errors.clone())
        .with_codec(self.provider.report_codec.clone());
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
