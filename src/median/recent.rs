//! What a feed's oracles share in one median process. The node runs a
//! feed's oracles in one median process, sharing one factory and so one
//! codec and one set of data sources; each oracle asked them for the same
//! thing, which over gRPC was a call per oracle:
//!
//! - [`RecentMedian`]: each oracle's ShouldAcceptFinalizedReport reads the
//!   median of the same report. MedianFromReport decodes the report (a
//!   pure function of its bytes).
//! - [`RecentObservation`]: each oracle's Observation asks the feed's
//!   value, juels-per-fee-coin and gas price sources for the same round.
//!   A source's value for a round (its report timestamp) is the round's:
//!   the node's random walk and static sources are functions of it, and an
//!   HTTP source's answer fetched once serves every oracle of the round
//!   (one fetch a round, not one per oracle).
//! - [`RecentContract`]: each oracle's ShouldAcceptFinalizedReport reads
//!   the contract's latest transmission, all at once. A read still in
//!   flight is shared; one asked after it answered is a new call.
//!
//! Each keeps the latest key's call ([`Latest`]): the first oracle's call,
//! in flight (or, but for the contract, answered), and every other oracle
//! waits for that same call, sent once. A failed answer is not kept: the
//! next oracle asks again.
//! A plugin made by a Go node's factory (one oracle per factory) asks once
//! a key anyway: sharing changes nothing there.

use std::borrow::Borrow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{FutureExt, Shared};

use crate::goplugin::rpc::Reply;
use crate::services::datasource::{DataSource, ReportTimestamp};
use crate::services::median::plugin::{Details, MedianContract, RoundRequested};
use crate::services::relay::provider::{ParsedObservation, ReportCodec};

/// The latest key and its call, shared by whoever asks for that key.
struct Latest<K, V: Clone> {
    slot: Mutex<Option<(K, Shared<Reply<V>>)>>,
}

impl<K, V: Clone + Send + Sync + 'static> Latest<K, V> {
    fn new() -> Latest<K, V> {
        Latest {
            slot: Mutex::new(None),
        }
    }

    /// The latest call if it is for `key` and has not failed; else
    /// `call()`, which becomes the latest. None when `call` gives None
    /// (only a blocking call: nothing to share), and the latest is kept.
    fn share<Q>(&self, key: &Q, call: impl FnOnce() -> Option<Reply<V>>) -> Option<Reply<V>>
    where
        K: Borrow<Q>,
        Q: PartialEq + ToOwned<Owned = K> + ?Sized,
    {
        self.join(key, true, call)
    }

    /// [`Latest::share`], keeping the latest call's answer only when
    /// `keep_answer`: else only a call still in flight is shared, for an
    /// answer that may change once given (a contract read).
    fn join<Q>(
        &self,
        key: &Q,
        keep_answer: bool,
        call: impl FnOnce() -> Option<Reply<V>>,
    ) -> Option<Reply<V>>
    where
        K: Borrow<Q>,
        Q: PartialEq + ToOwned<Owned = K> + ?Sized,
    {
        let mut latest = self.slot.lock().unwrap();
        if let Some((k, answer)) = &*latest {
            let usable = match answer.peek() {
                None => true,
                Some(Ok(_)) => keep_answer,
                Some(Err(_)) => false,
            };
            if k.borrow() == key && usable {
                return Some(Box::pin(answer.clone()));
            }
        }
        let answer = call()?.shared();
        *latest = Some((key.to_owned(), answer.clone()));
        Some(Box::pin(answer))
    }
}

/// A report codec that shares the median of the latest report (see the
/// module doc); every other call goes to the codec it wraps.
pub struct RecentMedian {
    codec: Arc<dyn ReportCodec>,
    latest: Latest<Vec<u8>, i128>,
}

impl RecentMedian {
    /// Wraps `codec`.
    pub fn new(codec: Arc<dyn ReportCodec>) -> RecentMedian {
        RecentMedian {
            codec,
            latest: Latest::new(),
        }
    }
}

impl ReportCodec for RecentMedian {
    fn build_report(&self, obs: &[ParsedObservation]) -> Result<Vec<u8>, String> {
        self.codec.build_report(obs)
    }

