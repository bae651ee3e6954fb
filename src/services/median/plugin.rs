//! `loop.ReportingPlugin` as a Rust trait ([`ReportingPlugin`]: the same in
//! the node and over gRPC, see [`super::reporting`]) and what a reporting
//! plugin reads from its contract ([`MedianContract`], over gRPC in
//! [`super::contract`]).

use std::time::Duration;

use super::Latest;
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
    /// Whether every call returns by its deadline on its own (a gRPC call
    /// carries it), so a caller may make it on its own thread rather than
    /// wait for it on another. False for code that may block past it.
    fn ends_by_deadline(&self) -> bool {
        false
    }
}

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
