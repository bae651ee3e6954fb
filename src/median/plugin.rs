//! The median reporting plugin, in-process: the OCR2 reporting-plugin calls
//! (Query, Observation, Report, ShouldAcceptFinalizedReport,
//! ShouldTransmitAcceptedReport) for a numerical-median feed, over a data
//! source, a juels-per-fee-coin source and a view of the median contract.
//!
//! The same logic serves `loopp-median` through
//! [`crate::services::median::reporting`] and
//! [`crate::services::median::factory_grpc`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::math;
use crate::services::datasource::{DataSource, ReportTimestamp};
use crate::services::keystore::ErrorLog;
use crate::services::median::plugin::{MedianContract, ReportingPlugin};
use crate::services::median::Bounds;
use crate::services::relay::provider::{ParsedObservation, ReportCodec};

/// The feed's offchain settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedSettings {
    /// Report when the median moves more than this (parts per billion).
    pub deviation_ppb: u64,
    /// Report at least this often.
    pub heartbeat: Duration,
}

/// One oracle's instance of the plugin.
pub struct MedianPlugin {
    oracle: u8,
    f: usize,
    bounds: Bounds,
    settings: FeedSettings,
    source: Arc<dyn DataSource>,
    juels: Arc<dyn DataSource>,
    gas_price: Option<Arc<dyn DataSource>>,
    contract: Arc<dyn MedianContract>,
    errors: Option<Arc<dyn ErrorLog>>,
    codec: Arc<dyn ReportCodec>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireObservation {
    value: String,
    juels: String,
    gas: String,
    ts: u32,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl MedianPlugin {
    /// Oracle `oracle` of a feed with `f` faulty oracles tolerated; reports
    /// are built with `codec`, the provider's (the median plugin knows no
    /// chain's report format of its own).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        oracle: u8,
        f: usize,
        bounds: Bounds,
        settings: FeedSettings,
        source: Arc<dyn DataSource>,
        juels: Arc<dyn DataSource>,
        contract: Arc<dyn MedianContract>,
        codec: Arc<dyn ReportCodec>,
    ) -> MedianPlugin {
        MedianPlugin {
            oracle,
            f,
            bounds,
            settings,
            source,
            juels,
            contract,
            gas_price: None,
            errors: None,
            codec,
        }
    }

    /// Observes the gas price (in the chain's smallest unit) from
    /// `gas_price` too; without it, observations carry 0.
    pub fn with_gas_price(mut self, gas_price: Arc<dyn DataSource>) -> MedianPlugin {
        self.gas_price = Some(gas_price);
        self
    }

    /// Reports observation failures to `errors` (the host's error log) too.
    pub fn with_error_log(mut self, errors: Arc<dyn ErrorLog>) -> MedianPlugin {
        self.errors = Some(errors);
        self
    }

    /// The oracle's id.
    pub fn oracle(&self) -> u8 {
        self.oracle
    }
}

impl ReportingPlugin for MedianPlugin {
    /// Query: the median plugin's leader asks nothing in particular.
    fn query(&self, _ts: &ReportTimestamp, _deadline: Duration) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }

