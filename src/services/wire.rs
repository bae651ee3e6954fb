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

/// A JSON object as a `google.protobuf.Struct` (numbers become doubles, as
/// on the wire).
pub fn to_struct(
    map: &serde_json::Map<String, serde_json::Value>,
) -> protobuf::well_known_types::struct_::Struct {
    let mut s = protobuf::well_known_types::struct_::Struct::new();
    for (k, v) in map {
        s.fields.insert(k.clone(), to_value(v));
    }
    s
}

fn to_value(v: &serde_json::Value) -> protobuf::well_known_types::struct_::Value {
    use protobuf::well_known_types::struct_::{ListValue, NullValue, Value};
    let mut out = Value::new();
    match v {
        serde_json::Value::Null => out.set_null_value(NullValue::NULL_VALUE),
        serde_json::Value::Bool(b) => out.set_bool_value(*b),
        serde_json::Value::Number(n) => out.set_number_value(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => out.set_string_value(s.clone()),
        serde_json::Value::Array(a) => {
            let mut l = ListValue::new();
            l.values = a.iter().map(to_value).collect();
            out.set_list_value(l);
        }
        serde_json::Value::Object(m) => out.set_struct_value(to_struct(m)),
    }
    out
}

/// A `google.protobuf.Struct` as a JSON object; a number JSON cannot hold
/// (NaN, infinite) is an error naming its field.
pub fn from_struct(
    s: &protobuf::well_known_types::struct_::Struct,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    s.fields
        .iter()
        .map(|(k, v)| {
            from_value(v)
                .map(|v| (k.clone(), v))
                .map_err(|e| format!("{k}: {e}"))
        })
        .collect()
}

fn from_value(v: &protobuf::well_known_types::struct_::Value) -> Result<serde_json::Value, String> {
    use protobuf::well_known_types::struct_::value::Kind;
    Ok(match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("{n} is not a JSON number"))?,
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(from_value).collect::<Result<_, _>>()?)
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(from_struct(s)?),
        Some(_) => return Err("unknown value kind".into()),
    })
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

    #[test]
    fn json_objects_round_trip_through_struct() {
        let v = serde_json::json!({
            "n": 1.5, "s": "x", "b": true, "z": null,
            "list": [1.0, "two", [false]], "obj": {"deep": {"k": -3.0}}
        });
        let map = v.as_object().unwrap();
        assert_eq!(from_struct(&to_struct(map)).as_ref(), Ok(map));
        let mut bad = to_struct(map);
        let mut nan = protobuf::well_known_types::struct_::Value::new();
        nan.set_number_value(f64::NAN);
        bad.fields.insert("bad".into(), nan);
        assert!(from_struct(&bad).unwrap_err().starts_with("bad: NaN"));
    }
}
