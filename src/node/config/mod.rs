//! The node's configuration: the job file (what to run, how to supervise it)
//! and the environment (`CL_<NAME>_CMD`, `CL_<NAME>_ENV`), resolved and checked
//! completely before anything starts.
//!
//! Job file (JSON; every field but `plugins[].name` and `.kind` optional):
//!
//! ```json
//! {
//!   "plugins": [
//!     {"name": "example", "kind": "example",
//!      "limits": {"address_space_mb": 4096, "open_files": 1024}}
//!   ],
//!   "supervision": {
//!     "start_timeout": "10s", "rpc_timeout": "1s",
//!     "health_interval": "2s", "health_timeout": "1s", "health_failures": 2,
//!     "backoff_initial": "100ms", "backoff_max": "30s", "stable_after": "10s",
//!     "shutdown_grace": "2s"
//!   },
//!   "http": {"listen": "127.0.0.1:6688"}
//! }
//! ```
//!
//! Parsing lives in `job.rs` (plugins, supervision, HTTP) and `feeds.rs` (the
//! median feeds); this module holds the resolved model they produce.
//!
//! Durations are Go-style (`250ms`, `1s`, `1m30s`); zero is refused, since
//! every wait needs a realistic bound. Every problem found is reported at once,
//! each naming the setting and what a valid value looks like.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::goplugin::host::Limit;
use crate::node::kinds::Kind;

mod feeds;
mod job;

pub use job::auto_round_slack;

/// The job the node runs when given no `--config`: a devchain relay and one
/// median feed on a deterministic random walk.
pub const DEFAULT_JOB: &str = r#"{
  "plugins": [
    {"name": "devchain", "kind": "relayer"},
    {"name": "median", "kind": "median"}
  ],
  "feeds": [
    {"name": "demo-usd", "relay": "devchain", "median": "median",
     "source": {"type": "randomwalk", "seed": 1, "start": 300000, "step_ppm": 2000},
     "oracles": 4, "f": 1, "interval": "1s",
     "alpha_ppb": 1000000, "delta_c": "10s"}
  ]
}"#;

/// How plugins are supervised. Defaults are documented on each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Supervision {
    /// Spawn to handshake (10s).
    pub start_timeout: Duration,
    /// Deadline of service calls such as Close and HealthReport (1s).
    pub rpc_timeout: Duration,
    /// Time between health checks of a running plugin (2s).
    pub health_interval: Duration,
    /// Deadline of one health check (1s).
    pub health_timeout: Duration,
    /// Consecutive failed checks that make the node restart a plugin (2).
    pub health_failures: u32,
    /// First restart delay (100ms); doubles per consecutive failure.
    pub backoff_initial: Duration,
    /// Restart delay cap (30s).
    pub backoff_max: Duration,
    /// Running this long resets the backoff (10s).
    pub stable_after: Duration,
    /// Shutdown RPC to SIGKILL (2s).
    pub shutdown_grace: Duration,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision {
            start_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(1),
            health_interval: Duration::from_secs(2),
            health_timeout: Duration::from_secs(1),
            health_failures: 2,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Where a plugin runs.
#[derive(Clone, Debug)]
pub enum Mode {
    /// As a LOOPP: this command (resolved on PATH) with these extra variables.
    Loopp {
        /// The executable.
        command: PathBuf,
        /// From `CL_<NAME>_ENV`.
        env: Vec<(OsString, OsString)>,
    },
    /// In the node's process.
    InProcess,
}

/// One plugin, resolved.
#[derive(Clone, Debug)]
pub struct PluginConfig {
    /// Its name (unique), e.g. `median`.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// LOOPP or in-process.
    pub mode: Mode,
    /// Resource limits for its process.
    pub limits: Vec<Limit>,
    /// Its executable's pinned SHA-256 (LOOPPs): checked before every start.
    pub sha256: Option<[u8; 32]>,
    /// Message size and served-call bounds (LOOPPs).
    pub rpc: RpcBounds,
}

/// What bounds a LOOPP's RPCs (job file `plugins[].rpc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcBounds {
    /// Largest gRPC message either way (`max_message_bytes`).
    pub max_message: usize,
    /// The plugin's calls to what the node serves it, running at once
    /// (`concurrent_calls`).
    pub concurrent_calls: usize,
    /// Such calls waiting; beyond, RESOURCE_EXHAUSTED (`queued_calls`).
    pub queued_calls: usize,
}

