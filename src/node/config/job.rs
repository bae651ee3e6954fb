//! The job file's plugins, supervision and HTTP sections, and the
//! environment (`CL_<NAME>_CMD`, `CL_<NAME>_ENV`): parsed and resolved into a
//! [`NodeConfig`], every problem collected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::feeds::{self, FeedEntry};
use super::{
    env_prefix, parse_duration, ConfigError, Mode, NodeConfig, PluginConfig, RpcBounds, Supervision,
};
use crate::goplugin::host::Limit;
use crate::node::kinds;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    plugins: Vec<PluginEntry>,
    #[serde(default)]
    supervision: SupervisionEntry,
    #[serde(default)]
    http: HttpEntry,
    #[serde(default)]
    feeds: Vec<FeedEntry>,
    /// Threads that run the feeds' rounds.
    feed_threads: Option<usize>,
    /// Rounds start on ticks this far apart (`auto`, the default: from the
    /// feeds; `0s`: as each is due).
    round_slack: Option<String>,
    data_dir: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpEntry {
    listen: Option<String>,
    max_connections: Option<usize>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    write_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginEntry {
    name: String,
    kind: String,
    #[serde(default)]
    limits: LimitsEntry,
    /// The LOOPP executable's SHA-256, hex (`CL_<NAME>_SHA256` over it).
    sha256: Option<String>,
    #[serde(default)]
    rpc: RpcEntry,
    /// `shared` (default) or `per_feed`: a median LOOPP per feed.
    processes: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RpcEntry {
    max_message_bytes: Option<usize>,
    concurrent_calls: Option<usize>,
    queued_calls: Option<usize>,
}

/// A plugin's RPC bounds: the defaults, with what the job sets.
fn rpc_bounds(e: &RpcEntry, at: &str, problems: &mut Vec<String>) -> RpcBounds {
    let mut b = RpcBounds::default();
    if let Some(n) = e.max_message_bytes {
        match crate::goplugin::rpc::parse_max_message(&n.to_string()) {
            Ok(n) => b.max_message = n,
            Err(_) => problems.push(format!(
                "{at}.rpc.max_message_bytes: {n} is out of range; give {} to {} (default {})",
                crate::goplugin::rpc::MIN_MAX_MESSAGE,
                i32::MAX,
                crate::goplugin::rpc::DEFAULT_MAX_MESSAGE
            )),
        }
    }
    match e.concurrent_calls {
        Some(0) => problems.push(format!(
            "{at}.rpc.concurrent_calls: 0 would refuse every call the plugin makes to the node; give 1 or more (default {})",
            crate::goplugin::host::DEFAULT_CONCURRENT_CALLS
        )),
        Some(n) => b.concurrent_calls = n,
        None => {}
    }
    if let Some(n) = e.queued_calls {
        b.queued_calls = n;
    }
    b
}

/// The HTTP server's bounds: the defaults, with what the job sets.
fn http_limits(e: &HttpEntry, problems: &mut Vec<String>) -> crate::goplugin::http::Limits {
    let mut l = crate::goplugin::http::Limits::default();
    match e.max_connections {
        Some(0) => problems.push(
            "http.max_connections: 0 would refuse every client; give at least 1 (default 1024)"
                .into(),
        ),
        Some(n) => {
            l.max_connections = n;
            l.queue = n;
        }
        None => {}
    }
    for (name, value, slot) in [
        (
            "http.header_timeout",
            &e.header_timeout,
            &mut l.header_timeout,
        ),
        ("http.idle_timeout", &e.idle_timeout, &mut l.idle_timeout),
        ("http.write_timeout", &e.write_timeout, &mut l.write_timeout),
    ] {
        if let Some(v) = value {
            match parse_duration(name, v) {
                Ok(d) => *slot = d,
                Err(e) => problems.push(e),
            }
        }
    }
    l
}

/// A SHA-256 in hex, as `sha256sum` prints it.
fn parse_sha256(v: &str) -> Option<[u8; 32]> {
    let v = v.trim();
    if v.len() != 64 || !v.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    <[u8; 32]>::try_from(crate::services::wire::unhex(v)).ok()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsEntry {
    address_space_mb: Option<u64>,
    open_files: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SupervisionEntry {
    start_timeout: Option<String>,
    rpc_timeout: Option<String>,
    health_interval: Option<String>,
    health_timeout: Option<String>,
    health_failures: Option<u32>,
    backoff_initial: Option<String>,
    backoff_max: Option<String>,
    stable_after: Option<String>,
    shutdown_grace: Option<String>,
}

impl NodeConfig {
    /// Parses and resolves a job; `env` looks variables up.
    pub fn from_json(
        label: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NodeConfig, ConfigError> {
        let job: JobFile = serde_json::from_str(text).map_err(|e| ConfigError {
            problems: vec![format!(
                "{label}: not a valid job file: {e} (see the job file format in ARCHITECTURE.md)"
            )],
        })?;
        let mut problems = Vec::new();
        let supervision = supervision(&job.supervision, &mut problems);
        let mut plugins = Vec::new();
        let mut per_feed = Vec::new();
        let path_var = env("PATH");
        for (i, p) in job.plugins.iter().enumerate() {
            let at = format!("plugins[{i}]");
            let name_ok = !p.name.is_empty()
                && p.name.len() <= 64
                && p.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !name_ok {
                problems.push(format!(
                    "{at}.name: {:?} must be 1-64 characters of a-z, 0-9, '-' and '_'",
                    p.name
                ));
                continue;
            }
            if plugins.iter().any(|q: &PluginConfig| q.name == p.name) {
                problems.push(format!(
                    "{at}.name: {:?} is used twice; plugin names are unique",
                    p.name
                ));
                continue;
            }
            let Some(kind) = kinds::lookup(&p.kind) else {
                problems.push(format!(
                    "{at}.kind: {:?} is not a kind; use one of {}",
                    p.kind,
                    kinds::names()
                ));
                continue;
            };
            let prefix = env_prefix(&p.name);
            let cmd_var = format!("{prefix}_CMD");
            let env_var = format!("{prefix}_ENV");
            let mode = match env(&cmd_var).filter(|v| !v.trim().is_empty()) {
                Some(cmd) => match crate::goplugin::host::program::find(
                    std::ffi::OsStr::new(cmd.trim()),
                    path_var.as_deref().map(std::ffi::OsStr::new),
                ) {
                    Ok(command) => {
                        let extra = match env(&env_var).filter(|v| !v.is_empty()) {
                            None => Vec::new(),
                            Some(file) => match crate::node::dotenv::read(Path::new(&file)) {
                                Ok(vars) => vars
                                    .into_iter()
                                    .map(|(k, v)| (k.into(), v.into()))
                                    .collect(),
                                Err(e) => {
                                    problems.push(format!("{env_var}: {e}"));
                                    Vec::new()
                                }
                            },
                        };
                        Mode::Loopp {
                            command,
                            env: extra,
                        }
                    }
                    Err(why) => {
                        // As in Chainlink, the variable is one executable,
                        // never split into arguments.
                        let spaced = if cmd.trim().contains(char::is_whitespace) {
                            format!(" ({cmd_var} names one program, without arguments)")
                        } else {
                            String::new()
                        };
                        problems.push(format!(
                            "{cmd_var}={cmd:?}: {why}{spaced}; install the plugin or unset {cmd_var} to run {} in-process",
                            p.name
                        ));
                        continue;
                    }
                },
                None if kind.in_process_for(&p.name).is_some() => Mode::InProcess,
                None => {
                    problems.push(format!(
                        "{}: kind {:?} has no in-process implementation for {:?}; set {cmd_var} to its LOOPP command (e.g. {cmd_var}=loopp-{}) or remove it from the job",
                        p.name, kind.name, p.name, p.name
                    ));
                    continue;
                }
            };
            let mut limits = Vec::new();
            match p.limits.address_space_mb {
                Some(0) => problems.push(format!(
                    "{at}.limits.address_space_mb: must be more than 0 (MiB)"
                )),
                Some(mb) => limits.push(Limit::AddressSpace(mb.saturating_mul(1 << 20))),
                None => {}
            }
            match p.limits.open_files {
                Some(n) if n < 16 => problems.push(format!(
                    "{at}.limits.open_files: {n} is too few for a gRPC plugin; use 16 or more"
                )),
                Some(n) => limits.push(Limit::OpenFiles(n)),
                None => {}
            }
            let sha_var = format!("{prefix}_SHA256");
            let (sha_from, sha_text) = match env(&sha_var).filter(|v| !v.trim().is_empty()) {
                Some(v) => (sha_var.clone(), Some(v)),
                None => (format!("{at}.sha256"), p.sha256.clone()),
            };
            let sha256 = match sha_text {
                None => None,
                Some(v) => match parse_sha256(&v) {
                    Some(h) if matches!(mode, Mode::Loopp { .. }) => Some(h),
                    Some(_) => {
                        problems.push(format!(
                            "{sha_from}: {} runs in-process, so there is no executable to pin; set {cmd_var} or remove the hash",
                            p.name
                        ));
                        None
                    }
                    None => {
                        problems.push(format!(
                            "{sha_from}: {v:?} is not a SHA-256; give 64 hex digits, as `sha256sum` prints them"
                        ));
                        None
                    }
                },
            };
            let rpc = rpc_bounds(&p.rpc, &at, &mut problems);
            match p.processes.as_deref() {
                None | Some("shared") => {}
                Some("per_feed") if kind.name == "median" => {
                    if matches!(mode, Mode::Loopp { .. }) {
                        per_feed.push(p.name.clone());
                    }
                }
                Some("per_feed") => problems.push(format!(
                    "{at}.processes: only a plugin of kind \"median\" runs a process per feed; remove it from {:?}",
                    p.name
                )),
                Some(v) => problems.push(format!(
                    "{at}.processes: {v:?} is not a choice; use \"shared\" (one process for all feeds, the default) or \"per_feed\" (one per feed, as a Chainlink node runs one per job)"
                )),
            }
            plugins.push(PluginConfig {
                name: p.name.clone(),
                kind,
                mode,
                limits,
                sha256,
                rpc,
            });
        }
        let mut feeds = feeds::resolve(&job.feeds, &plugins, env, &mut problems);
        split_per_feed(&per_feed, &mut plugins, &mut feeds, &mut problems);
        check_open_files(&plugins, &feeds, &mut problems);
        let data_dir = PathBuf::from(job.data_dir.clone().unwrap_or_else(|| "loopp-data".into()));
        let http = match job.http.listen.as_deref() {
            None => Some(crate::node::http::DEFAULT_LISTEN.to_string()),
            Some("off") => None,
            Some(a) if a.parse::<std::net::SocketAddr>().is_ok() => Some(a.to_string()),
            Some(a) => {
                problems.push(format!(
                    "http.listen: {a:?} is not IP:PORT; use e.g. \"127.0.0.1:6688\" (or \"off\")"
                ));
                None
            }
        };
        let http_limits = http_limits(&job.http, &mut problems);
        use crate::node::feeds::scheduler::{DEFAULT_THREADS, MAX_THREADS};
        let feed_threads = match job.feed_threads {
            None => DEFAULT_THREADS,
            Some(n) if (1..=MAX_THREADS).contains(&n) => n,
            Some(n) => {
                problems.push(format!(
                    "feed_threads: {n} is out of range; give 1 to {MAX_THREADS} (default {DEFAULT_THREADS}): the threads that run every feed's rounds"
                ));
                DEFAULT_THREADS
            }
        };
        let round_slack = round_slack(job.round_slack.as_deref(), &feeds, &mut problems);
        if problems.is_empty() {
            Ok(NodeConfig {
                plugins,
                supervision,
                http,
                http_limits,
                feeds,
                feed_threads,
                round_slack,
                data_dir,
            })
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// The most `round_slack` may be, whatever the intervals.
pub const MAX_ROUND_SLACK: Duration = Duration::from_secs(1);

/// The most an automatic `round_slack` is.
pub const AUTO_ROUND_SLACK_MAX: Duration = Duration::from_millis(50);

/// Rounds an automatic `round_slack` aims to start on one tick: about
/// what saves most of the CPU (300 LOOPP feeds at 1 s, CPU per round: no
/// slack 1.72-1.78 ms; ticks of 10 ms, 3 rounds each, 1.22-1.61; 25 ms,
/// 7.5 rounds, 1.08-1.22; 50 ms, 15 rounds, 1.04), while a tick's burst
/// stays small next to `feed_threads`.
pub const AUTO_ROUNDS_PER_TICK: f64 = 8.0;

/// Below this many rounds a tick, on average, an automatic slack is off:
/// rounds would wait with little to start together with.
pub const AUTO_MIN_ROUNDS_PER_TICK: f64 = 2.0;

/// The slack `round_slack: "auto"` (the default) gives `feeds`: ticks that
/// start about [`AUTO_ROUNDS_PER_TICK`] rounds each at the feeds' rate,
/// at most [`AUTO_ROUND_SLACK_MAX`] and a tenth of the shortest interval,
/// whole milliseconds; zero (rounds start as each is due) when that tick
/// would start fewer than [`AUTO_MIN_ROUNDS_PER_TICK`] rounds. For feeds at
/// 1 s: off below 40 feeds, 50 ms up to 160, then 8 s divided by the feed
/// count (26 ms at 300, 8 ms at 1,000).
pub fn auto_round_slack(feeds: &[crate::node::feeds::FeedConfig]) -> Duration {
    let rate: f64 = feeds
        .iter()
        .filter(|f| !f.interval.is_zero())
        .map(|f| 1.0 / f.interval.as_secs_f64())
        .sum();
    let Some(shortest) = feeds.iter().map(|f| f.interval).min() else {
        return Duration::ZERO;
    };
    if rate <= 0.0 {
        return Duration::ZERO;
    }
    let cap = AUTO_ROUND_SLACK_MAX.min(shortest / 10);
    let tick = Duration::from_secs_f64(AUTO_ROUNDS_PER_TICK / rate).min(cap);
    let tick = Duration::from_millis(tick.as_millis() as u64);
    if tick.as_secs_f64() * rate < AUTO_MIN_ROUNDS_PER_TICK {
        return Duration::ZERO;
    }
    tick
}

/// The job's `round_slack`: `auto` (also when not set,
/// [`auto_round_slack`]), `0s` (rounds start as each is due), or a
/// duration of at most [`MAX_ROUND_SLACK`] and a tenth of every feed's
/// interval, so a round starts late by less than a tenth of its interval.
fn round_slack(
    v: Option<&str>,
    feeds: &[crate::node::feeds::FeedConfig],
    problems: &mut Vec<String>,
) -> Duration {
    let v = v.unwrap_or("auto");
    let slack = match v.trim() {
        "auto" => return auto_round_slack(feeds),
        "0" | "0s" => return Duration::ZERO,
        _ => match super::parse_duration("round_slack", v) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!(
                    "{e} (or \"auto\", the default, or \"0s\": rounds start as each is due)"
                ));
                return Duration::ZERO;
            }
        },
    };
    if slack > MAX_ROUND_SLACK {
        problems.push(format!(
            "round_slack: {v:?} is more than {MAX_ROUND_SLACK:?}; give e.g. \"50ms\", \"auto\" (the default) or \"0s\" for rounds started as each is due"
        ));
        return Duration::ZERO;
    }
    if let Some(f) = feeds.iter().min_by_key(|f| f.interval) {
        if slack > f.interval / 10 {
            problems.push(format!(
                "round_slack: {v:?} is more than a tenth of feed {:?}'s interval ({:?}); give at most {:?}, \"auto\" (the default) or \"0s\" for rounds started as each is due",
                f.name,
                f.interval,
                f.interval / 10
            ));
            return Duration::ZERO;
        }
    }
    slack
}

/// A median plugin with `processes: "per_feed"` (a LOOPP) becomes one
/// plugin per feed that uses it, named `<plugin>-<feed>` (lower case, '.'
/// as '_'), each its own process with its own supervisor, metrics port and
/// discovery target, as a Chainlink node runs a median process per job.
/// A plugin no feed uses stays as it is. In-process, feeds already have
/// instances of their own: nothing to split.
fn split_per_feed(
    names: &[String],
    plugins: &mut Vec<PluginConfig>,
    feeds: &mut [crate::node::feeds::FeedConfig],
    problems: &mut Vec<String>,
) {
    for name in names {
        let Some(at) = plugins.iter().position(|p| &p.name == name) else {
            continue;
        };
        if !feeds.iter().any(|f| &f.median == name) {
            continue;
        }
        let base = plugins.remove(at);
        for feed in feeds.iter_mut().filter(|f| &f.median == name) {
            let own = format!(
                "{name}-{}",
                feed.name.to_ascii_lowercase().replace('.', "_")
            );
            if own.len() > 64 {
                problems.push(format!(
                    "feed {:?}: its median process would be named {own:?}, over 64 characters; shorten the feed's or the plugin's name",
                    feed.name
                ));
            } else if plugins.iter().any(|p| p.name == own) {
                problems.push(format!(
                    "feed {:?}: its median process would be named {own:?}, which another plugin has; rename one of them",
                    feed.name
                ));
            } else {
                plugins.push(PluginConfig {
                    name: own.clone(),
                    ..base.clone()
                });
            }
            feed.median = own;
        }
    }
}

/// A LOOPP's `limits.open_files` must fit the feeds it serves: each holds
/// sockets of its own in the plugin (see [`crate::node::openfiles`]).
fn check_open_files(
    plugins: &[PluginConfig],
    feeds: &[crate::node::feeds::FeedConfig],
    problems: &mut Vec<String>,
) {
    use crate::node::openfiles::{plugin_need, plugin_per_feed, will_route, PLUGIN_BASE};
    for p in plugins {
        let Mode::Loopp { command, env } = &p.mode else {
            continue;
        };
        let routed = will_route(command, env);
        let Some(limit) = p.limits.iter().find_map(|l| match l {
            Limit::OpenFiles(n) => Some(*n),
            _ => None,
        }) else {
            continue;
        };
        let served = feeds
            .iter()
            .filter(|f| f.median == p.name || f.relay == p.name)
            .count();
        let need = plugin_need(p.kind.name, served, routed);
        if served > 0 && limit < need {
            problems.push(format!(
                "plugin {:?}: limits.open_files {limit} is too few for the {served} feed(s) it serves: a {} LOOPP holds about {} open files per feed and {PLUGIN_BASE} of its own; give at least {need}, or remove the limit",
                p.name,
                p.kind.name,
                plugin_per_feed(p.kind.name, routed),
            ));
        }
    }
}

fn supervision(e: &SupervisionEntry, problems: &mut Vec<String>) -> Supervision {
    let mut s = Supervision::default();
    let mut set = |field: &str, v: &Option<String>, slot: &mut Duration| {
        if let Some(v) = v {
            match parse_duration(&format!("supervision.{field}"), v) {
                Ok(d) => *slot = d,
                Err(p) => problems.push(p),
            }
        }
    };
    set("start_timeout", &e.start_timeout, &mut s.start_timeout);
    set("rpc_timeout", &e.rpc_timeout, &mut s.rpc_timeout);
    set(
        "health_interval",
        &e.health_interval,
        &mut s.health_interval,
    );
    set("health_timeout", &e.health_timeout, &mut s.health_timeout);
    set(
        "backoff_initial",
        &e.backoff_initial,
        &mut s.backoff_initial,
    );
    set("backoff_max", &e.backoff_max, &mut s.backoff_max);
    set("stable_after", &e.stable_after, &mut s.stable_after);
    set("shutdown_grace", &e.shutdown_grace, &mut s.shutdown_grace);
    match e.health_failures {
        Some(0) => problems.push("supervision.health_failures: must be 1 or more".into()),
        Some(n) => s.health_failures = n,
        None => {}
    }
    if s.backoff_initial > s.backoff_max {
        problems.push(format!(
            "supervision.backoff_initial ({:?}) is more than supervision.backoff_max ({:?})",
            s.backoff_initial, s.backoff_max
        ));
    }
    s
}
