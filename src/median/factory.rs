//! The median product plugin's entry points, in-process: [`Median`] is its
//! `PluginMedian`, and the factory it makes its `ReportingPluginFactory`
//! (traits in [`crate::services::median::factory`]; `loopp-median` serves
//! the same objects through [`crate::services::median::factory_grpc`], so
//! the node holds `Arc<dyn PluginMedian>` either way).
//!
//! The offchain config is libocr's ([`super::libocr::OffchainConfig`], the
//! empty config of a fresh contract included); the onchain config is
//! whatever the provider's `OnchainConfigCodec` makes of the bounds.

use std::sync::Arc;

use super::libocr::{OffchainConfig, MAX_OBSERVATION_LENGTH};
use super::plugin::MedianPlugin;
use crate::services::datasource::DataSource;
use crate::services::keystore::ErrorLog;
use crate::services::median::factory::{
    check_deviation_func, MedianFactoryArgs, PluginMedian, ReportingPluginConfig,
    ReportingPluginFactory, ReportingPluginInfo,
};
use crate::services::median::plugin::ReportingPlugin;
use crate::services::relay::MedianProvider;

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
        // The feed's oracles share one codec, one contract view and one set
        // of sources: the median of a report, a source's value for a round
        // and a contract read in flight are asked once for all of them.
        use super::recent::{RecentContract, RecentMedian, RecentObservation};
        let shared = |source| -> Arc<dyn DataSource> { Arc::new(RecentObservation::new(source)) };
        let mut provider = args.provider;
        provider.report_codec = Arc::new(RecentMedian::new(provider.report_codec));
        provider.contract = Arc::new(RecentContract::new(provider.contract));
        Ok(Arc::new(MedianFactory {
            provider,
            source: shared(args.data_source),
            juels: shared(args.juels_per_fee_coin),
            gas_price: shared(args.gas_price_subunits),
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
        // libocr's order: offchain config, onchain config, report length.
        let settings = OffchainConfig::decode(&config.offchain_config)?;
        let bounds = self.provider.onchain_codec.decode(&config.onchain_config)?;
        let max_report_length = self
            .provider
            .report_codec
            .max_report_length(usize::from(config.n))?;
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
        .with_error_log(self.errors.clone())
        .with_max_report_length(max_report_length);
        let info = ReportingPluginInfo {
            name: "NumericalMedian".into(),
            unique_reports: false,
            max_query_length: 0,
            max_observation_length: MAX_OBSERVATION_LENGTH as u64,
            max_report_length: max_report_length as u64,
        };
        Ok((Arc::new(plugin), info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devchain::relayer::Devchain;
    use crate::services::relay::{PluginArgs, PluginRelayer, RelayArgs};
    use crate::sources::{build, Spec};

    /// A deviation function definition is checked and refused by name
    /// (loopp's median evaluates only the standard check); the offchain
    /// config is libocr's, the empty one of a fresh contract included.
    #[test]
    fn the_factory_checks_deviation_functions_and_offchain_configs() {
        let dir = crate::testutil::TempDir::new("median-deviation");
        let config = serde_json::json!({"chainFile": dir.0.join("c.jsonl")}).to_string();
        let relayer = Devchain::new().new_relayer(&config, None, None).unwrap();
        let provider = relayer
            .new_plugin_provider(&RelayArgs::default(), &PluginArgs::default())
            .unwrap();
        let source: Arc<dyn DataSource> = Arc::from(build(&Spec::Static { value: 1 }).unwrap());
        let args = |def: Option<&[u8]>| MedianFactoryArgs {
            provider: provider.clone(),
            contract_id: "c".into(),
            data_source: source.clone(),
            juels_per_fee_coin: source.clone(),
            gas_price_subunits: source.clone(),
            error_log: Arc::new(crate::services::keystore::LogErrors {
                source: "test".into(),
            }),
            deviation_func: def.map(<[u8]>::to_vec),
        };
        assert!(Median.new_median_factory(args(None)).is_ok());
        let err = Median
            .new_median_factory(args(Some(br#"{"type":"percent"}"#)))
            .err()
            .unwrap();
        assert!(
            err.contains(r#"deviationFuncDefinition {"type":"percent"}"#)
                && err.contains("remove the definition"),
            "{err}"
        );
        let err = Median.new_median_factory(args(Some(b"[1]"))).err().unwrap();
        assert!(err.contains("must be a JSON object"), "{err}");
    }
}
