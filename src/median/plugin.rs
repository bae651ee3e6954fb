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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::libocr::{Observation, OffchainConfig};
use super::math;
use crate::goplugin::rpc::{ready, sent_or_blocking, Reply};
use crate::services::datasource::{DataSource, ReportTimestamp};
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
    accepted: Arc<Mutex<((u32, u8), i128)>>,
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

/// An observation from the answers of the value, juels-per-fee-coin and
/// (if asked) gas price sources, in that order.
fn encode_observation(answers: Vec<Result<i128, String>>) -> Result<Vec<u8>, String> {
    let mut got = answers.into_iter();
    let mut next = || got.next().transpose();
    let value = next()?.ok_or("no value observed")?;
    let juels = next()?.ok_or("no juels per fee coin observed")?;
    let gas = next()?;
    Ok(Observation {
        timestamp: now_since_epoch().as_secs() as u32,
        value: I192::from(value),
        juels_per_fee_coin: I192::from(juels),
        gas_price_subunits: gas.map(I192::from),
    }
    .encode())
}

/// What the error log is told when oracle `oracle`'s observation for `ts`
/// failed with `e`.
fn failure_text(oracle: u8, ts: &ReportTimestamp, e: &str) -> String {
    format!(
        "oracle {oracle} epoch {} round {}: observation failed: {e}",
        ts.epoch, ts.round
    )
}

