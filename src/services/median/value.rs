//! OCR's int192 values as they travel ([`I192`]: exactly 24 bytes,
//! big-endian two's complement, as libocr encodes them) and the standard
//! onchain config of a median contract ([`encode_onchain_config`],
//! [`decode_onchain_config`]: a version byte, 1, then min and max as
//! int192; 49 bytes), which relayers' `OnchainConfigCodec`s use.
//!
//! Inside loopp values are `i128`; an int192 beyond it is refused when
//! converted, with an error that says so.

use std::cmp::Ordering;
use std::fmt;

use super::Bounds;

/// An int192: 24 bytes, big-endian two's complement.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct I192(pub [u8; 24]);

/// The onchain config's version byte.
pub const ONCHAIN_CONFIG_VERSION: u8 = 1;

/// The onchain config's length: version, min, max.
pub const ONCHAIN_CONFIG_LEN: usize = 1 + 24 + 24;

impl I192 {
    /// The largest int192, 2^191 - 1.
    pub const MAX: I192 = {
        let mut b = [0xff; 24];
        b[0] = 0x7f;
        I192(b)
    };

    /// The smallest int192, -2^191.
    pub const MIN: I192 = {
        let mut b = [0; 24];
        b[0] = 0x80;
        I192(b)
    };

    /// Whether it is below zero.
    pub fn is_negative(&self) -> bool {
        self.0[0] & 0x80 != 0
    }

    /// The exact 24 bytes of the wire; anything else is an error naming
    /// the length.
    pub fn from_wire(bytes: &[u8]) -> Result<I192, String> {
        <[u8; 24]>::try_from(bytes)
            .map(I192)
            .map_err(|_| format!("an int192 is 24 bytes, not {}", bytes.len()))
    }

    /// The value as an `i128`, or an error when it does not fit.
    pub fn to_i128(&self) -> Result<i128, String> {
        let fill = if self.is_negative() { 0xff } else { 0 };
        if self.0[..8].iter().any(|b| *b != fill) || (self.0[8] ^ fill) & 0x80 != 0 {
            return Err(format!("int192 {self} does not fit in 128 bits"));
        }
        let mut b = [0; 16];
        b.copy_from_slice(&self.0[8..]);
        Ok(i128::from_be_bytes(b))
    }

    /// Parses a decimal integer (an optional `-`, then digits); a value
    /// beyond int192 is an error.
    pub fn from_decimal(text: &str) -> Result<I192, String> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, text),
        };
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!("{text:?} is not a decimal integer"));
        }
        // The magnitude in 25 bytes, so 2^191 (the magnitude of MIN) fits.
        let mut mag = [0u8; 25];
        for d in digits.bytes() {
            let mut carry = u32::from(d - b'0');
            for byte in mag.iter_mut().rev() {
                let v = u32::from(*byte) * 10 + carry;
                *byte = v as u8;
                carry = v >> 8;
            }
            if carry != 0 || mag[0] != 0 {
                return Err(format!("{text} is beyond int192"));
            }
        }
        let mut out = [0u8; 24];
        out.copy_from_slice(&mag[1..]);
        let top_set = out[0] & 0x80 != 0;
        let is_min_mag = out[0] == 0x80 && out[1..].iter().all(|b| *b == 0);
        if top_set && !(negative && is_min_mag) {
            return Err(format!("{text} is beyond int192"));
        }
        if negative {
            negate(&mut out);
        }
        Ok(I192(out))
    }

    fn magnitude(&self) -> [u8; 24] {
        let mut m = self.0;
        if self.is_negative() {
            negate(&mut m);
        }
        m
    }
}

/// Two's complement negation in place.
fn negate(b: &mut [u8; 24]) {
    let mut carry = 1u16;
    for byte in b.iter_mut().rev() {
        let v = u16::from(!*byte) + carry;
        *byte = v as u8;
        carry = v >> 8;
    }
}

impl From<i128> for I192 {
    fn from(v: i128) -> I192 {
        let mut b = if v < 0 { [0xff; 24] } else { [0; 24] };
        b[8..].copy_from_slice(&v.to_be_bytes());
        I192(b)
    }
}

impl Ord for I192 {
    fn cmp(&self, other: &I192) -> Ordering {
        // Flipping the sign bit makes two's complement compare as unsigned.
        let (mut a, mut b) = (self.0, other.0);
        a[0] ^= 0x80;
        b[0] ^= 0x80;
        a.cmp(&b)
    }
}

impl PartialOrd for I192 {
    fn partial_cmp(&self, other: &I192) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for I192 {
    /// Decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut mag = self.magnitude();
        let mut digits = Vec::new();
        loop {
            let mut rem = 0u32;
            for byte in mag.iter_mut() {
                let v = (rem << 8) | u32::from(*byte);
                *byte = (v / 10) as u8;
                rem = v % 10;
            }
            digits.push(b'0' + rem as u8);
            if mag.iter().all(|b| *b == 0) {
                break;
            }
        }
        if self.is_negative() {
            digits.push(b'-');
        }
        digits.reverse();
        f.write_str(std::str::from_utf8(&digits).expect("ascii digits"))
    }
}

