//! The median product plugin's entry points as Rust traits:
//! [`PluginMedian`] (`loop.PluginMedian`: a factory from a provider and data
//! sources) and [`ReportingPluginFactory`] (`loop.ReportingPluginFactory`: a
//! reporting plugin per oracle config), with the values they exchange.
//! [`super::factory_grpc`] carries both across processes.

use std::sync::Arc;
use std::time::Duration;

use super::deadlines::MaxDurations;
use super::plugin::ReportingPlugin;
use crate::services::datasource::DataSource;
use crate::services::keystore::ErrorLog;
use crate::services::relay::MedianProvider;

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
    /// The reporting plugin's offchain config, encoded.
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

/// What a median factory is made from (`loop.NewMedianFactoryRequest`).
#[derive(Clone)]
pub struct MedianFactoryArgs {
    /// The chain, through the relayer's provider.
    pub provider: MedianProvider,
    /// The contract the feed reports to.
    pub contract_id: String,
    /// Where values come from.
    pub data_source: Arc<dyn DataSource>,
    /// Where juels-per-fee-coin come from.
    pub juels_per_fee_coin: Arc<dyn DataSource>,
    /// Where the gas price (in the chain's smallest unit) comes from.
    pub gas_price_subunits: Arc<dyn DataSource>,
    /// Where observation failures are reported.
    pub error_log: Arc<dyn ErrorLog>,
    /// A custom deviation function (`deviationFuncDefinition`, a JSON
    /// object), passed through as given; None: the standard check.
    pub deviation_func: Option<Vec<u8>>,
}

/// The median product plugin (`loop.PluginMedian`).
pub trait PluginMedian: Send + Sync {
    /// A factory of reporting plugins for `args.contract_id`.
    fn new_median_factory(
        &self,
        args: MedianFactoryArgs,
    ) -> Result<Arc<dyn ReportingPluginFactory>, String>;
}

/// Checks a deviation function definition is a JSON object (what Go's
/// server requires), naming what is wrong.
pub fn check_deviation_func(definition: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<serde_json::Value>(definition) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(other) => Err(format!(
            "deviationFuncDefinition must be a JSON object, not {other}"
        )),
        Err(e) => Err(format!("deviationFuncDefinition is not JSON: {e}")),
    }
}

/// Makes one reporting plugin per oracle config (`loop.ReportingPluginFactory`).
pub trait ReportingPluginFactory: Send + Sync {
    /// The plugin for `config`, and what it is.
    fn new_reporting_plugin(
        &self,
        config: &ReportingPluginConfig,
    ) -> Result<(Arc<dyn ReportingPlugin>, ReportingPluginInfo), String>;
}
