//! Per-call deadlines of a reporting round, from the job's
//! ReportingPluginConfig, with the Query floor from
//! `CL_MIN_OCR2_MAX_DURATION_QUERY` (Go-style duration, default 100ms):
//! effective Query deadline = max(MaxDurationQuery, floor). A zero duration is
//! refused: every call needs a realistic deadline.

use std::time::Duration;

/// The Query floor when `CL_MIN_OCR2_MAX_DURATION_QUERY` is not set.
pub const DEFAULT_MIN_QUERY: Duration = Duration::from_millis(100);

/// The environment variable holding the Query floor.
pub const MIN_QUERY_VAR: &str = "CL_MIN_OCR2_MAX_DURATION_QUERY";

/// The Query floor from the variable's value (None: unset → default). A
/// malformed or zero value is an error naming the variable.
pub fn min_query(value: Option<&str>) -> Result<Duration, String> {
    match value.filter(|v| !v.trim().is_empty()) {
        None => Ok(DEFAULT_MIN_QUERY),
        Some(v) => crate::config::parse_duration(MIN_QUERY_VAR, v),
    }
}

/// The configured maximum durations of one round's calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxDurations {
    /// Query (the leader's).
    pub query: Duration,
    /// Observation.
    pub observation: Duration,
    /// Report.
    pub report: Duration,
    /// ShouldAcceptFinalizedReport.
    pub should_accept: Duration,
    /// ShouldTransmitAcceptedReport.
    pub should_transmit: Duration,
}

/// The deadlines actually used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines(pub MaxDurations);

impl Deadlines {
    /// Checks `max` (no zero) and applies the Query floor.
    pub fn new(max: MaxDurations, min_query: Duration) -> Result<Deadlines, String> {
        let named = [
            ("maxDurationQuery", max.query),
            ("maxDurationObservation", max.observation),
            ("maxDurationReport", max.report),
            ("maxDurationShouldAcceptFinalizedReport", max.should_accept),
            (
                "maxDurationShouldTransmitAcceptedReport",
                max.should_transmit,
            ),
        ];
        let zero: Vec<&str> = named
            .iter()
            .filter(|(_, d)| d.is_zero())
            .map(|(n, _)| *n)
            .collect();
        if !zero.is_empty() {
            return Err(format!(
                "{} must be more than zero: every call needs a realistic deadline (e.g. \"1s\")",
                zero.join(", ")
            ));
        }
        let mut d = max;
        d.query = d.query.max(min_query);
        Ok(Deadlines(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max(q: u64) -> MaxDurations {
        let ms = Duration::from_millis;
        MaxDurations {
            query: ms(q),
            observation: ms(500),
            report: ms(200),
            should_accept: ms(100),
            should_transmit: ms(100),
        }
    }

    #[test]
    fn query_floor_from_the_environment() {
        assert_eq!(min_query(None), Ok(DEFAULT_MIN_QUERY));
        assert_eq!(min_query(Some("250ms")), Ok(Duration::from_millis(250)));
        assert_eq!(min_query(Some("1s")), Ok(Duration::from_secs(1)));
        let err = min_query(Some("fast")).unwrap_err();
        assert!(
            err.starts_with("CL_MIN_OCR2_MAX_DURATION_QUERY: \"fast\" is not a duration"),
            "{err}"
        );
        assert!(min_query(Some("0s"))
            .unwrap_err()
            .contains("more than zero"));
    }

    #[test]
    fn query_deadline_is_the_larger_and_zero_is_refused() {
        let floor = Duration::from_millis(100);
        assert_eq!(Deadlines::new(max(20), floor).unwrap().0.query, floor);
        assert_eq!(
            Deadlines::new(max(300), floor).unwrap().0.query,
            Duration::from_millis(300)
        );
        let mut m = max(300);
        m.report = Duration::ZERO;
        let err = Deadlines::new(m, floor).unwrap_err();
        assert!(
            err.contains("maxDurationReport must be more than zero"),
            "{err}"
        );
    }
}