impl fmt::Debug for I192 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "I192({self})")
    }
}

/// The standard onchain config for `bounds`: version 1, min, max.
pub fn encode_onchain_config(bounds: Bounds) -> Result<Vec<u8>, String> {
    if bounds.min > bounds.max {
        return Err(format!(
            "onchain config: min {} is more than max {}",
            bounds.min, bounds.max
        ));
    }
    let mut out = Vec::with_capacity(ONCHAIN_CONFIG_LEN);
    out.push(ONCHAIN_CONFIG_VERSION);
    out.extend_from_slice(&I192::from(bounds.min).0);
    out.extend_from_slice(&I192::from(bounds.max).0);
    Ok(out)
}

/// The bounds in a standard onchain config: 49 bytes, version 1, min not
/// above max, both within `i128`; each error says which.
pub fn decode_onchain_config(bytes: &[u8]) -> Result<Bounds, String> {
    if bytes.len() != ONCHAIN_CONFIG_LEN {
        return Err(format!(
            "onchain config: {} bytes, the standard one has {ONCHAIN_CONFIG_LEN} (version, min, max)",
            bytes.len()
        ));
    }
    if bytes[0] != ONCHAIN_CONFIG_VERSION {
        return Err(format!(
            "onchain config: version {}, only version {ONCHAIN_CONFIG_VERSION} is known",
            bytes[0]
        ));
    }
    let min = I192::from_wire(&bytes[1..25])?;
    let max = I192::from_wire(&bytes[25..])?;
    if min > max {
        return Err(format!("onchain config: min {min} is more than max {max}"));
    }
    Ok(Bounds {
        min: min
            .to_i128()
            .map_err(|e| format!("onchain config min: {e}"))?,
        max: max
            .to_i128()
            .map_err(|e| format!("onchain config max: {e}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i128_values_round_trip_and_order() {
        let values = [
            i128::MIN,
            -(1 << 100),
            -256,
            -1,
            0,
            1,
            255,
            1 << 100,
            i128::MAX,
        ];
        for v in values {
            let x = I192::from(v);
            assert_eq!(x.to_i128(), Ok(v));
            assert_eq!(x.to_string(), v.to_string());
            assert_eq!(I192::from_decimal(&v.to_string()), Ok(x));
        }
        for w in values.windows(2) {
            assert!(I192::from(w[0]) < I192::from(w[1]));
        }
        assert_eq!(I192::from(-1).0, [0xff; 24]);
    }

    #[test]
    fn the_int192_range_is_exact() {
        let max = "3138550867693340381917894711603833208051177722232017256447";
        let min = "-3138550867693340381917894711603833208051177722232017256448";
        assert_eq!(I192::from_decimal(max), Ok(I192::MAX));
        assert_eq!(I192::from_decimal(min), Ok(I192::MIN));
        assert_eq!(I192::MAX.to_string(), max);
        assert_eq!(I192::MIN.to_string(), min);
        assert!(I192::MIN < I192::MAX);
        for beyond in [
            "3138550867693340381917894711603833208051177722232017256448",
            "-3138550867693340381917894711603833208051177722232017256449",
            "99999999999999999999999999999999999999999999999999999999999999",
        ] {
            assert!(I192::from_decimal(beyond)
                .unwrap_err()
                .contains("beyond int192"));
        }
        assert!(I192::MAX
            .to_i128()
            .unwrap_err()
            .contains("does not fit in 128 bits"));
        assert!(I192::from_decimal("1x").is_err());
        assert!(I192::from_wire(&[0; 23])
            .unwrap_err()
            .contains("24 bytes, not 23"));
    }

    #[test]
    fn onchain_configs_round_trip_and_bad_ones_are_named() {
        let b = Bounds {
            min: -5,
            max: 1 << 100,
        };
        let enc = encode_onchain_config(b).unwrap();
        assert_eq!(enc.len(), 49);
        assert_eq!(enc[0], 1);
        assert_eq!(decode_onchain_config(&enc), Ok(b));
        let mut v2 = enc.clone();
        v2[0] = 2;
        assert!(decode_onchain_config(&v2)
            .unwrap_err()
            .contains("version 2"));
        assert!(decode_onchain_config(&enc[..48])
            .unwrap_err()
            .contains("48 bytes"));
        let swapped = [vec![1], I192::from(9).0.to_vec(), I192::from(3).0.to_vec()].concat();
        assert!(decode_onchain_config(&swapped)
            .unwrap_err()
            .contains("min 9 is more than max 3"));
        assert!(encode_onchain_config(Bounds { min: 2, max: 1 }).is_err());
    }
}
