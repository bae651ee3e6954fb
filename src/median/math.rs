//! The numerical-median rules, as pure functions (no I/O, no clocks):
//! which observations count, the median, when a median is worth reporting,
//! and which reports are newer than the contract's.
//!
//! Values are `i128` (the wire carries OCR's int192; values beyond `i128` are
//! refused when decoded, with a clear error). Arithmetic never overflows:
//! differences use `abs_diff` and the deviation test compares exact 256-bit
//! products.

use std::time::Duration;

use crate::services::median::{Bounds, Latest};

/// One oracle's observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Observing oracle, `0..n`.
    pub oracle: u8,
    /// The observed value.
    pub value: i128,
    /// The juels-per-fee-coin value.
    pub juels_per_fee_coin: i128,
}

/// Why no report was made from a set of observations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoReport {
    /// Not more than 2f valid observations.
    TooFewObservations {
        /// Valid observations seen.
        valid: usize,
        /// Needed: more than this.
        needed_more_than: usize,
    },
    /// The median is outside the contract's bounds.
    OutOfBounds {
        /// The median.
        median: i128,
    },
}

/// The median of some values: the upper middle for an even count (as OCR2's
/// median plugin: `sorted[n/2]`); None when empty.
pub fn median(values: &mut [i128]) -> Option<i128> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[values.len() / 2])
}

/// The report's values from the observations: observations outside `bounds`
/// and duplicates from one oracle (first kept) are dropped; more than `2f`
/// must remain. Returns `(median value, median juels-per-fee-coin)`.
pub fn report_values(
    obs: &[Observation],
    f: usize,
    bounds: Bounds,
) -> Result<(i128, i128), NoReport> {
    let mut seen = std::collections::BTreeSet::new();
    let valid: Vec<&Observation> = obs
        .iter()
        .filter(|o| bounds.contains(o.value) && seen.insert(o.oracle))
        .collect();
    if valid.len() <= 2 * f {
        return Err(NoReport::TooFewObservations {
            valid: valid.len(),
            needed_more_than: 2 * f,
        });
    }
    let mut values: Vec<i128> = valid.iter().map(|o| o.value).collect();
    let mut juels: Vec<i128> = valid.iter().map(|o| o.juels_per_fee_coin).collect();
    let m = median(&mut values).expect("non-empty");
    let j = median(&mut juels).expect("non-empty");
    if !bounds.contains(m) {
        return Err(NoReport::OutOfBounds { median: m });
    }
    Ok((m, j))
}

/// 128×128 → 256-bit product as (high, low).
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    let (a1, a0) = (a >> 64, a & u64::MAX as u128);
    let (b1, b0) = (b >> 64, b & u64::MAX as u128);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 64) + (p01 & u64::MAX as u128) + (p10 & u64::MAX as u128);
    let lo = (p00 & u64::MAX as u128) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

/// Whether `new` deviates from `old` by more than `threshold_ppb` parts per
/// billion of `|old|`. From 0, any change deviates.
pub fn deviates(old: i128, new: i128, threshold_ppb: u64) -> bool {
    if old == 0 {
        return new != 0;
    }
    // |new - old| * 1e9 > threshold * |old|, exactly.
    let lhs = mul_wide(old.abs_diff(new), 1_000_000_000);
    let rhs = mul_wide(u128::from(threshold_ppb), old.unsigned_abs());
    lhs > rhs
}

/// Whether a new median should be reported: when nothing was transmitted yet,
/// when it deviates by more than `threshold_ppb`, or when `heartbeat` has
/// passed since the latest transmission at `now` (seconds).
pub fn should_report(
    latest: Option<Latest>,
    median: i128,
    threshold_ppb: u64,
    heartbeat: Duration,
    now: u64,
) -> bool {
    match latest {
        None => true,
        Some(l) => {
            deviates(l.answer, median, threshold_ppb)
                || now.saturating_sub(l.timestamp) >= heartbeat.as_secs()
        }
    }
}

/// Whether a report from `(epoch, round)` is newer than the contract's latest
/// (accept and transmit only those).
pub fn is_newer(epoch: u32, round: u8, latest: Option<Latest>) -> bool {
    latest.is_none_or(|l| (epoch, round) > (l.epoch, l.round))
}