impl Default for RpcBounds {
    fn default() -> RpcBounds {
        RpcBounds {
            max_message: crate::goplugin::rpc::DEFAULT_MAX_MESSAGE,
            concurrent_calls: crate::goplugin::host::DEFAULT_CONCURRENT_CALLS,
            queued_calls: crate::goplugin::host::DEFAULT_QUEUED_CALLS,
        }
    }
}

/// Everything the node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The plugins, in job-file order.
    pub plugins: Vec<PluginConfig>,
    /// Supervision settings.
    pub supervision: Supervision,
    /// The HTTP listen address (`/discovery`, `/metrics`, `/health`, the
    /// metrics proxy); None: no HTTP server.
    pub http: Option<String>,
    /// What bounds the HTTP server (job file `http.max_connections`,
    /// `http.header_timeout`, `http.idle_timeout`, `http.write_timeout`).
    pub http_limits: crate::goplugin::http::Limits,
    /// Median feeds.
    pub feeds: Vec<crate::node::feeds::FeedConfig>,
    /// Threads that run the feeds' rounds (job file `feed_threads`, default
    /// [`crate::node::feeds::scheduler::DEFAULT_THREADS`]): the node's
    /// threads do not grow with its feeds.
    pub feed_threads: usize,
    /// Rounds start on ticks this far apart (job file `round_slack`;
    /// zero: as each is due), so rounds due close together start together
    /// and wake the plugins once. By default set from the feeds
    /// ([`auto_round_slack`]): off for small jobs.
    pub round_slack: std::time::Duration,
    /// Where chain files live (`DATA/<relay>/<feed>.jsonl`, one contract per feed).
    pub data_dir: PathBuf,
}

/// Configuration problems, all of them, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Each problem: `setting: what is wrong; what is valid`.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "configuration: {one}"),
            many => {
                write!(f, "configuration: {} problems:", many.len())?;
                for p in many {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses a Go-style duration (`250ms`, `1s`, `1m30s`); zero and negative
/// durations are refused.
pub fn parse_duration(setting: &str, v: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = v.trim().parse().map_err(|_| {
        format!("{setting}: {v:?} is not a duration; use e.g. \"250ms\", \"1s\", \"1m30s\"")
    })?;
    match Duration::try_from(d) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "{setting}: {v:?} must be more than zero; realistic timeouts are required"
        )),
    }
}

/// The Query floor when `CL_MIN_OCR2_MAX_DURATION_QUERY` is not set.
pub const DEFAULT_MIN_QUERY: Duration = Duration::from_millis(100);

/// The environment variable holding the Query floor.
pub const MIN_QUERY_VAR: &str = "CL_MIN_OCR2_MAX_DURATION_QUERY";

/// The Query floor from the variable's value (None: unset → default). A
/// malformed or zero value is an error naming the variable.
pub fn min_query(value: Option<&str>) -> Result<Duration, String> {
    match value.filter(|v| !v.trim().is_empty()) {
        None => Ok(DEFAULT_MIN_QUERY),
        Some(v) => parse_duration(MIN_QUERY_VAR, v),
    }
}

/// The environment variable prefix for a plugin name: `median` → `CL_MEDIAN`.
pub fn env_prefix(name: &str) -> String {
    format!("CL_{}", name.to_ascii_uppercase().replace('-', "_"))
}

