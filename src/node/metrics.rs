//! The node's metrics, in the process-wide registry of
//! [`crate::goplugin::metrics`] (which also renders them): per plugin
//! (`loopp_plugin_*`), per proxied scrape (`loopp_proxy_*`) and per feed
//! (`loopp_feed_*`).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

use crate::goplugin::metrics::{register, RPC_BUCKETS};

struct Node {
    up: prometheus::IntGaugeVec,
    state: prometheus::IntGaugeVec,
    restarts: prometheus::IntGaugeVec,
    healthy: prometheus::IntGaugeVec,
    uptime: prometheus::GaugeVec,
    scrapes: IntCounterVec,
    scrape_failures: IntCounterVec,
    scrape_seconds: HistogramVec,
}

static NODE: LazyLock<Node> = LazyLock::new(|| {
    let gauge = |name: &str, help: &str, labels: &[&str]| {
        register(prometheus::IntGaugeVec::new(Opts::new(name, help), labels).unwrap())
    };
    Node {
        up: gauge(
            "loopp_plugin_up",
            "1 when the plugin is running.",
            &["plugin", "kind", "mode"],
        ),
        state: gauge(
            "loopp_plugin_state",
            "1 for the plugin's current state.",
            &["plugin", "state"],
        ),
        restarts: gauge(
            "loopp_plugin_restarts",
            "Restarts since the node started.",
            &["plugin"],
        ),
        healthy: gauge(
            "loopp_plugin_healthy",
            "1 when running and its last health check passed.",
            &["plugin"],
        ),
        uptime: register(
            prometheus::GaugeVec::new(
                Opts::new(
                    "loopp_plugin_uptime_seconds",
                    "Time since the plugin's current process became ready.",
                ),
                &["plugin"],
            )
            .unwrap(),
        ),
        scrapes: register(
            IntCounterVec::new(
                Opts::new("loopp_proxy_scrapes_total", "Scrapes proxied to plugins."),
                &["plugin"],
            )
            .unwrap(),
        ),
        scrape_failures: register(
            IntCounterVec::new(
                Opts::new(
                    "loopp_proxy_failures_total",
                    "Proxied scrapes that failed, by reason.",
                ),
                &["plugin", "reason"],
            )
            .unwrap(),
        ),
        scrape_seconds: register(
            HistogramVec::new(
                HistogramOpts::new("loopp_proxy_duration_seconds", "Time to proxy one scrape.")
                    .buckets(RPC_BUCKETS.to_vec()),
                &["plugin"],
            )
            .unwrap(),
        ),
    }
});

/// Sets the node's per-plugin gauges from the registry.
pub fn record_plugins(statuses: &[crate::node::registry::PluginStatus]) {
    use crate::node::registry::State;
    let n = &*NODE;
    for s in statuses {
        let mode = if s.out_of_process {
            "loopp"
        } else {
            "in-process"
        };
        n.up.with_label_values(&[&s.name, &s.kind, mode])
            .set(i64::from(s.state == State::Running));
        for st in [
            State::Starting,
            State::Running,
            State::Backoff,
            State::Stopped,
        ] {
            n.state
                .with_label_values(&[&s.name, st.as_str()])
                .set(i64::from(s.state == st));
        }
        n.restarts
            .with_label_values(&[&s.name])
            .set(s.restarts as i64);
        n.healthy
            .with_label_values(&[&s.name])
            .set(i64::from(s.healthy()));
        n.uptime
            .with_label_values(&[&s.name])
            .set(s.uptime().map(|d| d.as_secs_f64()).unwrap_or(0.0));
    }
}

struct Feeds {
    seconds: prometheus::Histogram,
    late: prometheus::Histogram,
    rounds: IntCounterVec,
    reports: IntCounterVec,
    transmissions: IntCounterVec,
    misses: IntCounterVec,
    queued: prometheus::IntGauge,
    threads: prometheus::IntGauge,
}