/// Whether a round requested on chain at `(epoch, round)` (under the current
/// config) is still unanswered: newer than the contract's latest
/// transmission. A request forces a report even without deviation or
/// heartbeat.
pub fn round_requested(requested: Option<(u32, u8)>, latest: Option<Latest>) -> bool {
    requested.is_some_and(|(epoch, round)| is_newer(epoch, round, latest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(values: &[i128]) -> Vec<Observation> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Observation {
                oracle: i as u8,
                value: *v,
                juels_per_fee_coin: *v * 2,
            })
            .collect()
    }

    const ALL: Bounds = Bounds {
        min: i128::MIN,
        max: i128::MAX,
    };

    #[test]
    fn median_odd_even_ties_negative_huge() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [7]), Some(7));
        assert_eq!(median(&mut [3, 1, 2]), Some(2));
        assert_eq!(
            median(&mut [4, 1, 3, 2]),
            Some(3),
            "upper middle for even counts"
        );
        assert_eq!(median(&mut [5, 5, 1, 5]), Some(5));
        assert_eq!(median(&mut [-10, -30, -20]), Some(-20));
        assert_eq!(median(&mut [i128::MAX, i128::MIN, 0]), Some(0));
        assert_eq!(
            median(&mut [i128::MAX, i128::MAX - 1, i128::MIN]),
            Some(i128::MAX - 1)
        );
    }

    #[test]
    fn reports_need_more_than_2f_valid_observations() {
        assert_eq!(
            report_values(&obs(&[1, 2]), 1, ALL),
            Err(NoReport::TooFewObservations {
                valid: 2,
                needed_more_than: 2
            })
        );
        assert_eq!(report_values(&obs(&[1, 2, 3]), 1, ALL), Ok((2, 4)));
        // Out-of-bounds observations do not count.
        let bounds = Bounds { min: 0, max: 100 };
        assert_eq!(
            report_values(&obs(&[1, 2, 1000]), 1, bounds),
            Err(NoReport::TooFewObservations {
                valid: 2,
                needed_more_than: 2
            })
        );
        assert_eq!(report_values(&obs(&[1, 2, 3, 1000]), 1, bounds), Ok((2, 4)));
        // One oracle counts once.
        let mut dup = obs(&[10, 20, 30]);
        dup[2].oracle = 0;
        assert!(report_values(&dup, 1, ALL).is_err());
        assert_eq!(report_values(&obs(&[5]), 0, ALL), Ok((5, 10)));
    }

    #[test]
    fn deviation_edges() {
        // 1% = 10_000_000 ppb.
        assert!(
            !deviates(100, 101, 10_000_000),
            "exactly the threshold is not more"
        );
        assert!(deviates(100, 102, 10_000_000));
        assert!(deviates(100, 98, 10_000_000), "downwards too");
        assert!(!deviates(-100, -101, 10_000_000));
        assert!(deviates(-100, 100, 10_000_000));
        assert!(!deviates(0, 0, 0));
        assert!(deviates(0, 1, u64::MAX), "from zero any change deviates");
        assert!(deviates(5, 6, 0));
        assert!(!deviates(5, 5, 0));
        // No overflow at the extremes.
        assert!(deviates(i128::MIN, i128::MAX, 1_000_000_000));
        assert!(!deviates(i128::MAX, i128::MAX - 1, 1));
        assert!(deviates(i128::MAX, i128::MAX / 2, 400_000_000));
        assert!(!deviates(i128::MAX, i128::MAX / 2, 600_000_000));
    }

    #[test]
    fn wide_multiplication_is_exact() {
        assert_eq!(mul_wide(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
        assert_eq!(mul_wide(1 << 64, 1 << 64), (1, 0));
        assert_eq!(mul_wide(12345, 6789), (0, 12345 * 6789));
    }

    #[test]
    fn heartbeat_and_staleness() {
        let latest = Some(Latest {
            epoch: 3,
            round: 2,
            answer: 100,
            timestamp: 1000,
        });
        let hb = Duration::from_secs(60);
        assert!(should_report(None, 1, 10_000_000, hb, 0));
        assert!(!should_report(latest, 100, 10_000_000, hb, 1059));
        assert!(
            should_report(latest, 100, 10_000_000, hb, 1060),
            "heartbeat elapsed"
        );
        assert!(
            should_report(latest, 200, 10_000_000, hb, 1001),
            "deviation"
        );
        assert!(is_newer(3, 3, latest));
        assert!(is_newer(4, 0, latest));
        assert!(!is_newer(3, 2, latest));
        assert!(!is_newer(2, 9, latest));
        assert!(is_newer(0, 0, None));
    }

    #[test]
    fn a_requested_round_counts_only_until_answered() {
        let latest = Some(Latest {
            epoch: 3,
            round: 2,
            answer: 100,
            timestamp: 1000,
        });
        assert!(!round_requested(None, latest), "no request");
        assert!(round_requested(Some((3, 3)), latest));
        assert!(round_requested(Some((4, 0)), latest));
        assert!(!round_requested(Some((3, 2)), latest), "already answered");
        assert!(!round_requested(Some((1, 9)), latest));
        assert!(
            round_requested(Some((0, 0)), None),
            "nothing transmitted yet"
        );
    }
}
