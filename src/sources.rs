//! The node's data sources for median feeds (implementations of
//! [`crate::services::datasource::DataSource`]), built from a job's [`Spec`]:
//!
//! - `static`: one fixed value;
//! - `randomwalk`: a deterministic walk from a seed (same seed, same values,
//!   in-process or not) that moves like a price: one relative step a round,
//!   never at or below zero; for the embedded default job;
//! - `http`: GET a JSON document from a loopback/LAN `http://` endpoint and
//!   take a number at a dot path (`data.price`, `prices.0.usd`), bounded by
//!   the call's deadline.
//!
//! Values are integers (`i128`); a number with a fraction is scaled by
//! `10^decimals` and rounded toward zero, exactly (decimal arithmetic, no
//! floating point), except exponent notation. JSON numbers beyond 64 bits lose
//! precision in any JSON parser: serve such values as strings.

use std::io::Read;
use std::time::Duration;

use serde::Deserialize;

use crate::services::datasource::{DataSource, ReportTimestamp};

/// Largest HTTP body read from a data source.
pub const MAX_BODY: u64 = 1 << 20;

/// A data source as the job file describes it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Spec {
    /// A fixed value.
    Static {
        /// The value.
        value: i64,
    },
    /// A deterministic random walk that moves like a price: one step per
    /// round, each a relative change, never at or below zero.
    Randomwalk {
        /// Seed of the walk.
        seed: u64,
        /// Value at step 0 (more than 0).
        start: i64,
        /// Largest change per step, in parts per million of the value
        /// (5000: 0.5%); less than 1,000,000.
        step_ppm: u32,
    },
    /// A JSON document over HTTP.
    Http {
        /// `http://host:port/path`.
        url: String,
        /// Dot path to the number, e.g. `data.price`.
        path: String,
        /// Decimal places to keep (the number is multiplied by 10^decimals).
        #[serde(default)]
        decimals: u32,
    },
}

/// Builds a source; the spec is checked here (bad URL, empty path).
pub fn build(spec: &Spec) -> Result<Box<dyn DataSource>, String> {
    Ok(match spec {
        Spec::Static { value } => Box::new(Static(i128::from(*value))),
        Spec::Randomwalk {
            seed,
            start,
            step_ppm,
        } => {
            if *start <= 0 {
                return Err(format!(
                    "randomwalk start {start} must be more than 0 (it moves like a price)"
                ));
            }
            if *step_ppm >= PPM {
                return Err(format!(
                    "randomwalk step_ppm {step_ppm} must be less than 1000000 (100%); e.g. 5000 is 0.5% a round"
                ));
            }
            Box::new(RandomWalk {
                seed: *seed,
                start: i128::from(*start),
                step_ppm: i128::from(*step_ppm),
                last: std::sync::Mutex::new((0, i128::from(*start))),
            })
        }
        Spec::Http {
            url,
            path,
            decimals,
        } => {
            if !url.starts_with("http://") {
                return Err(format!("http data source url {url:?} must start with http:// (no TLS; loopback or LAN)"));
            }
            if path.is_empty() {
                return Err(
                    "http data source needs a path to the number, e.g. \"data.price\"".into(),
                );
            }
            if *decimals > 30 {
                return Err(format!("decimals {decimals} is more than 30"));
            }
            Box::new(Http {
                url: url.clone(),
                path: path.clone(),
                decimals: *decimals,
                agent: ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .max_redirects(0)
                    .build()
                    .new_agent(),
            })
        }
    })
}

struct Static(i128);

impl DataSource for Static {
    fn observe(&self, _ts: &ReportTimestamp, _deadline: Duration) -> Result<i128, String> {
        Ok(self.0)
    }

    fn observe_now(&self, _ts: &ReportTimestamp) -> Option<Result<i128, String>> {
        Some(Ok(self.0))
    }
}

struct RandomWalk {
    seed: u64,
    start: i128,
    step_ppm: i128,
    /// The last (step number, value) computed, so rounds that move forward
    /// cost O(1) each.
    last: std::sync::Mutex<(u64, i128)>,
}

/// Steps a randomwalk computes in one call at most (a few ms): a hostile or
/// broken timestamp must not hold the source, and the thread serving it, for
/// minutes.
const MAX_WALK: u64 = 1 << 20;

