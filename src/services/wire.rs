//! Conversions between LOOP wire messages and Rust values.

use crate::proto::loop_types::{BigInt, ReportTimestamp as WireTimestamp};

/// An i128 as a wire BigInt (sign + big-endian magnitude, no leading zeros).
pub fn to_big(v: i128) -> BigInt {
    let mag = v.unsigned_abs().to_be_bytes();
    let first = mag.iter().position(|b| *b != 0).unwrap_or(mag.len());
    BigInt {
        negative: v < 0,
        value: mag[first..].to_vec(),
        ..Default::default()
    }
}

/// A wire BigInt as an i128; larger values are an error saying so.
pub fn from_big(b: &BigInt) -> Result<i128, String> {
    let bytes: Vec<u8> = b.value.iter().copied().skip_while(|x| *x == 0).collect();
    if bytes.len() > 16 {
        return Err(format!(
            "integer of {} bytes does not fit in 128 bits",
            bytes.len()
        ));
    }
    let mut buf = [0u8; 16];
    buf[16 - bytes.len()..].copy_from_slice(&bytes);
    let mag = u128::from_be_bytes(buf);
    if b.negative {
        if mag > i128::MIN.unsigned_abs() {
            return Err("negative integer below -2^127".into());
        }
        Ok(0i128.wrapping_sub_unsigned(mag))
    } else {
        i128::try_from(mag).map_err(|_| "integer above 2^127-1".to_string())
    }
}

/// Bytes as lower-case hex (how the chain file stores digests).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex back to bytes; pairs that are not hex are skipped (the chain file only
/// holds what [`hex`] wrote).
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| {
            s.get(2 * i..2 * i + 2)
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect()
}

/// An OCR round's identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportTimestamp {
    /// The config digest (32 bytes on chain).
    pub config_digest: Vec<u8>,
    /// Epoch.
    pub epoch: u32,
    /// Round within the epoch.
    pub round: u8,
}

impl ReportTimestamp {
    /// A number that grows with (epoch, round): `epoch * 256 + round`.
    pub fn sequence(&self) -> u64 {
        (u64::from(self.epoch) << 8) | u64::from(self.round)
    }

    /// To the wire.
    pub fn to_wire(&self) -> WireTimestamp {
        WireTimestamp {
            configDigest: self.config_digest.clone(),
            epoch: self.epoch,
            round: u32::from(self.round),
            ..Default::default()
        }
    }

    /// From the wire; a round above 255 is an error.
    pub fn from_wire(w: &WireTimestamp) -> Result<ReportTimestamp, String> {
        Ok(ReportTimestamp {
            config_digest: w.configDigest.clone(),
            epoch: w.epoch,
            round: u8::try_from(w.round)
                .map_err(|_| format!("round {} is not a uint8", w.round))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigints_round_trip_and_refuse_what_does_not_fit() {
        for v in [
            0,
            1,
            -1,
            255,
            256,
            -256,
            i128::MAX,
            i128::MIN,
            1 << 100,
            -(1 << 100),
        ] {
            assert_eq!(from_big(&to_big(v)), Ok(v), "{v}");
        }
        assert_eq!(to_big(256).value, vec![1, 0]);
        assert!(to_big(0).value.is_empty());
        let big = BigInt {
            negative: false,
            value: vec![1; 17],
            ..Default::default()
        };
        assert!(from_big(&big).unwrap_err().contains("17 bytes"));
        let over = BigInt {
            negative: false,
            value: vec![0x80; 16],
            ..Default::default()
        };
        assert!(from_big(&over).is_err());
        let with_zeros = BigInt {
            negative: true,
            value: vec![0, 0, 5],
            ..Default::default()
        };
        assert_eq!(from_big(&with_zeros), Ok(-5));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0x0d, 0xec, 0xff]), "0decff");
        assert_eq!(unhex(&hex(&[1, 2, 254])), vec![1, 2, 254]);
    }

    #[test]
    fn timestamps() {
        let t = ReportTimestamp {
            config_digest: vec![1; 32],
            epoch: 2,
            round: 3,
        };
        assert_eq!(t.sequence(), 2 * 256 + 3);
        assert_eq!(ReportTimestamp::from_wire(&t.to_wire()), Ok(t));
        let mut w = ReportTimestamp::default().to_wire();
        w.round = 300;
        assert!(ReportTimestamp::from_wire(&w).is_err());
    }
}
