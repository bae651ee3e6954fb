//! The job file's median feeds, resolved into [`FeedConfig`]s: names,
//! plugins, oracles, sources, durations, bounds and deadlines checked, every
//! problem collected with the feed and setting it concerns.

use std::time::Duration;

use serde::Deserialize;

use super::{min_query, parse_duration, PluginConfig, MIN_QUERY_VAR};
use crate::node::feeds::FeedConfig;
use crate::services::median::Bounds;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedEntry {
    name: String,
    relay: String,
    median: String,
    source: crate::sources::Spec,
    juels: Option<crate::sources::Spec>,
    gas_price: Option<crate::sources::Spec>,
    deviation_func: Option<serde_json::Value>,
    oracles: Option<u8>,
    f: Option<u8>,
    interval: Option<String>,
    /// libocr's alphaReportPpb and alphaAcceptPpb at once; `deviation_ppb`
    /// is its older name.
    #[serde(alias = "deviation_ppb")]
    alpha_ppb: Option<u64>,
    /// libocr's alphaReportPpb alone (over `alpha_ppb`).
    alpha_report_ppb: Option<u64>,
    /// libocr's alphaAcceptPpb alone (over `alpha_ppb`).
    alpha_accept_ppb: Option<u64>,
    /// libocr's alphaReportInfinite: never report on deviation.
    #[serde(default)]
    alpha_report_infinite: bool,
    /// libocr's alphaAcceptInfinite: never accept on deviation.
    #[serde(default)]
    alpha_accept_infinite: bool,
    /// libocr's deltaC; `heartbeat` is its older name.
    #[serde(alias = "heartbeat")]
    delta_c: Option<String>,
    min: Option<String>,
    max: Option<String>,
    #[serde(default)]
    max_durations: MaxDurationsEntry,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MaxDurationsEntry {
    query: Option<String>,
    observation: Option<String>,
    report: Option<String>,
    should_accept: Option<String>,
    should_transmit: Option<String>,
}

/// The feeds of a job whose plugins are `plugins`; problems go to `problems`.
pub(super) fn resolve(
    entries: &[FeedEntry],
    plugins: &[PluginConfig],
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Vec<FeedConfig> {
    let min_query = min_query(env(MIN_QUERY_VAR).as_deref());
    let mut feeds = Vec::new();
    for (i, fe) in entries.iter().enumerate() {
        let at = format!("feeds[{i}] ({})", fe.name);
        // A feed's name names its contract's file on the devchain and
        // its metrics: keep it a plain, unique file name.
        let name_ok = !fe.name.is_empty()
            && fe.name.len() <= 64
            && !fe.name.starts_with('.')
            && fe
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            problems.push(format!(
                    "{at}.name: {:?} must be 1-64 characters of A-Z, a-z, 0-9, '-', '_' and '.', not starting with '.'",
                    fe.name
                ));
        } else if entries[..i].iter().any(|g| g.name == fe.name) {
            problems.push(format!(
                "{at}.name: {:?} is used twice; feed names are unique",
                fe.name
            ));
        }
        let kind_of = |name: &str| {
            plugins
                .iter()
                .find(|p: &&PluginConfig| p.name == name)
                .map(|p| p.kind.name)
        };
        if kind_of(&fe.relay) != Some("relayer") {
            problems.push(format!(
                "{at}.relay: {:?} is not a plugin of kind \"relayer\" in this job",
                fe.relay
            ));
        }
        if kind_of(&fe.median) != Some("median") {
            problems.push(format!(
                "{at}.median: {:?} is not a plugin of kind \"median\" in this job",
                fe.median
            ));
        }
        let n = fe.oracles.unwrap_or(4);
        let f = fe.f.unwrap_or(1);
        if n == 0 || 3 * u32::from(f) >= u32::from(n) {
            problems.push(format!(
                "{at}: {n} oracles cannot tolerate f={f}; need oracles > 3f (e.g. 4 oracles, f=1)"
            ));
        }
        if let Err(e) = crate::sources::build(&fe.source) {
            problems.push(format!("{at}.source: {e}"));
        }
        let juels = fe
            .juels
            .clone()
            .unwrap_or(crate::sources::Spec::Static { value: 1 });
        if let Err(e) = crate::sources::build(&juels) {
            problems.push(format!("{at}.juels: {e}"));
        }
        let gas_price = fe
            .gas_price
            .clone()
            .unwrap_or(crate::sources::Spec::Static { value: 0 });
        if let Err(e) = crate::sources::build(&gas_price) {
            problems.push(format!("{at}.gas_price: {e}"));
        }
        if let Some(def) = &fe.deviation_func {
            let bytes = def.to_string().into_bytes();
            if let Err(e) = crate::services::median::factory::check_deviation_func(&bytes) {
                problems.push(format!("{at}.deviation_func: {e}"));
            }
        }
        let mut dur = |field: &str, v: &Option<String>, default: Duration| match v {
            None => default,
            Some(v) => parse_duration(&format!("{at}.{field}"), v).unwrap_or_else(|e| {
                problems.push(e);
                default
            }),
        };
        let ms = Duration::from_millis;
        let interval = dur("interval", &fe.interval, Duration::from_secs(1));
        let heartbeat = dur("delta_c", &fe.delta_c, Duration::from_secs(60));
        let md = &fe.max_durations;
        let max = crate::services::median::deadlines::MaxDurations {
            query: dur("max_durations.query", &md.query, ms(100)),
            observation: dur("max_durations.observation", &md.observation, ms(500)),
            report: dur("max_durations.report", &md.report, ms(500)),
            should_accept: dur("max_durations.should_accept", &md.should_accept, ms(200)),
            should_transmit: dur(
                "max_durations.should_transmit",
                &md.should_transmit,
                ms(200),
            ),
        };
        let mut bound = |field: &str, v: &Option<String>, default: i128| match v {
            None => default,
            Some(v) => v.trim().parse::<i128>().unwrap_or_else(|_| {
                problems.push(format!(
                    "{at}.{field}: {v:?} is not an integer (give it as a string, e.g. \"0\")"
                ));
                default
            }),
        };
        let bounds = Bounds {
            min: bound("min", &fe.min, i128::MIN / 2),
            max: bound("max", &fe.max, i128::MAX / 2),
        };
        let deadlines = match &min_query {
            Ok(floor) => match crate::services::median::deadlines::Deadlines::new(max, *floor) {
                Ok(d) => Some(d),
                Err(e) => {
                    problems.push(format!("{at}.max_durations: {e}"));
                    None
                }
            },
            Err(_) => None,
        };
        if let Some(deadlines) = deadlines {
            feeds.push(crate::node::feeds::FeedConfig {
                name: fe.name.clone(),
                relay: fe.relay.clone(),
                median: fe.median.clone(),
                source: fe.source.clone(),
                juels,
                gas_price,
                deviation_func: fe.deviation_func.clone(),
                oracles: n,
                f,
                interval,
                offchain: crate::median::libocr::OffchainConfig {
                    alpha_report_infinite: fe.alpha_report_infinite,
                    alpha_report_ppb: fe.alpha_report_ppb.or(fe.alpha_ppb).unwrap_or(0),
                    alpha_accept_infinite: fe.alpha_accept_infinite,
                    alpha_accept_ppb: fe.alpha_accept_ppb.or(fe.alpha_ppb).unwrap_or(0),
                    delta_c: heartbeat,
                },
                bounds,
                deadlines,
            });
        }
    }
    if let Err(e) = &min_query {
        problems.push(e.clone());
    }
    feeds
}