/// Steps a randomwalk computes at once, on the thread that received the
/// call ([`DataSource::observe_now`]): rounds move one step at a time;
/// more (a restart, a hostile timestamp) goes to a pool thread.
const NOW_WALK: u64 = 64;

/// Parts per million in one.
const PPM: u32 = 1_000_000;

/// splitmix64: a well-known, stateless mix of a 64-bit input.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RandomWalk {
    /// The value after `n` steps: step i multiplies by (1 + r/10^6), r in
    /// -step_ppm..=step_ppm drawn from (seed, i), so the same n always gives
    /// the same value, whoever computes it. A value never drops below 1.
    ///
    /// At most [`MAX_WALK`] steps are computed per call: a timestamp far
    /// ahead (any epoch up to 2^32 comes over the wire) is an error, and the
    /// steps done are kept, so asking again goes on from there.
    fn at(&self, n: u64) -> Result<i128, String> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.walk(&mut last, n)
    }

    /// [`RandomWalk::at`], with `last` (the walk's place) held.
    fn walk(&self, last: &mut (u64, i128), n: u64) -> Result<i128, String> {
        let span = (self.step_ppm * 2 + 1) as u64;
        let (mut i, mut v) = if n >= last.0 { *last } else { (0, self.start) };
        let stop = n.min(i.saturating_add(MAX_WALK));
        while i < stop {
            let r = i128::from(mix(self.seed ^ mix(i)) % span) - self.step_ppm;
            v = (v + v * r / i128::from(PPM)).max(1);
            i += 1;
        }
        *last = (i, v);
        if i < n {
            return Err(format!(
                "randomwalk: step {n} is {} steps ahead; walked {MAX_WALK} to step {i}, ask again to go on",
                n - i
            ));
        }
        Ok(v)
    }
}

impl DataSource for RandomWalk {
    /// One step per round: the step number is the round's epoch plus its
    /// round (the node runs one round an epoch).
    fn observe(&self, ts: &ReportTimestamp, _deadline: Duration) -> Result<i128, String> {
        self.at(step(ts))
    }

    /// At once when the step is at most [`NOW_WALK`] ahead of the last one
    /// and nobody else is walking.
    fn observe_now(&self, ts: &ReportTimestamp) -> Option<Result<i128, String>> {
        let n = step(ts);
        let mut last = self.last.try_lock().ok()?;
        let near = n >= last.0 && n - last.0 <= NOW_WALK;
        near.then(|| self.walk(&mut last, n))
    }
}

/// A round's step: its epoch plus its round (the node runs one round an
/// epoch).
fn step(ts: &ReportTimestamp) -> u64 {
    u64::from(ts.epoch) + u64::from(ts.round)
}

struct Http {
    url: String,
    path: String,
    decimals: u32,
    agent: ureq::Agent,
}

impl DataSource for Http {
    fn observe(&self, _ts: &ReportTimestamp, deadline: Duration) -> Result<i128, String> {
        let mut resp = self
            .agent
            .get(&self.url)
            .config()
            .timeout_global(Some(deadline))
            .build()
            .call()
            .map_err(|e| match e {
                ureq::Error::Timeout(_) => format!("{}: no answer within {deadline:?}", self.url),
                e => format!("{}: {e}", self.url),
            })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(format!("{}: HTTP {status}", self.url));
        }
        let mut body = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(MAX_BODY)
            .read_to_end(&mut body)
            .map_err(|e| format!("{}: reading the body: {e}", self.url))?;
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{}: not JSON: {e}", self.url))?;
        number_at(&doc, &self.path, self.decimals).map_err(|e| format!("{}: {e}", self.url))
    }
}

/// The number at a dot path, scaled by 10^decimals.
pub fn number_at(doc: &serde_json::Value, path: &str, decimals: u32) -> Result<i128, String> {
    let mut v = doc;
    for part in path.split('.') {
        v = match v {
            serde_json::Value::Object(m) => m.get(part),
            serde_json::Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("no {part:?} in {path:?}"))?;
    }
    let text = match v {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.trim().to_string(),
        other => return Err(format!("{path:?} is {other}, not a number")),
    };
    scale(&text, decimals).ok_or_else(|| format!("{path:?} = {text} is not a number that fits"))
}

