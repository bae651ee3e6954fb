//! The devchain's report format (its `ReportCodec`): a report is a JSON
//! object with the observations timestamp, the median value, the median
//! juels-per-fee-coin and the observers, built from the parsed observations.
//! Values travel as decimal strings, so any `i128` survives.

use serde::{Deserialize, Serialize};

use crate::services::relay::provider::ParsedObservation;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Wire {
    observations_timestamp: u32,
    median: String,
    juels_per_fee_coin: String,
    observers: Vec<u8>,
}

/// A decoded report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Median of the observation timestamps.
    pub observations_timestamp: u32,
    /// Median value.
    pub median: i128,
    /// Median juels-per-fee-coin.
    pub juels_per_fee_coin: i128,
    /// Oracles whose observations went in, sorted by value.
    pub observers: Vec<u8>,
}

/// Builds a report from observations (at least one).
pub fn build_report(obs: &[ParsedObservation]) -> Result<Vec<u8>, String> {
    if obs.is_empty() {
        return Err("cannot build a report from no observations".into());
    }
    let mut sorted = obs.to_vec();
    sorted.sort_by_key(|o| o.value);
    let mut ts: Vec<i128> = obs.iter().map(|o| i128::from(o.timestamp)).collect();
    let mut juels: Vec<i128> = obs.iter().map(|o| o.juels_per_fee_coin).collect();
    let wire = Wire {
        observations_timestamp: median(&mut ts).unwrap_or(0) as u32,
        median: sorted[sorted.len() / 2].value.to_string(),
        juels_per_fee_coin: median(&mut juels).unwrap_or(0).to_string(),
        observers: sorted.iter().map(|o| o.observer).collect(),
    };
    serde_json::to_vec(&wire).map_err(|e| e.to_string())
}

/// The upper middle of `values` (`sorted[n/2]`, as OCR's median); 0 when empty.
fn median(values: &mut [i128]) -> Option<i128> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

/// Decodes a report, with an error saying what is wrong.
pub fn decode(report: &[u8]) -> Result<Report, String> {
    let w: Wire =
        serde_json::from_slice(report).map_err(|e| format!("not a devchain report: {e}"))?;
    let num = |what: &str, v: &str| {
        v.parse::<i128>()
            .map_err(|_| format!("report {what} {v:?} is not an integer"))
    };
    Ok(Report {
        observations_timestamp: w.observations_timestamp,
        median: num("median", &w.median)?,
        juels_per_fee_coin: num("juelsPerFeeCoin", &w.juels_per_fee_coin)?,
        observers: w.observers,
    })
}

/// The median in a report.
pub fn median_from_report(report: &[u8]) -> Result<i128, String> {
    decode(report).map(|r| r.median)
}

/// The longest report for `n` oracles, in bytes.
pub fn max_report_length(n: usize) -> usize {
    // Fixed keys and punctuation, two i128 as strings, a u32, n observer ids.
    120 + 2 * 41 + 10 + n * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(observer: u8, value: i128, timestamp: u32) -> ParsedObservation {
        ParsedObservation {
            timestamp,
            value,
            juels_per_fee_coin: value * 10,
            gas_price_subunits: 0,
            observer,
        }
    }

    #[test]
    fn reports_round_trip_with_the_median() {
        let obs = [
            o(0, 30, 100),
            o(1, 10, 102),
            o(2, 20, 101),
            o(3, i128::MAX / 10, 99),
        ];
        let report = build_report(&obs).unwrap();
        assert!(report.len() <= max_report_length(4));
        let r = decode(&report).unwrap();
        assert_eq!(r.median, 30, "upper middle of 10, 20, 30, MAX/10");
        assert_eq!(r.observations_timestamp, 101);
        assert_eq!(r.juels_per_fee_coin, 300);
        assert_eq!(r.observers, vec![1, 2, 0, 3]);
        assert_eq!(median_from_report(&report), Ok(30));
        let extreme = build_report(&[o(0, i128::MIN / 10, 0)]).unwrap();
        assert_eq!(median_from_report(&extreme), Ok(i128::MIN / 10));
        assert!(extreme.len() <= max_report_length(1));
    }

    #[test]
    fn garbage_is_refused_clearly() {
        assert!(build_report(&[]).is_err());
        assert!(decode(b"nope")
            .unwrap_err()
            .starts_with("not a devchain report"));
        let bad =
            br#"{"observationsTimestamp":1,"median":"x","juelsPerFeeCoin":"1","observers":[]}"#;
        assert!(decode(bad).unwrap_err().contains("median \"x\""));
    }
}
