//! `loop.ReportingPlugin` as a Rust trait ([`ReportingPlugin`]: the same in
//! the node and over gRPC, see [`super::reporting`]) and what a reporting
//! plugin reads from its contract ([`MedianContract`], over gRPC in
//! [`super::contract`]).

use std::time::Duration;

use super::Latest;
use crate::goplugin::rpc::{ready, Reply};
use crate::services::wire::ReportTimestamp;

/// An OCR2 reporting plugin instance: the same trait in-process
/// (e.g. `crate::median::plugin::MedianPlugin`) and over gRPC ([`super::reporting::ReportingPluginClient`]).
/// Every call gets its phase's deadline.
pub trait ReportingPlugin: Send + Sync {
    /// The leader's query for the round.
    fn query(&self, ts: &ReportTimestamp, deadline: Duration) -> Result<Vec<u8>, String>;
    /// This oracle's observation.
    fn observation(
        &self,
        ts: &ReportTimestamp,
        query: &[u8],
        deadline: Duration,
    ) -> Result<Vec<u8>, String>;
    /// The report from `(observer, observation)` pairs, if one is due.
    fn report(
        &self,
        ts: &ReportTimestamp,
        query: &[u8],
        observations: &[(u8, Vec<u8>)],
        deadline: Duration,
    ) -> Result<Option<Vec<u8>>, String>;
    /// Whether to accept a finalized report.
    fn should_accept_finalized_report(
        &self,
        ts: &ReportTimestamp,
        report: &[u8],
        deadline: Duration,
    ) -> Result<bool, String>;
    /// Whether to transmit an accepted report.
    fn should_transmit_accepted_report(
        &self,
        ts: &ReportTimestamp,
        report: &[u8],
        deadline: Duration,
    ) -> Result<bool, String>;
    /// Releases the instance.
    fn close(&self) -> Result<(), String>;

    /// Where a future that waits on this instance's calls is best polled:
    /// a gRPC client's completion-queue thread, where its replies arrive
    /// (see [`crate::goplugin::rpc::Spawner`]). None in-process: such a
    /// future is polled by the thread that waits for it.
    fn spawner(&self) -> Option<crate::goplugin::rpc::Spawner> {
        None
    }

    /// [`ReportingPlugin::query`] as a future, as
    /// [`ReportingPlugin::observation_async`].
    fn query_async(&self, ts: &ReportTimestamp, deadline: Duration) -> Option<Reply<Vec<u8>>> {
        let _ = (ts, deadline);
        None
    }

    /// [`ReportingPlugin::observation`] as a future that never blocks the
    /// thread polling it (its waits are calls sent without waiting, or
    /// values at hand), so one thread can wait for many: a client sends
    /// its call; the median plugin asks its sources so. None (the
    /// default): call `observation`, on a thread that may block.
    fn observation_async(
        &self,
        ts: &ReportTimestamp,
        query: &[u8],
        deadline: Duration,
    ) -> Option<Reply<Vec<u8>>> {
        let _ = (ts, query, deadline);
        None
    }

    /// [`ReportingPlugin::report`] as a future, as
    /// [`ReportingPlugin::observation_async`].
    fn report_async(
        &self,
        ts: &ReportTimestamp,
        query: &[u8],
        observations: &[(u8, Vec<u8>)],
        deadline: Duration,
    ) -> Option<Reply<Option<Vec<u8>>>> {
        let _ = (ts, query, observations, deadline);
        None
    }

    /// [`ReportingPlugin::should_transmit_accepted_report`] as a future,
    /// as [`ReportingPlugin::observation_async`].
    fn should_transmit_accepted_report_async(
        &self,
        ts: &ReportTimestamp,
        report: &[u8],
        deadline: Duration,
    ) -> Option<Reply<bool>> {
        let _ = (ts, report, deadline);
        None
    }