    /// Observation: the data source's value, juels-per-fee-coin and gas
    /// price, within `deadline` (shared by the sources).
    fn observation(
        &self,
        ts: &ReportTimestamp,
        _query: &[u8],
        deadline: Duration,
    ) -> Result<Vec<u8>, String> {
        // One deadline for all sources, each asked in the time left.
        let until = Instant::now() + deadline;
        let left = || {
            until
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("no time left of the {deadline:?} observation deadline"))
        };
        let observed = left()
            .and_then(|d| self.source.observe(ts, d))
            .and_then(|v| {
                left()
                    .and_then(|d| self.juels.observe(ts, d))
                    .map(|j| (v, j))
            })
            .and_then(|(v, j)| match &self.gas_price {
                Some(g) => left().and_then(|d| g.observe(ts, d)).map(|g| (v, j, g)),
                None => Ok((v, j, 0)),
            });
        let (value, juels, gas) = match observed {
            Ok(v) => v,
            Err(e) => {
                if let Some(log) = &self.errors {
                    let _ = log.save_error(&format!(
                        "oracle {} epoch {} round {}: observation failed: {e}",
                        self.oracle, ts.epoch, ts.round
                    ));
                }
                return Err(e);
            }
        };
        let obs = WireObservation {
            value: value.to_string(),
            juels: juels.to_string(),
            gas: gas.to_string(),
            ts: now_secs() as u32,
        };
        serde_json::to_vec(&obs).map_err(|e| e.to_string())
    }

    /// Report: from the observations (by oracle), a report when there are
    /// more than 2f valid ones and the median deviates, the heartbeat is
    /// due, or a round was requested on chain since the latest transmission.
    fn report(
        &self,
        ts: &ReportTimestamp,
        _query: &[u8],
        observations: &[(u8, Vec<u8>)],
        _deadline: Duration,
    ) -> Result<Option<Vec<u8>>, String> {
        let mut parsed = Vec::new();
        for (oracle, bytes) in observations {
            let Ok(w) = serde_json::from_slice::<WireObservation>(bytes) else {
                continue; // a malformed observation is an invalid one
            };
            let (Ok(value), Ok(juels), Ok(gas)) = (
                w.value.parse::<i128>(),
                w.juels.parse::<i128>(),
                w.gas.parse::<i128>(),
            ) else {
                continue;
            };
            parsed.push((
                math::Observation {
                    oracle: *oracle,
                    value,
                    juels_per_fee_coin: juels,
                },
                w.ts,
                gas,
            ));
        }
        let obs: Vec<math::Observation> = parsed.iter().map(|(o, _, _)| *o).collect();
        let (median, _) = match math::report_values(&obs, self.f, self.bounds) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        };
        let latest = self.contract.latest_transmission_details()?.map(|(_, l)| l);
        let due = math::should_report(
            latest,
            median,
            self.settings.deviation_ppb,
            self.settings.heartbeat,
            now_secs(),
        );
        if !due {
            let requested = self
                .contract
                .latest_round_requested(self.settings.heartbeat)?
                .filter(|r| r.config_digest == ts.config_digest)
                .map(|r| (r.epoch, r.round));
            if !math::round_requested(requested, latest) {
                return Ok(None);
            }
        }
        let valid: Vec<ParsedObservation> = parsed
            .iter()
            .filter(|(o, _, _)| self.bounds.contains(o.value))
            .map(|(o, ts, gas)| ParsedObservation {
                timestamp: *ts,
                value: o.value,
                juels_per_fee_coin: o.juels_per_fee_coin,
                gas_price_subunits: *gas,
                observer: o.oracle,
            })
            .collect();
        self.codec.build_report(&valid).map(Some)
    }

    /// Accept only reports newer than the contract's latest.
    fn should_accept_finalized_report(
        &self,
        ts: &ReportTimestamp,
        _report: &[u8],
        _deadline: Duration,
    ) -> Result<bool, String> {
        let latest = self.contract.latest_transmission_details()?.map(|(_, l)| l);
        Ok(math::is_newer(ts.epoch, ts.round, latest))
    }

    /// Transmit only reports still newer than the contract's latest.
    fn should_transmit_accepted_report(
        &self,
        ts: &ReportTimestamp,
        report: &[u8],
        deadline: Duration,
    ) -> Result<bool, String> {
        self.should_accept_finalized_report(ts, report, deadline)
    }

    fn close(&self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    // Test fixtures from other layers: a real codec and a static source.
    use crate::devchain::provider::DevchainCodec;
    use crate::services::median::plugin::RoundRequested;
    use crate::services::median::Latest;
    use crate::sources::{build, Spec};

    /// A contract that transmitted 100 just now, with a settable request.
    struct Requested(Mutex<Option<RoundRequested>>);

    impl MedianContract for Requested {
        fn latest_transmission_details(&self) -> Result<Option<(Vec<u8>, Latest)>, String> {
            Ok(Some((
                vec![7; 32],
                Latest {
                    epoch: 5,
                    round: 1,
                    answer: 100,
                    timestamp: now_secs(),
                },
            )))
        }

        fn latest_round_requested(
            &self,
            _lookback: Duration,
        ) -> Result<Option<RoundRequested>, String> {
            Ok(self.0.lock().unwrap().clone())
        }
    }

    #[test]
    fn a_round_requested_on_chain_forces_a_report_without_deviation() {
        let contract = Arc::new(Requested(Mutex::new(None)));
        let source: Arc<dyn DataSource> = Arc::from(build(&Spec::Static { value: 100 }).unwrap());
        let plugins: Vec<MedianPlugin> = (0..4)
            .map(|i| {
                MedianPlugin::new(
                    i,
                    1,
                    Bounds { min: 0, max: 1000 },
                    FeedSettings {
                        deviation_ppb: 1_000_000,
                        heartbeat: Duration::from_secs(3600),
                    },
                    source.clone(),
                    source.clone(),
                    contract.clone(),
                    Arc::new(DevchainCodec),
                )
            })
            .collect();
        let ts = ReportTimestamp {
            config_digest: vec![7; 32],
            epoch: 6,
            round: 0,
        };
        let d = Duration::from_secs(1);
        let obs: Vec<(u8, Vec<u8>)> = plugins
            .iter()
            .map(|p| (p.oracle(), p.observation(&ts, &[], d).unwrap()))
            .collect();
        let report_with = |requested: Option<(u8, u32, u8)>| {
            *contract.0.lock().unwrap() = requested.map(|(d, epoch, round)| RoundRequested {
                config_digest: vec![d; 32],
                epoch,
                round,
            });
            plugins[0].report(&ts, &[], &obs, d)
        };
        assert_eq!(
            report_with(None),
            Ok(None),
            "same median, heartbeat not due, nothing requested"
        );
        assert_eq!(
            report_with(Some((7, 5, 1))),
            Ok(None),
            "the request was answered by the latest transmission"
        );
        assert_eq!(
            report_with(Some((9, 5, 2))),
            Ok(None),
            "a request under another config does not count"
        );
        let report = report_with(Some((7, 5, 2))).unwrap().expect("a report");
        assert_eq!(DevchainCodec.median_from_report(&report), Ok(100));
    }

    /// Keeps what it was asked to build a report from.
    struct Recording(Mutex<Vec<ParsedObservation>>);

    impl ReportCodec for Recording {
        fn build_report(&self, obs: &[ParsedObservation]) -> Result<Vec<u8>, String> {
            *self.0.lock().unwrap() = obs.to_vec();
            Ok(b"r".to_vec())
        }

        fn median_from_report(&self, _report: &[u8]) -> Result<i128, String> {
            Ok(0)
        }

        fn max_report_length(&self, _n: usize) -> Result<usize, String> {
            Ok(1)
        }
    }

    /// Each oracle's gas price goes from its source, through its
    /// observation, to the relayer's codec; without a source it is 0.
    #[test]
    fn gas_prices_reach_the_report_codec() {
        let contract = Arc::new(Requested(Mutex::new(None)));
        let codec = Arc::new(Recording(Mutex::new(Vec::new())));
        let fixed = |v: i64| -> Arc<dyn DataSource> {
            Arc::from(build(&Spec::Static { value: v }).unwrap())
        };
        let plugins: Vec<MedianPlugin> = (0..4u8)
            .map(|i| {
                let p = MedianPlugin::new(
                    i,
                    1,
                    Bounds { min: 0, max: 1000 },
                    FeedSettings {
                        deviation_ppb: 0,
                        heartbeat: Duration::from_secs(1),
                    },
                    fixed(200),
                    fixed(1),
                    contract.clone(),
                    codec.clone(),
                );
                match i {
                    3 => p, // no gas price source: 0
                    _ => p.with_gas_price(fixed(1_000 + i64::from(i))),
                }
            })
            .collect();
        let ts = ReportTimestamp {
            config_digest: vec![7; 32],
            epoch: 6,
            round: 0,
        };
        let d = Duration::from_secs(1);
        let obs: Vec<(u8, Vec<u8>)> = plugins
            .iter()
            .map(|p| (p.oracle(), p.observation(&ts, &[], d).unwrap()))
            .collect();
        assert!(plugins[0].report(&ts, &[], &obs, d).unwrap().is_some());
        let mut gas: Vec<(u8, i128)> = codec
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|o| (o.observer, o.gas_price_subunits))
            .collect();
        gas.sort();
        assert_eq!(gas, vec![(0, 1000), (1, 1001), (2, 1002), (3, 0)]);
    }
}