/// Round time buckets, in seconds (1 ms .. 10 s): the RPC buckets' steps,
/// with 50 ms steps from 100 to 300 ms, where a busy node's rounds end
/// (and where a 250 ms round target is judged).
pub const ROUND_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Start delay buckets, in seconds (0.5 ms .. 10 s): a round starts at
/// once, up to the job's `round_slack` late, or later when it waited for a
/// round thread.
pub const START_DELAY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static FEEDS: LazyLock<Feeds> = LazyLock::new(|| {
    let counter = |name: &str, help: &str, labels: &[&str]| {
        register(IntCounterVec::new(Opts::new(name, help), labels).unwrap())
    };
    Feeds {
        seconds: register(
            prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "loopp_feed_round_duration_seconds",
                    "Time of a feed round, Query to Transmit, all feeds.",
                )
                .buckets(ROUND_BUCKETS.to_vec()),
            )
            .unwrap(),
        ),
        late: register(
            prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "loopp_feed_round_start_delay_seconds",
                    "How late feed rounds started after they were due (the job's round_slack, waiting for a round thread), all feeds.",
                )
                .buckets(START_DELAY_BUCKETS.to_vec()),
            )
            .unwrap(),
        ),
        rounds: counter(
            "loopp_feed_rounds_total",
            "Feed rounds by outcome: transmitted, no_report, deadline_exceeded, failed, not_ready.",
            &["feed", "outcome"],
        ),
        reports: counter(
            "loopp_feed_reports_total",
            "Reports the feed's leader made (transmitted or not).",
            &["feed"],
        ),
        transmissions: counter(
            "loopp_feed_transmissions_total",
            "Reports the relayer accepted for the chain.",
            &["feed"],
        ),
        misses: counter(
            "loopp_feed_deadline_misses_total",
            "Reporting-plugin and transmit calls that missed their deadline, by call (Observation: per oracle).",
            &["feed", "call"],
        ),
        queued: register(
            prometheus::IntGauge::new(
                "loopp_feed_rounds_queued",
                "Feed rounds that are due and wait for a round thread (all round threads busy).",
            )
            .unwrap(),
        ),
        threads: register(
            prometheus::IntGauge::new(
                "loopp_feed_round_threads",
                "Threads that run feed rounds: started as rounds need them, up to the job's feed_threads.",
            )
            .unwrap(),
        ),
    }
});

/// Counts rounds waiting for a round thread up (1) or down (-1).
pub fn feed_rounds_queued(delta: i64) {
    FEEDS.queued.add(delta);
}

/// Records that a feed round started `late` after it was due.
pub fn feed_round_started(late: Duration) {
    FEEDS.late.observe(late.as_secs_f64());
}

/// Records how many threads run feed rounds.
pub fn feed_threads(n: usize) {
    FEEDS.threads.set(n as i64);
}

/// Records one feed round, which took `took`.
pub fn feed_round(feed: &str, round: &crate::node::feeds::rounds::Round, took: Duration) {
    use crate::node::feeds::rounds::Outcome;
    let f = &*FEEDS;
    f.seconds.observe(took.as_secs_f64());
    let outcome = match &round.outcome {
        Outcome::Transmitted(_) => {
            f.transmissions.with_label_values(&[feed]).inc();
            "transmitted"
        }
        Outcome::NoReport(_) => "no_report",
        Outcome::Failed(e) if e.contains("DEADLINE_EXCEEDED") => "deadline_exceeded",
        Outcome::Failed(_) => "failed",
    };
    f.rounds.with_label_values(&[feed, outcome]).inc();
    if round.reported {
        f.reports.with_label_values(&[feed]).inc();
    }
    for call in &round.missed {
        f.misses.with_label_values(&[feed, call]).inc();
    }
}

/// Records a round skipped because the feed's plugins are not set up.
pub fn feed_not_ready(feed: &str) {
    FEEDS.rounds.with_label_values(&[feed, "not_ready"]).inc();
}

/// Records one proxied scrape; `failure` is None on success, else a reason
/// such as `timeout`, `unreachable`, `restarting`.
pub fn proxy_observe(plugin: &str, failure: Option<&str>, took: Duration) {
    let n = &*NODE;
    n.scrapes.with_label_values(&[plugin]).inc();
    n.scrape_seconds
        .with_label_values(&[plugin])
        .observe(took.as_secs_f64());
    if let Some(reason) = failure {
        n.scrape_failures.with_label_values(&[plugin, reason]).inc();
    }
}