impl NodeConfig {
    /// Reads the job file at `path` (or the default job) and resolves it
    /// against the process environment.
    pub fn load(path: Option<&Path>) -> Result<NodeConfig, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError {
                problems: vec![format!("--config {}: cannot read: {e}", p.display())],
            })?,
            None => DEFAULT_JOB.to_string(),
        };
        let label = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the default job".into());
        NodeConfig::from_json(&label, &text, &|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn default_job_runs_in_process_without_commands() {
        let c = NodeConfig::from_json("default", DEFAULT_JOB, &env_of(&[])).unwrap();
        assert_eq!(c.plugins.len(), 2);
        assert!(c.plugins.iter().all(|p| matches!(p.mode, Mode::InProcess)));
        assert_eq!(c.feeds.len(), 1);
        assert_eq!(c.feeds[0].deadlines.0.query, Duration::from_millis(100));
        assert_eq!(c.supervision, Supervision::default());
    }

    /// `round_slack`: `auto` unless set (off for the one default feed);
    /// `0s` is off; more than a tenth of a feed's interval, or than a
    /// second, or not a duration, is refused with the limit named.
    #[test]
    fn round_slack_is_bounded_by_the_shortest_interval() {
        let with = |v: &str| {
            let job = DEFAULT_JOB.replacen('{', &format!("{{\"round_slack\": {v:?},"), 1);
            NodeConfig::from_json("job", &job, &env_of(&[]))
        };
        let default = NodeConfig::from_json("job", DEFAULT_JOB, &env_of(&[])).unwrap();
        assert_eq!(default.round_slack, Duration::ZERO);
        assert_eq!(with("auto").unwrap().round_slack, Duration::ZERO);
        assert_eq!(with("50ms").unwrap().round_slack, Duration::from_millis(50));
        assert_eq!(
            with("100ms").unwrap().round_slack,
            Duration::from_millis(100)
        );
        assert_eq!(with("0s").unwrap().round_slack, Duration::ZERO);
        let problem = |v: &str| with(v).unwrap_err().problems.join("\n");
        let p = problem("150ms");
        assert!(
            p.contains("round_slack: \"150ms\" is more than a tenth of feed \"demo-usd\"'s interval (1s); give at most 100ms"),
            "{p}"
        );
        assert!(
            problem("2s").contains("is more than 1s"),
            "{}",
            problem("2s")
        );
        let p = problem("soon");
        assert!(
            p.contains("round_slack: \"soon\" is not a duration") && p.contains("\"0s\""),
            "{p}"
        );
    }

    /// `round_slack: "auto"` (the default) from the feeds' rate: ticks of
    /// about 8 rounds, at most 50 ms and a tenth of the shortest interval,
    /// off below 2 rounds a tick.
    #[test]
    fn an_automatic_round_slack_follows_the_feeds_rate() {
        // `n` copies of the default feed at `interval`, and one at `other`.
        let slack = |n: usize, interval: &str, other: Option<&str>| -> Duration {
            let feed = |i: usize, iv: &str| {
                format!(
                    r#"{{"name": "f{i}", "relay": "devchain", "median": "median",
                         "source": {{"type": "randomwalk", "seed": 1, "start": 300000, "step_ppm": 2000}},
                         "oracles": 4, "f": 1, "interval": "{iv}", "alpha_ppb": 1000000, "delta_c": "10s"}}"#
                )
            };
            let mut feeds: Vec<String> = (0..n).map(|i| feed(i, interval)).collect();
            feeds.extend(other.map(|iv| feed(n, iv)));
            let job = format!(
                r#"{{"plugins": [{{"name": "devchain", "kind": "relayer"}}, {{"name": "median", "kind": "median"}}],
                    "feeds": [{}]}}"#,
                feeds.join(",")
            );
            NodeConfig::from_json("job", &job, &env_of(&[]))
                .unwrap_or_else(|e| panic!("{e}"))
                .round_slack
        };
        let ms = Duration::from_millis;
        // At 1 s: off below 40 feeds (under 2 rounds a 50 ms tick), 50 ms up
        // to 160 feeds, then 8 s divided by the count.
        assert_eq!(slack(39, "1s", None), Duration::ZERO);
        assert_eq!(slack(40, "1s", None), ms(50));
        assert_eq!(slack(160, "1s", None), ms(50));
        assert_eq!(slack(300, "1s", None), ms(26));
        assert_eq!(slack(1000, "1s", None), ms(8));
        // A feed at 200 ms caps the tick at 20 ms and adds 5 rounds a second.
        assert_eq!(slack(100, "1s", Some("200ms")), ms(20));
        assert_eq!(slack(200, "1s", Some("200ms")), ms(20));
        assert_eq!(slack(400, "1s", Some("200ms")), ms(19));
        // Sub-millisecond ticks are off.
        assert_eq!(slack(100, "10ms", None), Duration::ZERO);
    }

    #[test]
    fn cmd_on_path_selects_loopp() {
        let job = r#"{"plugins":[{"name":"my-ex","kind":"example","limits":{"open_files":64}}]}"#;
        let c = NodeConfig::from_json(
            "job",
            job,
            &env_of(&[("PATH", "/nonexistent:/bin"), ("CL_MY_EX_CMD", "true")]),
        )
        .unwrap();
        match &c.plugins[0].mode {
            Mode::Loopp { command, env } => {
                assert_eq!(command, Path::new("/bin/true"));
                assert!(env.is_empty());
            }
            Mode::InProcess => panic!("expected a LOOPP"),
        }
        assert_eq!(c.plugins[0].limits, vec![Limit::OpenFiles(64)]);
    }

    #[test]
    fn every_problem_is_reported_with_its_setting() {
        let job = r#"{"plugins":[
            {"name":"solana","kind":"relayer"},
            {"name":"Bad Name","kind":"example"},
            {"name":"x","kind":"nope"},
            {"name":"y","kind":"example"},
            {"name":"y","kind":"example"}
        ],"supervision":{"rpc_timeout":"0s","health_interval":"soon","health_failures":0}}"#;
        let err = NodeConfig::from_json("job", job, &env_of(&[("PATH", "/bin")])).unwrap_err();
        let text = err.to_string();
        for want in [
            "supervision.rpc_timeout: \"0s\" must be more than zero; realistic timeouts are required",
            "supervision.health_interval: \"soon\" is not a duration",
            "supervision.health_failures: must be 1 or more",
            "solana: kind \"relayer\" has no in-process implementation for \"solana\"; set CL_SOLANA_CMD",
            "plugins[1].name: \"Bad Name\"",
            "plugins[2].kind: \"nope\" is not a kind; use one of example, median, relayer",
            "plugins[4].name: \"y\" is used twice",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert_eq!(err.problems.len(), 7, "{text}");
    }

    #[test]
    fn rpc_bounds_come_from_the_job_and_bad_ones_are_named() {
        let job = r#"{"plugins":[{"name":"a","kind":"example",
            "rpc":{"max_message_bytes":1048576,"concurrent_calls":2,"queued_calls":0}}]}"#;
        let c = NodeConfig::from_json("job", job, &env_of(&[])).unwrap();
        assert_eq!(
            c.plugins[0].rpc,
            RpcBounds {
                max_message: 1 << 20,
                concurrent_calls: 2,
                queued_calls: 0
            }
        );
        let job = r#"{"plugins":[{"name":"a","kind":"example",
            "rpc":{"max_message_bytes":10,"concurrent_calls":0}}]}"#;
        let text = NodeConfig::from_json("job", job, &env_of(&[]))
            .unwrap_err()
            .to_string();
        for want in [
            "plugins[0].rpc.max_message_bytes: 10 is out of range; give 4096 to 2147483647",
            "plugins[0].rpc.concurrent_calls: 0 would refuse every call",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn http_limits_come_from_the_job_and_bad_ones_are_named() {
        let job = r#"{"plugins":[{"name":"a","kind":"example"}],
            "http":{"max_connections":64,"header_timeout":"2s","idle_timeout":"1m"}}"#;
        let c = NodeConfig::from_json("job", job, &env_of(&[])).unwrap();
        assert_eq!(c.http_limits.max_connections, 64);
        assert_eq!(c.http_limits.header_timeout, Duration::from_secs(2));
        assert_eq!(c.http_limits.idle_timeout, Duration::from_secs(60));
        let defaults = crate::goplugin::http::Limits::default();
        assert_eq!(c.http_limits.write_timeout, defaults.write_timeout);
        let job = r#"{"plugins":[{"name":"a","kind":"example"}],
            "http":{"max_connections":0,"write_timeout":"later"}}"#;
        let text = NodeConfig::from_json("job", job, &env_of(&[]))
            .unwrap_err()
            .to_string();
        for want in [
            "http.max_connections: 0 would refuse every client",
            "http.write_timeout: \"later\" is not a duration",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn missing_command_and_bad_dotenv_are_named() {
        let job = r#"{"plugins":[{"name":"a","kind":"example"},{"name":"b","kind":"example"},{"name":"c","kind":"example"}]}"#;
        let dir = crate::testutil::fresh_dir("config-test");
        let envfile = dir.join("b.env");
        std::fs::write(&envfile, "OK=1\nthis is wrong\n").unwrap();
        let envfile_s: &'static str =
            Box::leak(envfile.to_string_lossy().into_owned().into_boxed_str());
        let vars: &'static [(&str, &str)] = Box::leak(Box::new([
            ("PATH", "/bin"),
            ("CL_A_CMD", "loopp-no-such-plugin"),
            ("CL_C_CMD", "/bin/true --flag"),
            ("CL_B_CMD", "/bin/true"),
            ("CL_B_ENV", envfile_s),
        ]));
        let err = NodeConfig::from_json("job", job, &env_of(vars))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "CL_A_CMD=\"loopp-no-such-plugin\": no loopp-no-such-plugin in any PATH directory (/bin); install the plugin or unset CL_A_CMD to run a in-process"
            ),
            "{err}"
        );
        assert!(
            err.contains(
                "CL_C_CMD=\"/bin/true --flag\": /bin/true --flag does not exist (CL_C_CMD names one program, without arguments)"
            ),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "CL_B_ENV: {}:2: \"this is wrong\" has no '='",
                envfile.display()
            )),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_fields_and_bad_json_are_refused() {
        let err = NodeConfig::from_json(
            "job.json",
            r#"{"plugins":[],"supervison":{}}"#,
            &env_of(&[]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `supervison`"),
            "{err}"
        );
        let err = NodeConfig::from_json("job.json", "{", &env_of(&[])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("configuration: job.json: not a valid job file"),
            "{err}"
        );
    }

    #[test]
    fn feed_problems_name_the_feed_and_the_setting() {
        let job = r#"{"plugins":[{"name":"devchain","kind":"relayer"},{"name":"median","kind":"median"}],
          "feeds":[
            {"name":"a","relay":"median","median":"median","source":{"type":"static","value":1}},
            {"name":"a","relay":"devchain","median":"median","source":{"type":"static","value":1},
             "oracles":3,"f":1},
            {"name":"../x","relay":"devchain","median":"median","source":{"type":"static","value":1}}
          ]}"#;
        let err = NodeConfig::from_json("job", job, &env_of(&[])).unwrap_err();
        let text = err.to_string();
        for want in [
            "feeds[0] (a).relay: \"median\" is not a plugin of kind \"relayer\"",
            "feeds[1] (a).name: \"a\" is used twice; feed names are unique",
            "feeds[1] (a): 3 oracles cannot tolerate f=1",
            "feeds[2] (../x).name: \"../x\" must be 1-64 characters",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
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

    /// libocr's names and the older ones mean the same.
    #[test]
    fn feed_settings_take_libocr_names_and_the_old_ones() {
        let job = |settings: &str| {
            format!(
                r#"{{"plugins":[{{"name":"devchain","kind":"relayer"}},{{"name":"median","kind":"median"}}],
                  "feeds":[{{"name":"a","relay":"devchain","median":"median",
                    "source":{{"type":"static","value":1}},{settings}}}]}}"#
            )
        };
        let new =
            NodeConfig::from_json("new", &job(r#""alpha_ppb":5,"delta_c":"7s""#), &env_of(&[]))
                .unwrap();
        let old = NodeConfig::from_json(
            "old",
            &job(r#""deviation_ppb":5,"heartbeat":"7s""#),
            &env_of(&[]),
        )
        .unwrap();
        assert_eq!(new.feeds[0].offchain, old.feeds[0].offchain);
        let c = new.feeds[0].offchain;
        assert_eq!((c.alpha_report_ppb, c.alpha_accept_ppb), (5, 5));
        assert_eq!(c.delta_c, Duration::from_secs(7));
        // Each of libocr's settings on its own.
        let own = NodeConfig::from_json(
            "own",
            &job(r#""alpha_ppb":5,"alpha_accept_ppb":9,"alpha_report_infinite":true"#),
            &env_of(&[]),
        )
        .unwrap();
        let c = own.feeds[0].offchain;
        assert_eq!((c.alpha_report_ppb, c.alpha_accept_ppb), (5, 9));
        assert!(c.alpha_report_infinite && !c.alpha_accept_infinite);
        let err = NodeConfig::from_json("bad", &job(r#""delta_c":"soon""#), &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("feeds[0] (a).delta_c: \"soon\" is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn pinned_hashes_are_checked_and_name_their_setting() {
        let job = r#"{"plugins":[
            {"name":"a","kind":"example","sha256":"xyz"},
            {"name":"b","kind":"example","sha256":"00"},
            {"name":"c","kind":"example"}
        ]}"#;
        let hash = "ab".repeat(32);
        let hash: &'static str = Box::leak(hash.into_boxed_str());
        let vars: &'static [(&str, &str)] = Box::leak(Box::new([
            ("PATH", "/bin"),
            ("CL_A_CMD", "/bin/true"),
            ("CL_B_CMD", "/bin/true"),
            ("CL_B_SHA256", hash),
            ("CL_C_SHA256", hash),
        ]));
        let err = NodeConfig::from_json("job", job, &env_of(vars))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plugins[0].sha256: \"xyz\" is not a SHA-256; give 64 hex digits"),
            "{err}"
        );
        assert!(
            err.contains("CL_C_SHA256: c runs in-process, so there is no executable to pin"),
            "{err}"
        );
        assert!(
            !err.contains("plugins[1]"),
            "the environment's pin wins: {err}"
        );
    }

    #[test]
    fn durations_go_style() {
        assert_eq!(parse_duration("x", "250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("x", "1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("x", "1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("x", "-1s").is_err());
    }

    #[test]
    fn a_median_per_feed_becomes_a_plugin_per_feed_and_mistakes_are_named() {
        let feed = |name: &str| {
            format!(
                r#"{{"name":"{name}","relay":"devchain","median":"median","source":{{"type":"static","value":1}}}}"#
            )
        };
        let job = |processes: &str, feeds: &[&str]| {
            let feeds: Vec<String> = feeds.iter().map(|f| feed(f)).collect();
            format!(
                r#"{{"plugins":[{{"name":"devchain","kind":"relayer"}},
                    {{"name":"median","kind":"median","processes":"{processes}","limits":{{"open_files":128}}}}],
                    "feeds":[{}]}}"#,
                feeds.join(",")
            )
        };
        let loopp = env_of(&[("PATH", "/bin"), ("CL_MEDIAN_CMD", "true")]);
        let c = NodeConfig::from_json("job", &job("per_feed", &["eth-usd", "BTC.usd"]), &loopp)
            .unwrap();
        let names: Vec<&str> = c.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["devchain", "median-eth-usd", "median-btc_usd"]);
        assert_eq!(c.feeds[0].median, "median-eth-usd");
        assert_eq!(c.feeds[1].median, "median-btc_usd");
        for p in &c.plugins[1..] {
            assert!(
                matches!(&p.mode, Mode::Loopp { command, .. } if command == Path::new("/bin/true"))
            );
            assert_eq!(p.limits, vec![Limit::OpenFiles(128)]);
        }
        // Shared (the default) keeps one plugin for both feeds.
        let c = NodeConfig::from_json("job", &job("shared", &["a", "b"]), &loopp).unwrap();
        assert_eq!(c.plugins.len(), 2);
        assert!(c.feeds.iter().all(|f| f.median == "median"));
        // In-process there is no process to split.
        let c = NodeConfig::from_json("job", &job("per_feed", &["a", "b"]), &env_of(&[])).unwrap();
        assert_eq!(c.plugins.len(), 2);
        // Two feeds that would share a process name, a bad choice, and a
        // relayer per feed are each named.
        let err = NodeConfig::from_json("job", &job("per_feed", &["x.y", "x_y"]), &loopp)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("feed \"x_y\": its median process would be named \"median-x_y\", which another plugin has"),
            "{err}"
        );
        let err = NodeConfig::from_json("job", &job("one", &["a"]), &loopp)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plugins[1].processes: \"one\" is not a choice; use \"shared\""),
            "{err}"
        );
        let relayer =
            r#"{"plugins":[{"name":"devchain","kind":"relayer","processes":"per_feed"}]}"#;
        let err = NodeConfig::from_json("job", relayer, &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plugins[0].processes: only a plugin of kind \"median\""),
            "{err}"
        );
    }

    /// A LOOPP's open-file limit must hold the sockets of the feeds it
    /// serves; per feed, a median process of its own needs far fewer.
    #[test]
    fn a_loopps_open_file_limit_must_fit_its_feeds() {
        let job = |processes: &str, feeds: usize, open_files: u64| {
            let feeds: Vec<String> = (0..feeds)
                .map(|i| {
                    format!(
                        r#"{{"name":"f{i}","relay":"devchain","median":"median","source":{{"type":"static","value":1}}}}"#
                    )
                })
                .collect();
            format!(
                r#"{{"plugins":[{{"name":"devchain","kind":"relayer","limits":{{"open_files":{open_files}}}}},
                    {{"name":"median","kind":"median","processes":"{processes}","limits":{{"open_files":{open_files}}}}}],
                    "feeds":[{}]}}"#,
                feeds.join(",")
            )
        };
        let loopp = env_of(&[
            ("PATH", "/bin"),
            ("CL_MEDIAN_CMD", "true"),
            ("CL_DEVCHAIN_CMD", "true"),
        ]);
        // 10 feeds: the median needs 44 + 10 x 15, the relayer 44 + 10 x 6.
        let err = NodeConfig::from_json("job", &job("shared", 10, 150), &loopp)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plugin \"median\": limits.open_files 150 is too few for the 10 feed(s) it serves: a median LOOPP holds about 15 open files per feed and 44 of its own; give at least 194, or remove the limit"),
            "{err}"
        );
        assert!(!err.contains("plugin \"devchain\""), "{err}");
        assert!(NodeConfig::from_json("job", &job("shared", 10, 194), &loopp).is_ok());
        // A process per feed: each needs 59, the relayer still 104.
        assert!(NodeConfig::from_json("job", &job("per_feed", 10, 104), &loopp).is_ok());
        // In-process, there is no process to limit.
        assert!(NodeConfig::from_json("job", &job("shared", 10, 16), &env_of(&[])).is_ok());
    }
}
