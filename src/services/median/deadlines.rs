//! Per-call deadlines of a reporting round, from the job's
//! ReportingPluginConfig, with a floor under the Query deadline (the node
//! reads it from `CL_MIN_OCR2_MAX_DURATION_QUERY`, see
//! `crate::node::config::min_query`): effective Query deadline =
//! max(MaxDurationQuery, floor). A zero duration is refused: every call
//! needs a realistic deadline.

use std::time::Duration;

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
