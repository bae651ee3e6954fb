//! The environment every LOOPP gets from the node: what a Go Chainlink node
//! gives its plugins, so Go LOOP plugins (chainlink-common's
//! `loop.EnvConfig`, which fails at start when a required variable is
//! missing or empty) run under loopp as they do under Go.
//!
//! Order, later wins: the node's own environment (inherited), then
//! [`GO_NODE_DEFAULTS`] (a Go node sets every variable itself), then the
//! plugin's `CL_<NAME>_ENV` file, then `CL_PROMETHEUS_PORT`, which the node
//! allocates and nothing overrides.

use std::ffi::OsString;

/// The variable holding the port a plugin serves `/metrics` on.
pub const METRICS_PORT_VAR: &str = "CL_PROMETHEUS_PORT";

/// What a Go node with a default configuration sends besides the metrics
/// port (values as Go's `AsCmdEnv` writes them: durations as Go prints
/// them, booleans `true`/`false`). Tracing, telemetry, profiling and
/// metering are off; the mercury values are the Go node's defaults (the two
/// uint32 ones are required by `loop.EnvConfig`).
pub const GO_NODE_DEFAULTS: &[(&str, &str)] = &[
    ("CL_APP_ID", "loopp"),
    ("CL_FEATURE_LOG_POLLER", "false"),
    ("CL_GRPC_SERVER_MAX_RECV_MSG_SIZE", "0"),
    ("CL_MERCURY_CACHE_LATEST_REPORT_DEADLINE", "5s"),
    ("CL_MERCURY_CACHE_LATEST_REPORT_TTL", "1s"),
    ("CL_MERCURY_CACHE_MAX_STALE_AGE", "1h0m0s"),
    ("CL_MERCURY_TRANSMITTER_PROTOCOL", "wsrpc"),
    ("CL_MERCURY_TRANSMITTER_TRANSMIT__QUEUE_MAX_SIZE", "100000"),
    ("CL_MERCURY_TRANSMITTER_TRANSMIT_TIMEOUT", "5s"),
    ("CL_MERCURY_TRANSMITTER_TRANSMIT_CONCURRENCY", "100"),
    ("CL_MERCURY_TRANSMITTER_REAPER_FREQUENCY", "1h0m0s"),
    ("CL_MERCURY_TRANSMITTER_REAPER_MAX_AGE", "48h0m0s"),
    ("CL_MERCURY_VERBOSE_LOGGING", "false"),
    ("CL_PYROSCOPE_AUTH_TOKEN", ""),
    ("CL_PYROSCOPE_SERVER_ADDRESS", ""),
    ("CL_PYROSCOPE_ENVIRONMENT", ""),
    ("CL_PYROSCOPE_LINK_TRACES_TO_PROFILES", "false"),
    ("CL_PYROSCOPE_PPROF_BLOCK_PROFILE_RATE", "0"),
    ("CL_PYROSCOPE_PPROF_MUTEX_PROFILE_FRACTION", "0"),
    ("CL_TRACING_ENABLED", "false"),
    ("CL_TRACING_COLLECTOR_TARGET", ""),
    ("CL_TRACING_SAMPLING_RATIO", "0"),
    ("CL_TRACING_TLS_CERT_PATH", ""),
    ("CL_TELEMETRY_ENABLED", "false"),
    ("CL_METER_RECORDS_ENABLED", "false"),
    ("CL_METER_SNAPSHOTS_ENABLED", "false"),
];

/// The variables the node sets for a LOOPP serving `/metrics` on
/// `metrics_port`, with `extra` (its `CL_<NAME>_ENV` file) over the
/// defaults.
pub fn plugin_env(metrics_port: u16, extra: &[(OsString, OsString)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = GO_NODE_DEFAULTS
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    env.extend(extra.iter().filter(|(k, _)| k != METRICS_PORT_VAR).cloned());
    env.push((METRICS_PORT_VAR.into(), metrics_port.to_string().into()));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value a process started with `env` sees for `key` (last wins).
    fn seen<'a>(env: &'a [(OsString, OsString)], key: &str) -> Option<&'a str> {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.to_str())
    }

    /// What `loop.EnvConfig` requires parses as it parses it: the two
    /// mercury uint32s and the port as numbers, durations Go-style.
    #[test]
    fn the_go_loop_environment_is_complete_and_parseable() {
        let env = plugin_env(9123, &[]);
        for key in [
            "CL_MERCURY_TRANSMITTER_TRANSMIT__QUEUE_MAX_SIZE",
            "CL_MERCURY_TRANSMITTER_TRANSMIT_CONCURRENCY",
        ] {
            let v = seen(&env, key).unwrap_or_else(|| panic!("{key} missing"));
            assert!(v.parse::<u32>().is_ok_and(|n| n > 0), "{key}={v:?}");
        }
        assert_eq!(seen(&env, METRICS_PORT_VAR), Some("9123"));
        for (k, v) in GO_NODE_DEFAULTS {
            if k.ends_with("_TIMEOUT") || k.ends_with("_AGE") || k.ends_with("_TTL") {
                let d = crate::node::config::parse_duration(k, v);
                assert!(d.is_ok(), "{k}={v:?}: {d:?}");
            }
            if k.ends_with("_ENABLED") || k.ends_with("_LOGGING") || k.ends_with("_POLLER") {
                assert!(matches!(*v, "true" | "false"), "{k}={v:?}");
            }
        }
        assert_eq!(seen(&env, "CL_TRACING_ENABLED"), Some("false"));
    }

    #[test]
    fn the_plugins_env_file_overrides_defaults_but_not_its_metrics_port() {
        let extra = [
            ("CL_TRACING_ENABLED".into(), "true".into()),
            ("CL_PROMETHEUS_PORT".into(), "1".into()),
            ("MY_VAR".into(), "x".into()),
        ];
        let env = plugin_env(9123, &extra);
        assert_eq!(seen(&env, "CL_TRACING_ENABLED"), Some("true"));
        assert_eq!(seen(&env, "MY_VAR"), Some("x"));
        assert_eq!(seen(&env, METRICS_PORT_VAR), Some("9123"));
    }
}
