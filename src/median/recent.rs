//! [`RecentMedian`]: a feed's report codec that asks for the median of a
//! report once for all of the feed's oracles. The node runs a feed's
//! oracles in one median process, sharing one factory and so one codec;
//! each oracle's ShouldAcceptFinalizedReport reads the median of the same
//! report, which over gRPC was a call to the relayer per oracle.
//! MedianFromReport decodes the report (a pure function of its bytes), so
//! the answer of the latest report is shared: the first oracle's call,
//! and every other oracle waits for that same call, sent once.
//!
//! A failed answer is not kept: the next oracle asks again.

use std::sync::{Arc, Mutex};

use futures_util::future::{FutureExt, Shared};

use crate::goplugin::rpc::Reply;
use crate::services::relay::provider::{ParsedObservation, ReportCodec};

/// A report and its median call, shared by whoever asks for it.
type Latest = (Vec<u8>, Shared<Reply<i128>>);

/// A report codec that shares the median of the latest report (see the
/// module doc); every other call goes to the codec it wraps.
pub struct RecentMedian {
    codec: Arc<dyn ReportCodec>,
    latest: Mutex<Option<Latest>>,
}

impl RecentMedian {
    /// Wraps `codec`.
    pub fn new(codec: Arc<dyn ReportCodec>) -> RecentMedian {
        RecentMedian {
            codec,
            latest: Mutex::new(None),
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
        let mut latest = self.latest.lock().unwrap();
        if let Some((bytes, median)) = &*latest {
            let failed = matches!(median.peek(), Some(Err(_)));
            if bytes == report && !failed {
                return Some(Box::pin(median.clone()));
            }
        }
        let median = self.codec.median_from_report_async(report)?.shared();
        *latest = Some((report.to_vec(), median.clone()));
        Some(Box::pin(median))
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
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
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
}