    /// [`ReportingPlugin::should_accept_finalized_report`] as a future, as
    /// [`ReportingPlugin::observation_async`].
    fn should_accept_finalized_report_async(
        &self,
        ts: &ReportTimestamp,
        report: &[u8],
        deadline: Duration,
    ) -> Option<Reply<bool>> {
        let _ = (ts, report, deadline);
        None
    }
}

/// The five blocking phase methods of a [`ReportingPlugin`] whose
/// `<call>_async` methods always give a future: each waits here for it
/// (`$wait`: `fn(Option<Reply<T>>) -> Result<T, String>`). Used inside the
/// `impl` of a plugin answered as futures (the median plugin, the gRPC
/// client), so the blocking calls cannot drift from the futures.
macro_rules! blocking_phases_wait_for_futures {
    ($wait:path) => {
        fn query(&self, ts: &ReportTimestamp, deadline: Duration) -> Result<Vec<u8>, String> {
            $wait(self.query_async(ts, deadline))
        }

        fn observation(
            &self,
            ts: &ReportTimestamp,
            query: &[u8],
            deadline: Duration,
        ) -> Result<Vec<u8>, String> {
            $wait(self.observation_async(ts, query, deadline))
        }

        fn report(
            &self,
            ts: &ReportTimestamp,
            query: &[u8],
            observations: &[(u8, Vec<u8>)],
            deadline: Duration,
        ) -> Result<Option<Vec<u8>>, String> {
            $wait(self.report_async(ts, query, observations, deadline))
        }

        fn should_accept_finalized_report(
            &self,
            ts: &ReportTimestamp,
            report: &[u8],
            deadline: Duration,
        ) -> Result<bool, String> {
            $wait(self.should_accept_finalized_report_async(ts, report, deadline))
        }

        fn should_transmit_accepted_report(
            &self,
            ts: &ReportTimestamp,
            report: &[u8],
            deadline: Duration,
        ) -> Result<bool, String> {
            $wait(self.should_transmit_accepted_report_async(ts, report, deadline))
        }
    };
}
pub(crate) use blocking_phases_wait_for_futures;

/// The contract's latest transmission: `(config digest, latest)`, None
/// before the first one.
pub type Details = Option<(Vec<u8>, Latest)>;

/// What the median plugin reads from the contract.
pub trait MedianContract: Send + Sync {
    /// `(config digest, latest transmission)`, None before the first one.
    fn latest_transmission_details(&self) -> Result<Option<(Vec<u8>, Latest)>, String>;
    /// The latest round a client requested on chain within `lookback`, None
    /// if there is none.
    fn latest_round_requested(&self, lookback: Duration) -> Result<Option<RoundRequested>, String>;

    /// Whether every call answers from memory in microseconds, without I/O,
    /// a call, or waiting for a lock held across either: then its gRPC
    /// server answers on the completion-queue thread that received the
    /// call, not on a pool thread. No by default.
    fn answers_at_once(&self) -> bool {
        false
    }

    /// [`MedianContract::latest_transmission_details`] as a future that
    /// never blocks the thread polling it: a client sends its call; by
    /// default, the answer when the contract [answers at
    /// once](MedianContract::answers_at_once), else None (call the
    /// blocking method).
    fn latest_transmission_details_async(&self) -> Option<Reply<Details>> {
        self.answers_at_once()
            .then(|| ready(self.latest_transmission_details()))
    }

    /// [`MedianContract::latest_round_requested`] as a future, as
    /// [`MedianContract::latest_transmission_details_async`].
    fn latest_round_requested_async(
        &self,
        lookback: Duration,
    ) -> Option<Reply<Option<RoundRequested>>> {
        self.answers_at_once()
            .then(|| ready(self.latest_round_requested(lookback)))
    }
}

/// A round requested on chain (`LatestRoundRequested`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundRequested {
    /// The config digest it was requested under.
    pub config_digest: Vec<u8>,
    /// Its epoch.
    pub epoch: u32,
    /// Its round.
    pub round: u8,
}