/// Parses a decimal string exactly and scales it (no floating point).
fn scale(text: &str, decimals: u32) -> Option<i128> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.contains(['e', 'E']) {
        let f: f64 = text.parse().ok()?;
        let scaled = f * 10f64.powi(decimals as i32);
        return (scaled.is_finite() && scaled.abs() < 1e38).then_some(scaled.trunc() as i128);
    }
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let mut frac: String = frac.chars().take(decimals as usize).collect();
    while frac.len() < decimals as usize {
        frac.push('0');
    }
    let all = format!("{int}{frac}");
    let v: i128 = if all.is_empty() { 0 } else { all.parse().ok()? };
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(1);

    fn ts(n: u64) -> ReportTimestamp {
        ReportTimestamp {
            config_digest: vec![],
            epoch: (n >> 8) as u32,
            round: (n & 0xff) as u8,
        }
    }

    #[test]
    fn randomwalk_far_ahead_is_an_error_not_minutes_of_work() {
        let spec = Spec::Randomwalk {
            seed: 42,
            start: 1_000_000,
            step_ppm: 5000,
        };
        let (a, fresh) = (build(&spec).unwrap(), build(&spec).unwrap());
        let far = ReportTimestamp {
            config_digest: vec![],
            epoch: u32::MAX,
            round: 255,
        };
        let e = a.observe(&far, D).unwrap_err();
        assert!(e.contains("ask again"), "{e}");
        // The steps walked are kept; going back starts over, same values.
        assert_eq!(a.observe(&ts(10), D), fresh.observe(&ts(10), D));
    }

    /// A step at hand (near the last one, nobody walking) is answered at
    /// once, with the value `observe` gives; a far one is left to
    /// `observe`, which still answers it.
    #[test]
    fn randomwalk_answers_near_steps_at_once_and_leaves_far_ones() {
        let spec = Spec::Randomwalk {
            seed: 42,
            start: 1_000_000,
            step_ppm: 5000,
        };
        let (a, fresh) = (build(&spec).unwrap(), build(&spec).unwrap());
        for n in [1, 2, 2, 40, 40 + NOW_WALK] {
            assert_eq!(a.observe_now(&ts(n)), Some(fresh.observe(&ts(n), D)), "{n}");
        }
        let far = 100 + 2 * NOW_WALK;
        assert_eq!(a.observe_now(&ts(far)), None);
        assert_eq!(a.observe_now(&ts(3)), None, "behind: starts over");
        assert_eq!(a.observe(&ts(far), D), fresh.observe(&ts(far), D));
        let s = build(&Spec::Static { value: -7 }).unwrap();
        assert_eq!(s.observe_now(&ts(9)), Some(Ok(-7)));
    }

    #[test]
    fn static_and_randomwalk_are_deterministic() {
        let s = build(&Spec::Static { value: -7 }).unwrap();
        assert_eq!(s.observe(&ts(9), D), Ok(-7));
        let spec = Spec::Randomwalk {
            seed: 42,
            start: 1_000_000,
            step_ppm: 5000,
        };
        let (a, b) = (build(&spec).unwrap(), build(&spec).unwrap());
        let walk: Vec<i128> = (0..50).map(|n| a.observe(&ts(n), D).unwrap()).collect();
        let backwards: Vec<i128> = (0..50)
            .rev()
            .map(|n| b.observe(&ts(n), D).unwrap())
            .collect();
        assert_eq!(
            walk,
            backwards.into_iter().rev().collect::<Vec<_>>(),
            "any order of rounds gives the same values"
        );
        assert_eq!(walk[0], 1_000_000);
        // One step a round, each at most 0.5% of the value.
        assert!(walk
            .windows(2)
            .all(|w| (w[1] - w[0]).abs() * 1_000_000 <= w[0] * 5000));
        assert!(walk.windows(2).any(|w| w[1] != w[0]), "it moves");
        let other = build(&Spec::Randomwalk {
            seed: 43,
            start: 1_000_000,
            step_ppm: 5000,
        })
        .unwrap();
        assert_ne!(
            (1..50)
                .map(|n| other.observe(&ts(n), D).unwrap())
                .collect::<Vec<_>>(),
            walk[1..]
        );
    }

    /// Even the wildest walk stays above zero, and moves one step a round.
    #[test]
    fn a_walk_never_reaches_zero() {
        let w = build(&Spec::Randomwalk {
            seed: 7,
            start: 10,
            step_ppm: 999_999,
        })
        .unwrap();
        let round = |epoch, round| ReportTimestamp {
            config_digest: vec![1; 32],
            epoch,
            round,
        };
        let values: Vec<i128> = (0..5000)
            .map(|n| w.observe(&round(n, 0), D).unwrap())
            .collect();
        assert!(values.iter().all(|v| *v >= 1), "{:?}", values.iter().min());
        let a = w.observe(&round(3, 1), D).unwrap();
        assert_eq!(a, w.observe(&round(4, 0), D).unwrap(), "one step a round");
    }

    #[test]
    fn json_paths_and_exact_scaling() {
        let doc: serde_json::Value = serde_json::from_str(
            r#"{"data":{"price":1234.5678},"list":[{"usd":"-0.5"}],"big":"12345678901234567890123","f":1e3}"#,
        )
        .unwrap();
        assert_eq!(number_at(&doc, "data.price", 2), Ok(123456));
        assert_eq!(number_at(&doc, "data.price", 6), Ok(1234567800));
        assert_eq!(number_at(&doc, "list.0.usd", 3), Ok(-500));
        assert_eq!(
            number_at(&doc, "big", 0),
            Ok(12345678901234567890123),
            "strings stay exact"
        );
        assert_eq!(number_at(&doc, "f", 1), Ok(10000));
        assert!(number_at(&doc, "data.nope", 0)
            .unwrap_err()
            .contains("no \"nope\""));
        assert!(number_at(&doc, "data", 0)
            .unwrap_err()
            .contains("not a number"));
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(build(&Spec::Http {
            url: "https://x".into(),
            path: "a".into(),
            decimals: 0
        })
        .err()
        .unwrap()
        .contains("http://"));
        assert!(build(&Spec::Http {
            url: "http://x".into(),
            path: "".into(),
            decimals: 0
        })
        .is_err());
        let err = build(&Spec::Randomwalk {
            seed: 1,
            start: 0,
            step_ppm: 1,
        })
        .err()
        .unwrap();
        assert!(err.contains("start 0 must be more than 0"), "{err}");
        let err = build(&Spec::Randomwalk {
            seed: 1,
            start: 5,
            step_ppm: 1_000_000,
        })
        .err()
        .unwrap();
        assert!(
            err.contains("step_ppm 1000000 must be less than 1000000"),
            "{err}"
        );
        // The old absolute `step` is refused, naming the new field.
        let old: Result<Spec, _> =
            serde_json::from_str(r#"{"type":"randomwalk","seed":1,"start":5,"step":3}"#);
        let err = old.unwrap_err().to_string();
        assert!(
            err.contains("unknown field `step`") && err.contains("step_ppm"),
            "{err}"
        );
    }

    #[test]
    fn http_source_reads_a_real_endpoint_and_keeps_its_deadline() {
        // The slow answer outlasts the caller's deadline, not the test.
        let server =
            crate::goplugin::http::HttpServer::start("127.0.0.1:0", 2, "src-test", |req| {
                if req.url() == "/slow" {
                    std::thread::sleep(Duration::from_millis(600));
                }
                crate::goplugin::http::body(
                    200,
                    "application/json",
                    br#"{"data":{"price":"42.125"}}"#.to_vec(),
                )
            })
            .unwrap();
        let port = server.addr().port();
        let ok = build(&Spec::Http {
            url: format!("http://127.0.0.1:{port}/p"),
            path: "data.price".into(),
            decimals: 3,
        })
        .unwrap();
        assert_eq!(ok.observe(&ts(0), D), Ok(42125));
        let slow = build(&Spec::Http {
            url: format!("http://127.0.0.1:{port}/slow"),
            path: "data.price".into(),
            decimals: 0,
        })
        .unwrap();
        let err = slow
            .observe(&ts(0), Duration::from_millis(200))
            .unwrap_err();
        assert!(err.contains("no answer within 200ms"), "{err}");
    }
}
