//! The median reporting plugin, in-process: the OCR2 reporting-plugin calls
//! (Query, Observation, Report, ShouldAcceptFinalizedReport,
//! ShouldTransmitAcceptedReport) of libocr's numerical median, with its
//! encodings ([`super::libocr`]) and its decisions, over a data source, a
//! juels-per-fee-coin source, a gas price source and a view of the median
//! contract, so loopp and Go oracles can share a DON.
//!
//! The same logic serves `loopp-median` through
//! [`crate::services::median::reporting`] and
//! [`crate::services::median::factory_grpc`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::libocr::{Observation, OffchainConfig};
use super::math;
use crate::services::datasource::{DataSource, Observing, ReportTimestamp};
use crate::services::keystore::ErrorLog;
use crate::services::median::plugin::{MedianContract, ReportingPlugin};
use crate::services::median::value::I192;
use crate::services::median::Bounds;
use crate::services::relay::provider::{ParsedObservation, ReportCodec};

/// The feed's settings as the job file gives them; the plugin runs on the
/// libocr offchain config they make ([`OffchainConfig`]: alphaReport and
/// alphaAccept from `deviation_ppb`, deltaC from `heartbeat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedSettings {
    /// Report when the median moves this much (parts per billion).
    pub deviation_ppb: u64,
    /// Report when the contract's answer is older than this.
    pub heartbeat: Duration,
}

impl From<FeedSettings> for OffchainConfig {
    fn from(s: FeedSettings) -> OffchainConfig {
        OffchainConfig {
            alpha_report_infinite: false,
            alpha_report_ppb: s.deviation_ppb,
            alpha_accept_infinite: false,
            alpha_accept_ppb: s.deviation_ppb,
            delta_c: s.heartbeat,
        }
    }
}

/// One oracle's instance of the plugin: libocr's numerical median.
pub struct MedianPlugin {
    oracle: u8,
    f: usize,
    bounds: Bounds,
    config: OffchainConfig,
    source: Arc<dyn DataSource>,
    juels: Arc<dyn DataSource>,
    gas_price: Option<Arc<dyn DataSource>>,
    contract: Arc<dyn MedianContract>,
    errors: Option<Arc<dyn ErrorLog>>,
    codec: Arc<dyn ReportCodec>,
    max_report_length: usize,
    /// The latest report this oracle accepted: its (epoch, round) and median.
    accepted: Mutex<((u32, u8), i128)>,
}

/// The median's leader queries nothing; libocr refuses anything else.
fn empty_query(query: &[u8]) -> Result<(), String> {
    match query.len() {
        0 => Ok(()),
        n => Err(format!("the median's query is empty, not {n} bytes")),
    }
}

fn now_since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The contract's latest transmission as libocr reads it: before any, zero
/// values (and a zero digest when there is no config either).
fn latest_of(
    details: Option<(Vec<u8>, crate::services::median::Latest)>,
) -> (Vec<u8>, (u32, u8), i128, u64) {
    match details {
        Some((digest, l)) => (digest, (l.epoch, l.round), l.answer, l.timestamp),
        None => (vec![0; 32], (0, 0), 0, 0),
    }
}

impl MedianPlugin {
    /// Oracle `oracle` of a feed with `f` faulty oracles tolerated, the
    /// contract's `bounds` and offchain `config`; reports are built with
    /// `codec`, the provider's (the median plugin knows no chain's report
    /// format of its own).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        oracle: u8,
        f: usize,
        bounds: Bounds,
        config: impl Into<OffchainConfig>,
        source: Arc<dyn DataSource>,
        juels: Arc<dyn DataSource>,
        contract: Arc<dyn MedianContract>,
        codec: Arc<dyn ReportCodec>,
    ) -> MedianPlugin {
        MedianPlugin {
            oracle,
            f,
            bounds,
            config: config.into(),
            source,
            juels,
            gas_price: None,
            contract,
            errors: None,
            codec,
            // Unbounded until the factory sets the codec's figure: asking
            // the codec here would be a second call for the same answer.
            max_report_length: usize::MAX,
            accepted: Mutex::new(((0, 0), 0)),
        }
    }

    /// Observes the gas price (in the chain's smallest unit) from
    /// `gas_price` too; without it, observations carry none (read as 0).
    pub fn with_gas_price(mut self, gas_price: Arc<dyn DataSource>) -> MedianPlugin {
        self.gas_price = Some(gas_price);
        self
    }

    /// Reports observation failures to `errors` (the host's error log) too.
    pub fn with_error_log(mut self, errors: Arc<dyn ErrorLog>) -> MedianPlugin {
        self.errors = Some(errors);
        self
    }

    /// Reports longer than `n` bytes are refused (libocr's MaxReportLength,
    /// from the codec for the feed's oracle count).
    pub fn with_max_report_length(mut self, n: usize) -> MedianPlugin {
        self.max_report_length = n;
        self
    }

    /// The oracle's id.
    pub fn oracle(&self) -> u8 {
        self.oracle
    }
}

