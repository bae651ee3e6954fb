//! The median product plugin's LOOP services: `loop.PluginMedian` and
//! `loop.ReportingPluginFactory` ([`factory`], gRPC in [`factory_grpc`]),
//! `loop.ReportingPlugin` ([`plugin`], gRPC in [`reporting`]) and
//! `loop.MedianContract` ([`contract`]); int192 values and the standard
//! onchain config ([`value`]); the per-call deadlines of a round
//! ([`deadlines`]); and the values they carry ([`Bounds`], [`Latest`]).

pub mod contract;
pub mod deadlines;
pub mod factory;
pub mod factory_grpc;
pub mod plugin;
pub mod reporting;
pub mod value;

/// The contract's bounds for reported values (from the onchain config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Smallest valid value.
    pub min: i128,
    /// Largest valid value.
    pub max: i128,
}

impl Bounds {
    /// Whether `v` is within `min..=max`.
    pub fn contains(&self, v: i128) -> bool {
        self.min <= v && v <= self.max
    }
}

/// What the contract last accepted (`LatestTransmissionDetails`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latest {
    /// Epoch of the latest transmission.
    pub epoch: u32,
    /// Round of the latest transmission.
    pub round: u8,
    /// Its median.
    pub answer: i128,
    /// When it was transmitted (seconds since the epoch).
    pub timestamp: u64,
}
