//! The numerical median's arithmetic, as pure functions (no I/O, no
//! clocks): the median of some values and libocr's deviation test.
//!
//! Values are `i128` (the wire carries OCR's int192; values beyond `i128` are
//! refused when decoded, with a clear error). Arithmetic never overflows:
//! differences use `abs_diff` and the deviation test compares exact 256-bit
//! products.

/// The median of some values: the upper middle for an even count (as
/// libocr's median: `sorted[n/2]`); None when empty.
pub fn median(values: &mut [i128]) -> Option<i128> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[values.len() / 2])
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

/// libocr's default deviation function: whether `new` moved from `old` by
/// at least `threshold_ppb` parts per billion of `|old|`, exactly. From 0,
/// any change deviates (and no change does not).
pub fn deviates(old: i128, new: i128, threshold_ppb: u64) -> bool {
    if old == 0 {
        return new != 0;
    }
    // |new - old| * 1e9 >= threshold * |old|, exactly.
    let lhs = mul_wide(old.abs_diff(new), 1_000_000_000);
    let rhs = mul_wide(u128::from(threshold_ppb), old.unsigned_abs());
    lhs >= rhs
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn deviation_edges() {
        // 1% = 10_000_000 ppb.
        assert!(
            deviates(100, 101, 10_000_000),
            "exactly the threshold deviates (libocr: >=)"
        );
        assert!(!deviates(1000, 1009, 10_000_000));
        assert!(deviates(100, 102, 10_000_000));
        assert!(deviates(100, 98, 10_000_000), "downwards too");
        assert!(!deviates(-1000, -1009, 10_000_000));
        assert!(deviates(-100, 100, 10_000_000));
        assert!(!deviates(0, 0, 0), "from zero only a change deviates");
        assert!(deviates(0, 1, u64::MAX), "from zero any change deviates");
        assert!(deviates(5, 6, 0));
        assert!(deviates(5, 5, 0), "a zero threshold always deviates");
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
}
