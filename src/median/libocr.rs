//! libocr's numerical median encodings, which loopp and Go oracles must
//! share in one DON: the observation ([`Observation`]) and the offchain
//! config ([`OffchainConfig`]), as the protobuf messages of
//! `proto/median_offchain.proto`.

use std::time::Duration;

use protobuf::Message;

use crate::proto::median_offchain::{NumericalMedianConfigProto, NumericalMedianObservationProto};
use crate::services::median::value::I192;

/// One oracle's observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// When it was observed, Unix seconds.
    pub timestamp: u32,
    /// The value.
    pub value: I192,
    /// Juels per fee coin.
    pub juels_per_fee_coin: I192,
    /// The gas price in the chain's smallest unit; None: not observed
    /// (empty on the wire, read as 0).
    pub gas_price_subunits: Option<I192>,
}

impl Observation {
    /// The protobuf bytes (libocr's `NumericalMedianObservationProto`).
    pub fn encode(&self) -> Vec<u8> {
        NumericalMedianObservationProto {
            timestamp: self.timestamp,
            value: self.value.0.to_vec(),
            juelsPerFeeCoin: self.juels_per_fee_coin.0.to_vec(),
            gasPriceSubunits: self
                .gas_price_subunits
                .map(|g| g.0.to_vec())
                .unwrap_or_default(),
            ..Default::default()
        }
        .write_to_bytes()
        .expect("a message of plain fields encodes")
    }

    /// An observation from its bytes; what libocr drops as invalid is an
    /// error saying why (not protobuf, a value or juels that is not 24
    /// bytes, a gas price that is neither empty nor 24 bytes).
    pub fn decode(bytes: &[u8]) -> Result<Observation, String> {
        let p = NumericalMedianObservationProto::parse_from_bytes(bytes)
            .map_err(|e| format!("observation: not a NumericalMedianObservationProto: {e}"))?;
        let field = |name: &str, b: &[u8]| {
            I192::from_wire(b).map_err(|e| format!("observation {name}: {e}"))
        };
        Ok(Observation {
            timestamp: p.timestamp,
            value: field("value", &p.value)?,
            juels_per_fee_coin: field("juelsPerFeeCoin", &p.juelsPerFeeCoin)?,
            gas_price_subunits: match p.gasPriceSubunits.as_slice() {
                [] => None,
                b => Some(field("gasPriceSubunits", b)?),
            },
        })
    }
}

/// The longest observation libocr accepts: timestamp, three int192s and
/// protobuf framing.
pub const MAX_OBSERVATION_LENGTH: usize = 4 + 24 * 3 + 16;

/// When to report and when to accept a report (libocr's
/// `NumericalMedianConfigProto`). All zero (the empty config of a fresh
/// contract) reports on any change and never on time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffchainConfig {
    /// Never report on deviation (only on time or request).
    pub alpha_report_infinite: bool,
    /// Report when the median moves this much from the contract's answer,
    /// parts per billion.
    pub alpha_report_ppb: u64,
    /// Never accept a report for deviating from the last accepted one.
    pub alpha_accept_infinite: bool,
    /// Accept a report whose median moved this much from the last accepted
    /// one, parts per billion.
    pub alpha_accept_ppb: u64,
    /// Report when the contract's answer is older than this (the
    /// heartbeat); zero: never.
    pub delta_c: Duration,
}

impl OffchainConfig {
    /// The protobuf bytes (empty for the all-zero config).
    pub fn encode(&self) -> Vec<u8> {
        NumericalMedianConfigProto {
            alpha_report_infinite: self.alpha_report_infinite,
            alpha_report_ppb: self.alpha_report_ppb,
            alpha_accept_infinite: self.alpha_accept_infinite,
            alpha_accept_ppb: self.alpha_accept_ppb,
            delta_c_nanoseconds: u64::try_from(self.delta_c.as_nanos()).unwrap_or(u64::MAX),
            ..Default::default()
        }
        .write_to_bytes()
        .expect("a message of plain fields encodes")
    }

    /// A config from its bytes, as libocr reads it: any protobuf of these
    /// fields (empty: all zero); a deltaC of 2^63 ns or more is refused.
    pub fn decode(bytes: &[u8]) -> Result<OffchainConfig, String> {
        let p = NumericalMedianConfigProto::parse_from_bytes(bytes)
            .map_err(|e| format!("offchain config: not a NumericalMedianConfigProto: {e}"))?;
        if p.delta_c_nanoseconds > i64::MAX as u64 {
            return Err(format!(
                "offchain config: deltaC {} ns is negative as a Go duration",
                p.delta_c_nanoseconds
            ));
        }
        Ok(OffchainConfig {
            alpha_report_infinite: p.alpha_report_infinite,
            alpha_report_ppb: p.alpha_report_ppb,
            alpha_accept_infinite: p.alpha_accept_infinite,
            alpha_accept_ppb: p.alpha_accept_ppb,
            delta_c: Duration::from_nanos(p.delta_c_nanoseconds),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_round_trip_and_invalid_ones_are_named() {
        let o = Observation {
            timestamp: 1_700_000_000,
            value: I192::from(-(1i128 << 100)),
            juels_per_fee_coin: I192::MAX,
            gas_price_subunits: Some(I192::from(0)),
        };
        assert_eq!(Observation::decode(&o.encode()), Ok(o));
        let no_gas = Observation {
            gas_price_subunits: None,
            ..o
        };
        assert_eq!(Observation::decode(&no_gas.encode()), Ok(no_gas));
        assert!(o.encode().len() <= MAX_OBSERVATION_LENGTH);
        let short = NumericalMedianObservationProto {
            value: vec![1; 23],
            juelsPerFeeCoin: vec![0; 24],
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        assert!(Observation::decode(&short)
            .unwrap_err()
            .contains("observation value: an int192 is 24 bytes, not 23"));
        assert!(Observation::decode(b"\xff\xff").is_err());
    }

    #[test]
    fn offchain_configs_round_trip_and_the_empty_one_is_all_zero() {
        assert_eq!(OffchainConfig::decode(&[]), Ok(OffchainConfig::default()));
        assert!(OffchainConfig::default().encode().is_empty());
        let c = OffchainConfig {
            alpha_report_infinite: false,
            alpha_report_ppb: 1_000_000,
            alpha_accept_infinite: true,
            alpha_accept_ppb: 5,
            delta_c: Duration::from_secs(60),
        };
        assert_eq!(OffchainConfig::decode(&c.encode()), Ok(c));
        let negative = NumericalMedianConfigProto {
            delta_c_nanoseconds: 1 << 63,
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        assert!(OffchainConfig::decode(&negative)
            .unwrap_err()
            .contains("negative as a Go duration"));
    }
}