impl MedianPlugin {
    /// The sources an observation asks, in its order: value,
    /// juels-per-fee-coin, and gas price when there is one.
    fn sources(&self) -> impl Iterator<Item = &Arc<dyn DataSource>> {
        [
            Some(&self.source),
            Some(&self.juels),
            self.gas_price.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

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
            accepted: Arc::new(Mutex::new(((0, 0), 0))),
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

    /// The observations that decode (at least f+1), in the order Go's
    /// sort.Slice gives by value, as libocr sorts: equal values of 13 or
    /// more observations must land where Go puts them.
    fn valid_observations(
        &self,
        observations: &[(u8, Vec<u8>)],
    ) -> Result<Vec<ParsedObservation>, String> {
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
        super::gosort::sort_like_go(&mut valid, |a, b| a.value < b.value);
        Ok(valid)
    }
}

/// libocr's numerical median plugin, each call a future that never blocks
/// the thread polling it ([`ReportingPlugin::observation_async`] and the
/// others): the sources, contract and codec are asked without waiting
/// when they can (over gRPC, or at hand), else on a pool thread. The
/// blocking calls wait for the same futures.
impl ReportingPlugin for MedianPlugin {
    crate::services::median::plugin::blocking_phases_wait_for_futures!(block_on);

    fn close(&self) -> Result<(), String> {
        Ok(())
    }

    /// Query: the median's leader asks nothing.
    fn query_async(&self, _ts: &ReportTimestamp, _deadline: Duration) -> Option<Reply<Vec<u8>>> {
        Some(ready(Ok(Vec::new())))
    }

    /// Observation: the value, juels-per-fee-coin and gas price, asked
    /// together as libocr asks them, each within `deadline`; any source
    /// failing fails the observation, and the failure is saved to the
    /// error log (when there is one) before the answer.
    fn observation_async(
        &self,
        ts: &ReportTimestamp,
        query: &[u8],
        deadline: Duration,
    ) -> Option<Reply<Vec<u8>>> {
        if let Err(e) = empty_query(query) {
            return Some(ready(Err(e)));
        }
        let asked: Vec<Reply<i128>> = self
            .sources()
            .map(|source| {
                let t = ts.clone();
                sent_or_blocking(
                    source,
                    |s| s.observe_async(ts, deadline),
                    move |s| s.observe(&t, deadline),
                )
            })
            .collect();
        let (errors, oracle, ts) = (self.errors.clone(), self.oracle, ts.clone());
        Some(Box::pin(async move {
            let observed = encode_observation(futures_util::future::join_all(asked).await);
            if let (Err(e), Some(log)) = (&observed, errors) {
                let message = failure_text(oracle, &ts, e);
                let m = message.clone();
                let saved = sent_or_blocking(
                    &log,
                    |l| l.save_error_async(&message),
                    move |l| l.save_error(&m),
                );
                let _ = saved.await;
            }
            observed
        }))
    }

    /// Report, as libocr decides: the valid observations (at least f+1)
    /// sorted by value, their median checked against the contract's bounds;
    /// a report when this is the config's first round, the median deviates
    /// from the contract's answer by alphaReport, the answer is older than
    /// deltaC, or a round requested on chain is unanswered. The contract's
    /// latest transmission and requested round are read together.
    fn report_async(
        &self,
        ts: &ReportTimestamp,
        query: &[u8],
        observations: &[(u8, Vec<u8>)],
        _deadline: Duration,
    ) -> Option<Reply<Option<Vec<u8>>>> {
        if let Err(e) = empty_query(query) {
            return Some(ready(Err(e)));
        }
        let valid = match self.valid_observations(observations) {
            Ok(valid) => valid,
            Err(e) => return Some(ready(Err(e))),
        };
        let delta_c = self.config.delta_c;
        let details = sent_or_blocking(
            &self.contract,
            |c| c.latest_transmission_details_async(),
            |c| c.latest_transmission_details(),
        );
        let requested = sent_or_blocking(
            &self.contract,
            |c| c.latest_round_requested_async(delta_c),
            move |c| c.latest_round_requested(delta_c),
        );
        let (codec, config, bounds) = (self.codec.clone(), self.config, self.bounds);
        let (max, ts) = (self.max_report_length, ts.clone());
        Some(Box::pin(async move {
            let (details, requested) = futures_util::future::join(details, requested).await;
            let answer = valid[valid.len() / 2].value;
            if !report_due(&ts, answer, bounds, &config, details?, requested?) {
                return Ok(None);
            }
            let report = match codec.build_report_async(&valid) {
                Some(sent) => sent.await?,
                None => crate::goplugin::rpc::blocking(move || codec.build_report(&valid)).await?,
            };
            if report.len() > max {
                return Err(format!(
                    "report of {} bytes, more than the {max} the codec allows",
                    report.len()
                ));
            }
            Ok(Some(report))
        }))
    }

    /// Accept, as libocr decides: only reports newer than this oracle's
    /// last accepted one and the contract's latest, under the contract's
    /// config; then when the median deviates from the last accepted one by
    /// alphaAccept, or nothing accepted is still pending on chain. The
    /// contract and the report's median are read together.
    fn should_accept_finalized_report_async(
        &self,
        ts: &ReportTimestamp,
        report: &[u8],
        _deadline: Duration,
    ) -> Option<Reply<bool>> {
        let this = (ts.epoch, ts.round);
        if self.accepted.lock().unwrap().0 >= this || report.len() > self.max_report_length {
            return Some(ready(Ok(false)));
        }
        let details = sent_or_blocking(
            &self.contract,
            |c| c.latest_transmission_details_async(),
            |c| c.latest_transmission_details(),
        );
        let r = report.to_vec();
        let median = sent_or_blocking(
            &self.codec,
            |c| c.median_from_report_async(report),
            move |c| c.median_from_report(&r),
        );
        let (accepted, config, digest) =
            (self.accepted.clone(), self.config, ts.config_digest.clone());
        Some(Box::pin(async move {
            let (details, median) = futures_util::future::join(details, median).await;
            let (on_chain, latest, _, _) = latest_of(details?);
            if on_chain != digest || latest >= this {
                return Ok(false);
            }
            let median = median?;
            let mut accepted = accepted.lock().unwrap();
            // Another call may have accepted a newer report meanwhile.
            if accepted.0 >= this {
                return Ok(false);
            }
            let deviates = !config.alpha_accept_infinite
                && math::deviates(accepted.1, median, config.alpha_accept_ppb);
            let nothing_pending = latest >= accepted.0;
            let accept = deviates || nothing_pending;
            if accept {
                *accepted = (this, median);
            }
            Ok(accept)
        }))
    }

    /// Transmit, as libocr decides: when the contract has not moved past the
    /// report under the same config.
    fn should_transmit_accepted_report_async(
        &self,
        ts: &ReportTimestamp,
        _report: &[u8],
        _deadline: Duration,
    ) -> Option<Reply<bool>> {
        let details = sent_or_blocking(
            &self.contract,
            |c| c.latest_transmission_details_async(),
            |c| c.latest_transmission_details(),
        );
        let ts = ts.clone();
        Some(Box::pin(async move {
            let (digest, latest, _, _) = latest_of(details.await?);
            Ok(digest == ts.config_digest && latest < (ts.epoch, ts.round))
        }))
    }
}

/// Waits here for what an `_async` method of the plugin gives (always
/// one).
fn block_on<T>(reply: Option<Reply<T>>) -> Result<T, String> {
    futures_executor::block_on(reply.expect("the median plugin answers every call as a future"))
}

/// Whether libocr's median reports `answer` for `ts`, given the contract's
/// latest transmission and requested round.
fn report_due(
    ts: &ReportTimestamp,
    answer: i128,
    bounds: Bounds,
    config: &OffchainConfig,
    details: Option<(Vec<u8>, crate::services::median::Latest)>,
    requested: Option<crate::services::median::plugin::RoundRequested>,
) -> bool {
    let (digest, latest, latest_answer, latest_time) = latest_of(details);
    if !bounds.contains(answer) {
        return false;
    }
    let initial_round = digest == ts.config_digest && latest == (0, 0);
    let deviation = !config.alpha_report_infinite
        && math::deviates(latest_answer, answer, config.alpha_report_ppb);
    let delta_c_elapsed = Duration::from_secs(latest_time) + config.delta_c < now_since_epoch();
    let unfulfilled = requested
        .is_some_and(|r| r.config_digest == ts.config_digest && (r.epoch, r.round) >= latest);
    initial_round || deviation || delta_c_elapsed || unfulfilled
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

    /// A source, at hand or not, that notes the threads it is asked on.
    struct Noting {
        value: i128,
        at_hand: bool,
        ran_on: Arc<crate::testutil::ThreadNames>,
    }

    impl DataSource for Noting {
        fn observe(&self, _ts: &ReportTimestamp, _d: Duration) -> Result<i128, String> {
            self.ran_on.record();
            Ok(self.value)
        }

        fn observe_now(&self, ts: &ReportTimestamp) -> Option<Result<i128, String>> {
            self.at_hand
                .then(|| self.observe(ts, Duration::from_secs(1)))
        }
    }

    /// A contract, answering at once or not, that notes the threads it is
    /// read on: 100 transmitted at epoch 1 round 0.
    struct NotingContract {
        at_once: bool,
        ran_on: Arc<crate::testutil::ThreadNames>,
    }

    impl MedianContract for NotingContract {
        fn latest_transmission_details(&self) -> Result<Option<(Vec<u8>, Latest)>, String> {
            self.ran_on.record();
            Ok(Some((
                vec![7; 32],
                Latest {
                    epoch: 1,
                    round: 0,
                    answer: 100,
                    timestamp: now_since_epoch().as_secs(),
                },
            )))
        }

        fn latest_round_requested(&self, _: Duration) -> Result<Option<RoundRequested>, String> {
            self.ran_on.record();
            Ok(None)
        }

        fn answers_at_once(&self) -> bool {
            self.at_once
        }
    }

    /// Served over a real socket, the plugin answers every phase on the
    /// thread that received the call when its sources and contract answer
    /// at once (no pool thread, no hand-off), and reads those that do not
    /// on pool threads; the answers are the same either way.
    #[test]
    fn served_phases_run_on_the_receiving_thread_when_their_parts_answer_at_once() {
        use crate::services::median::reporting::{server, ReportingPluginClient};
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
        for (id, at_hand) in [(1, true), (2, false)] {
            let ran_on = Arc::new(crate::testutil::ThreadNames::default());
            let source = |value| -> Arc<dyn DataSource> {
                Arc::new(Noting {
                    value,
                    at_hand,
                    ran_on: ran_on.clone(),
                })
            };
            let plugin = MedianPlugin::new(
                0,
                1,
                Bounds { min: 0, max: 1000 },
                FeedSettings {
                    deviation_ppb: 0,
                    heartbeat: Duration::from_secs(3600),
                },
                source(200),
                source(7),
                Arc::new(NotingContract {
                    at_once: at_hand,
                    ran_on: ran_on.clone(),
                }),
                Arc::new(DevchainCodec),
            );
            broker.serve(id, vec![server(Arc::new(plugin))]).unwrap();
            let client = ReportingPluginClient::new("median", broker.local_channel(id));
            let ts = ReportTimestamp {
                config_digest: vec![7; 32],
                epoch: 2,
                round: 1,
            };
            let d = Duration::from_secs(5);
            assert_eq!(client.query(&ts, d), Ok(Vec::new()));
            let obs: Vec<(u8, Vec<u8>)> = (0..2)
                .map(|o| (o, client.observation(&ts, &[], d).unwrap()))
                .collect();
            let report = client
                .report(&ts, &[], &obs, d)
                .unwrap()
                .expect("200 deviates from 100: a report");
            assert_eq!(DevchainCodec.median_from_report(&report), Ok(200));
            assert_eq!(
                client.should_accept_finalized_report(&ts, &report, d),
                Ok(true)
            );
            assert_eq!(
                client.should_transmit_accepted_report(&ts, &report, d),
                Ok(true)
            );
            // 2 observations of 2 sources; Report reads the contract twice,
            // ShouldAccept and ShouldTransmit once each.
            let seen = ran_on.seen();
            assert_eq!(seen.len(), 8, "{seen:?}");
            for name in &seen {
                assert_eq!(name.starts_with("loopp-pool"), !at_hand, "{seen:?}");
            }
        }
        broker.close();
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