impl ReportingPlugin for MedianPlugin {
    /// Query: the median's leader asks nothing.
    fn query(&self, _ts: &ReportTimestamp, _deadline: Duration) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }

    /// Observation: the value, juels-per-fee-coin and gas price, all within
    /// `deadline`; any source failing fails the observation.
    fn observation(
        &self,
        ts: &ReportTimestamp,
        query: &[u8],
        deadline: Duration,
    ) -> Result<Vec<u8>, String> {
        empty_query(query)?;
        // One deadline for all sources, each asked in the time left; the
        // three are asked together (a source behind gRPC is sent its call
        // and waited for with the others), as libocr asks them at once.
        let until = Instant::now() + deadline;
        let left = || {
            until
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("no time left of the {deadline:?} observation deadline"))
        };
        let observed = (|| {
            let mut asked = vec![
                self.source.start_observe(ts, left()?),
                self.juels.start_observe(ts, left()?),
            ];
            if let Some(g) = &self.gas_price {
                asked.push(g.start_observe(ts, left()?));
            }
            let mut got = Observing::wait_all(asked).into_iter();
            let mut next = || got.next().transpose();
            let value = next()?.ok_or("no value observed")?;
            let juels = next()?.ok_or("no juels per fee coin observed")?;
            Ok::<_, String>((value, juels, next()?))
        })();
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
        Ok(Observation {
            timestamp: now_since_epoch().as_secs() as u32,
            value: I192::from(value),
            juels_per_fee_coin: I192::from(juels),
            gas_price_subunits: gas.map(I192::from),
        }
        .encode())
    }

    /// Report, as libocr decides: the valid observations (at least f+1)
    /// sorted by value, their median checked against the contract's bounds;
    /// a report when this is the config's first round, the median deviates
    /// from the contract's answer by alphaReport, the answer is older than
    /// deltaC, or a round requested on chain is unanswered.
    fn report(
        &self,
        ts: &ReportTimestamp,
        query: &[u8],
        observations: &[(u8, Vec<u8>)],
        _deadline: Duration,
    ) -> Result<Option<Vec<u8>>, String> {
        empty_query(query)?;
        let mut valid: Vec<ParsedObservation> = observations
            .iter()
            .filter_map(|(oracle, bytes)| {
                let o = Observation::decode(bytes).ok()?;
                Some(ParsedObservation {
                    timestamp: o.timestamp,
                    value: o.value.to_i128().ok()?,
                    juels_per_fee_coin: o.juels_per_fee_coin.to_i128().ok()?,
                    gas_price_subunits: match o.gas_price_subunits {
                        Some(g) => g.to_i128().ok()?,
                        None => 0,
                    },
                    observer: *oracle,
                })
            })
            .collect();
        if valid.len() <= self.f {
            return Err(format!(
                "only {} valid observations; a report needs f+1 = {}",
                valid.len(),
                self.f + 1
            ));
        }
        // In the order Go's sort.Slice gives, as libocr sorts: equal values
        // of 13 or more observations must land where Go puts them.
        super::gosort::sort_like_go(&mut valid, |a, b| a.value < b.value);
        let answer = valid[valid.len() / 2].value;
        let (digest, latest, latest_answer, latest_time) =
            latest_of(self.contract.latest_transmission_details()?);
        let requested = self.contract.latest_round_requested(self.config.delta_c)?;
        if !self.bounds.contains(answer) {
            return Ok(None);
        }
        let initial_round = digest == ts.config_digest && latest == (0, 0);
        let deviation = !self.config.alpha_report_infinite
            && math::deviates(latest_answer, answer, self.config.alpha_report_ppb);
        let delta_c_elapsed =
            Duration::from_secs(latest_time) + self.config.delta_c < now_since_epoch();
        let unfulfilled = requested
            .is_some_and(|r| r.config_digest == ts.config_digest && (r.epoch, r.round) >= latest);
        if !(initial_round || deviation || delta_c_elapsed || unfulfilled) {
            return Ok(None);
        }
        let report = self.codec.build_report(&valid)?;
        if report.len() > self.max_report_length {
            return Err(format!(
                "report of {} bytes, more than the {} the codec allows",
                report.len(),
                self.max_report_length
            ));
        }
        Ok(Some(report))
    }

    /// Accept, as libocr decides: only reports newer than this oracle's
    /// last accepted one and the contract's latest, under the contract's
    /// config; then when the median deviates from the last accepted one by
    /// alphaAccept, or nothing accepted is still pending on chain.
    fn should_accept_finalized_report(
        &self,
        ts: &ReportTimestamp,
        report: &[u8],
        _deadline: Duration,
    ) -> Result<bool, String> {
        let this = (ts.epoch, ts.round);
        let mut accepted = self.accepted.lock().unwrap();
        if accepted.0 >= this {
            return Ok(false);
        }
        let (digest, latest, _, _) = latest_of(self.contract.latest_transmission_details()?);
        if digest != ts.config_digest || latest >= this || report.len() > self.max_report_length {
            return Ok(false);
        }
        let median = self.codec.median_from_report(report)?;
        let deviates = !self.config.alpha_accept_infinite
            && math::deviates(accepted.1, median, self.config.alpha_accept_ppb);
        let nothing_pending = latest >= accepted.0;
        let accept = deviates || nothing_pending;
        if accept {
            *accepted = (this, median);
        }
        Ok(accept)
    }

    /// Transmit, as libocr decides: when the contract has not moved past the
    /// report under the same config.
    fn should_transmit_accepted_report(
        &self,
        ts: &ReportTimestamp,
        _report: &[u8],
        _deadline: Duration,
    ) -> Result<bool, String> {
        let (digest, latest, _, _) = latest_of(self.contract.latest_transmission_details()?);
        Ok(digest == ts.config_digest && latest < (ts.epoch, ts.round))
    }

    fn close(&self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epoch 6's timestamp, a 1 s deadline, and every plugin's observation.
    fn observe_all(plugins: &[MedianPlugin]) -> (ReportTimestamp, Duration, Vec<(u8, Vec<u8>)>) {
        let ts = ReportTimestamp {
            config_digest: vec![7; 32],
            epoch: 6,
            round: 0,
        };
        let d = Duration::from_secs(1);
        let obs = plugins
            .iter()
            .map(|p| (p.oracle(), p.observation(&ts, &[], d).unwrap()))
            .collect();
        (ts, d, obs)
    }
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
                    timestamp: now_since_epoch().as_secs(),
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
        let (ts, d, obs) = observe_all(&plugins);
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
            report_with(Some((7, 5, 0))),
            Ok(None),
            "a request older than the latest transmission was answered"
        );
        assert!(
            report_with(Some((7, 5, 1))).unwrap().is_some(),
            "a request at the latest transmission waits for a newer one (libocr)"
        );
        assert_eq!(
            report_with(Some((9, 5, 2))),
            Ok(None),
            "a request under another config does not count"
        );
        let report = report_with(Some((7, 5, 2))).unwrap().expect("a report");
        assert_eq!(DevchainCodec.median_from_report(&report), Ok(100));
    }

    /// A source that answers only once all `of` sources sharing `arrived`
    /// have been asked (each waits up to 5 s): asked one after another,
    /// the first would answer an error.
    struct Meeting {
        arrived: Arc<(Mutex<usize>, std::sync::Condvar)>,
        of: usize,
        value: i128,
    }

    impl DataSource for Meeting {
        fn observe(&self, _ts: &ReportTimestamp, _d: Duration) -> Result<i128, String> {
            let (count, all_here) = &*self.arrived;
            let mut n = count.lock().unwrap();
            *n += 1;
            all_here.notify_all();
            let (n, _) = all_here
                .wait_timeout_while(n, Duration::from_secs(5), |n| *n < self.of)
                .unwrap();
            if *n < self.of {
                return Err(format!("asked alone: {} of {} sources asked", *n, self.of));
            }
            Ok(self.value)
        }
    }

    /// The value, juels and gas price sources behind gRPC (on a real
    /// socket, as the node serves them) are asked together, as libocr
    /// asks them.
    #[test]
    fn the_three_sources_behind_grpc_are_asked_together() {
        use crate::services::datasource::{server, DataSourceClient};
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
        let arrived = Arc::new((Mutex::new(0), std::sync::Condvar::new()));
        let client = |id: u32, value: i128| -> Arc<dyn DataSource> {
            let source = Meeting {
                arrived: arrived.clone(),
                of: 3,
                value,
            };
            broker.serve(id, vec![server(Arc::new(source))]).unwrap();
            Arc::new(DataSourceClient::new("source", broker.local_channel(id)))
        };
        let plugin = MedianPlugin::new(
            0,
            1,
            Bounds { min: 0, max: 1000 },
            FeedSettings {
                deviation_ppb: 0,
                heartbeat: Duration::from_secs(3600),
            },
            client(1, 100),
            client(2, 7),
            Arc::new(Requested(Mutex::new(None))),
            Arc::new(DevchainCodec),
        )
        .with_gas_price(client(3, 3));
        let ts = ReportTimestamp {
            config_digest: vec![7; 32],
            epoch: 1,
            round: 0,
        };
        let encoded = plugin.observation(&ts, &[], Duration::from_secs(10));
        broker.close();
        let o = Observation::decode(&encoded.unwrap()).unwrap();
        assert_eq!(
            (o.value, o.juels_per_fee_coin, o.gas_price_subunits),
            (I192::from(100), I192::from(7), Some(I192::from(3)))
        );
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
        let (ts, d, obs) = observe_all(&plugins);
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