    fn median_from_report(&self, report: &[u8]) -> Result<i128, String> {
        match self.median_from_report_async(report) {
            Some(median) => futures_executor::block_on(median),
            None => self.codec.median_from_report(report),
        }
    }

    fn max_report_length(&self, n: usize) -> Result<usize, String> {
        self.codec.max_report_length(n)
    }

    fn answers_at_once(&self) -> bool {
        self.codec.answers_at_once()
    }

    fn build_report_async(&self, obs: &[ParsedObservation]) -> Option<Reply<Vec<u8>>> {
        self.codec.build_report_async(obs)
    }

    /// The latest report's median call, shared, unless it failed; else a
    /// new call, which becomes the latest. None when the wrapped codec
    /// only answers blocking calls (nothing to share then).
    fn median_from_report_async(&self, report: &[u8]) -> Option<Reply<i128>> {
        self.latest
            .share(report, || self.codec.median_from_report_async(report))
    }
}

/// A data source that shares its answer for the latest round among a
/// feed's oracles (see the module doc).
pub struct RecentObservation {
    source: Arc<dyn DataSource>,
    latest: Latest<ReportTimestamp, i128>,
}

impl RecentObservation {
    /// Wraps `source`.
    pub fn new(source: Arc<dyn DataSource>) -> RecentObservation {
        RecentObservation {
            source,
            latest: Latest::new(),
        }
    }

    /// The value for `ts`: at hand from the wrapped source, else the latest
    /// round's call, shared, unless it failed; else a new call within
    /// `deadline`, which becomes the latest: sent without waiting, or, for
    /// a source that only answers blocking calls (an HTTP source in the
    /// node's process), run on a pool thread.
    fn value(&self, ts: &ReportTimestamp, deadline: Duration) -> Reply<i128> {
        if let Some(value) = self.source.observe_now(ts) {
            return crate::goplugin::rpc::ready(value);
        }
        let call = || {
            let t = ts.clone();
            Some(crate::goplugin::rpc::sent_or_blocking(
                &self.source,
                |s| s.observe_async(ts, deadline),
                move |s| s.observe(&t, deadline),
            ))
        };
        self.latest
            .share(ts, call)
            .expect("the call is always sent")
    }
}

impl DataSource for RecentObservation {
    fn observe(&self, ts: &ReportTimestamp, deadline: Duration) -> Result<i128, String> {
        futures_executor::block_on(self.value(ts, deadline))
    }

    /// A value at hand is the wrapped source's own (nothing to share).
    fn observe_now(&self, ts: &ReportTimestamp) -> Option<Result<i128, String>> {
        self.source.observe_now(ts)
    }

    fn observe_async(&self, ts: &ReportTimestamp, deadline: Duration) -> Option<Reply<i128>> {
        Some(self.value(ts, deadline))
    }
}

/// A median contract view that shares a LatestTransmissionDetails call
/// in flight among a feed's oracles: their ShouldAcceptFinalizedReport
/// calls come together and each read the contract at once. Only a call
/// still in flight is shared (the contract changes with every
/// transmission): a read asked after the last one answered is a new call.
pub struct RecentContract {
    contract: Arc<dyn MedianContract>,
    in_flight: Latest<(), Details>,
}

impl RecentContract {
    /// Wraps `contract`.
    pub fn new(contract: Arc<dyn MedianContract>) -> RecentContract {
        RecentContract {
            contract,
            in_flight: Latest::new(),
        }
    }
}

impl MedianContract for RecentContract {
    fn latest_transmission_details(&self) -> Result<Details, String> {
        match self.latest_transmission_details_async() {
            Some(details) => futures_executor::block_on(details),
            None => self.contract.latest_transmission_details(),
        }
    }

    fn latest_round_requested(&self, lookback: Duration) -> Result<Option<RoundRequested>, String> {
        self.contract.latest_round_requested(lookback)
    }

    fn answers_at_once(&self) -> bool {
        self.contract.answers_at_once()
    }

    /// The call in flight, shared; else a new one. None when the wrapped
    /// contract only answers blocking calls.
    fn latest_transmission_details_async(&self) -> Option<Reply<Details>> {
        self.in_flight.join(&(), false, || {
            self.contract.latest_transmission_details_async()
        })
    }

    fn latest_round_requested_async(
        &self,
        lookback: Duration,
    ) -> Option<Reply<Option<RoundRequested>>> {
        self.contract.latest_round_requested_async(lookback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devchain::provider::DevchainCodec;
    use crate::services::relay::provider::{report_codec_server, ProviderClient};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// The devchain codec, counting the medians it is asked for, failing
    /// the first `fail` of them.
    struct Counting {
        asked: AtomicUsize,
        fail: usize,
    }

    impl ReportCodec for Counting {
        fn build_report(&self, obs: &[ParsedObservation]) -> Result<Vec<u8>, String> {
            DevchainCodec.build_report(obs)
        }

        fn median_from_report(&self, report: &[u8]) -> Result<i128, String> {
            if self.asked.fetch_add(1, Ordering::SeqCst) < self.fail {
                return Err("not now".into());
            }
            DevchainCodec.median_from_report(report)
        }

        fn max_report_length(&self, n: usize) -> Result<usize, String> {
            DevchainCodec.max_report_length(n)
        }
    }

    /// A broker serving over real sockets in a private directory.
    fn broker() -> crate::goplugin::broker::Broker {
        crate::goplugin::broker::Broker::new(crate::goplugin::sockdir::SocketDir::create().unwrap())
    }

    fn report(value: i128) -> Vec<u8> {
        DevchainCodec
            .build_report(&[ParsedObservation {
                timestamp: 1,
                value,
                juels_per_fee_coin: 1,
                gas_price_subunits: 0,
                observer: 0,
            }])
            .unwrap()
    }

    /// Over a real socket: four oracles asking the median of one report,
    /// together, make one call to the relayer's codec; a new report makes
    /// another; a failed answer is asked again, not kept.
    #[test]
    fn the_median_of_one_report_is_asked_once_for_all_oracles() {
        let broker = broker();
        let counting = Arc::new(Counting {
            asked: AtomicUsize::new(0),
            fail: 1,
        });
        broker
            .serve(1, vec![report_codec_server(counting.clone())])
            .unwrap();
        let client = ProviderClient::new(broker.local_channel(1), Duration::from_secs(5));
        let codec = RecentMedian::new(Arc::new(client));
        let asked = || counting.asked.load(Ordering::SeqCst);

        let (a, b) = (report(100), report(200));
        let failed = codec.median_from_report(&a).unwrap_err();
        assert!(failed.ends_with("not now"), "{failed}");
        let together: Vec<Reply<i128>> = (0..4)
            .map(|_| codec.median_from_report_async(&a).unwrap())
            .collect();
        let medians = futures_executor::block_on(futures_util::future::join_all(together));
        assert_eq!(medians, vec![Ok(100); 4]);
        assert_eq!(asked(), 2, "the failure, then one call for four oracles");
        assert_eq!(codec.median_from_report(&a), Ok(100));
        assert_eq!(asked(), 2, "kept for the same report");
        assert_eq!(codec.median_from_report(&b), Ok(200));
        assert_eq!(asked(), 3, "a new report is asked");
        broker.close();
    }

    /// A source counting the values it is asked for, failing the first
    /// `fail`; it only answers blocking calls (no value at hand).
    struct CountingSource {
        asked: AtomicUsize,
        fail: usize,
    }

    impl DataSource for CountingSource {
        fn observe(&self, ts: &ReportTimestamp, _deadline: Duration) -> Result<i128, String> {
            if self.asked.fetch_add(1, Ordering::SeqCst) < self.fail {
                return Err("not now".into());
            }
            // Slow enough that the four asks below overlap.
            std::thread::sleep(Duration::from_millis(20));
            Ok(i128::from(ts.epoch) * 10)
        }
    }

    fn round(epoch: u32) -> ReportTimestamp {
        ReportTimestamp {
            config_digest: vec![7; 32],
            epoch,
            round: 1,
        }
    }

    /// Four oracles asking for one round's value together get one call's
    /// answer; the same round is not asked again; a new round is; a
    /// failure is asked again, not kept. `shared` wraps the source as the
    /// median plugin holds it.
    fn one_call_a_round(counting: &CountingSource, shared: &RecentObservation) {
        let asked = || counting.asked.load(Ordering::SeqCst);
        let d = Duration::from_secs(5);
        let failed = shared.observe(&round(1), d).unwrap_err();
        assert!(failed.ends_with("not now"), "{failed}");
        let together: Vec<Reply<i128>> = (0..4)
            .map(|_| shared.observe_async(&round(1), d).unwrap())
            .collect();
        let values = futures_executor::block_on(futures_util::future::join_all(together));
        assert_eq!(values, vec![Ok(10); 4]);
        assert_eq!(asked(), 2, "the failure, then one call for four oracles");
        assert_eq!(shared.observe(&round(1), d), Ok(10));
        assert_eq!(asked(), 2, "kept for the same round");
        assert_eq!(shared.observe(&round(2), d), Ok(20));
        assert_eq!(asked(), 3, "a new round is asked");
    }

    /// Over a real socket, as a median LOOPP asks the node's sources.
    #[test]
    fn a_round_is_observed_once_for_all_oracles_over_grpc() {
        let broker = broker();
        let counting = Arc::new(CountingSource {
            asked: AtomicUsize::new(0),
            fail: 1,
        });
        broker
            .serve(
                1,
                vec![crate::services::datasource::server(counting.clone())],
            )
            .unwrap();
        let client = crate::services::datasource::DataSourceClient::new(
            "data-source",
            broker.local_channel(1),
        );
        one_call_a_round(&counting, &RecentObservation::new(Arc::new(client)));
        broker.close();
    }

    /// In-process, a source that only blocks (an HTTP source) is asked on
    /// one pool thread for all oracles.
    #[test]
    fn a_blocking_source_is_asked_once_a_round_in_process() {
        let counting = Arc::new(CountingSource {
            asked: AtomicUsize::new(0),
            fail: 1,
        });
        one_call_a_round(&counting, &RecentObservation::new(counting.clone()));
    }

    /// A contract whose reads wait for a go-ahead each, then answer the
    /// number of reads made so far as the latest epoch.
    struct Gated {
        reads: AtomicUsize,
        go: Mutex<crossbeam_channel::Receiver<()>>,
    }

    impl MedianContract for Gated {
        fn latest_transmission_details(&self) -> Result<Details, String> {
            let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
            let go = self.go.lock().unwrap().recv_timeout(Duration::from_secs(5));
            go.map_err(|e| e.to_string())?;
            let latest = crate::services::median::Latest {
                epoch: n as u32,
                round: 1,
                answer: 5,
                timestamp: 0,
            };
            Ok(Some((vec![1; 32], latest)))
        }

        fn latest_round_requested(&self, _: Duration) -> Result<Option<RoundRequested>, String> {
            Ok(None)
        }
    }

    /// Over a real socket: four oracles reading the contract while one read
    /// is in flight share it; a read asked after it answered is a new one.
    #[test]
    fn a_contract_read_in_flight_is_shared_and_an_answered_one_is_not_kept() {
        let broker = broker();
        let (go, wait) = crossbeam_channel::unbounded();
        let gated = Arc::new(Gated {
            reads: AtomicUsize::new(0),
            go: Mutex::new(wait),
        });
        let served = crate::services::median::contract::server(gated.clone());
        broker.serve(1, vec![served]).unwrap();
        let client = crate::services::median::contract::MedianContractClient::new(
            "relay",
            broker.local_channel(1),
            Duration::from_secs(5),
        );
        let contract = RecentContract::new(Arc::new(client));
        let epoch = |d: Result<Details, String>| d.unwrap().unwrap().1.epoch;

        let together: Vec<Reply<Details>> = (0..4)
            .map(|_| contract.latest_transmission_details_async().unwrap())
            .collect();
        go.send(()).unwrap();
        let read = futures_executor::block_on(futures_util::future::join_all(together));
        assert_eq!(read.into_iter().map(epoch).collect::<Vec<_>>(), vec![1; 4]);
        assert_eq!(gated.reads.load(Ordering::SeqCst), 1, "one read for four");
        go.send(()).unwrap();
        assert_eq!(
            epoch(contract.latest_transmission_details()),
            2,
            "read again"
        );
        broker.close();
    }
}
