//! `make bench`, feed part: what running the relayer and the median plugin as
//! LOOPPs costs a median round, against the same round in-process, in the
//! same run.
//!
//! Both modes are set up exactly as the node sets up a feed (the same trait
//! calls: `new_relayer` → `new_plugin_provider` → `new_median_factory` →
//! `new_reporting_plugin` × 4), then run rounds back to back: Query,
//! 4 Observations, Report, 4 ShouldAccept, ShouldTransmit, Transmit (a write
//! and an fsync of the chain file). Output: one JSON object per line, per
//! mode, then the LOOPP/in-process ratios. Knob: LOOPP_BENCH_ROUNDS (200).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loopp::datasource::{self, DataSource, ReportTimestamp, Spec};
use loopp::devchain::contract::{ConfigInput, Contract};
use loopp::devchain::relayer::Devchain;
use loopp::handshake::Cookie;
use loopp::host::{Client, HostConfig};
use loopp::keystore::LogErrors;
use loopp::median::deadlines::{Deadlines, MaxDurations};
use loopp::median::factory::{Median, OffchainConfig, PluginMedian, ReportingPluginConfig};
use loopp::median::factory_grpc::PluginMedianClient;
use loopp::median::math::Bounds;
use loopp::median::plugin::FeedSettings;
use loopp::median::rounds::{run_round, Outcome};
use loopp::relay::grpc::PluginRelayerClient;
use loopp::relay::{PluginArgs, PluginRelayer, RelayArgs};
use loopp::supervisor::Link;
use serde_json::json;

const DEVCHAIN: &str = env!("CARGO_BIN_EXE_loopp-devchain");
const MEDIAN: &str = env!("CARGO_BIN_EXE_loopp-median");
const T: Duration = Duration::from_secs(5);

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start(name: &str, command: &str, cookie: Cookie, dir: &Path) -> Client {
    let mut c = HostConfig::new(name, command, cookie);
    c.socket_dir = Some(dir.to_path_buf());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    c.env
        .push(("CL_PROMETHEUS_PORT".into(), port.to_string().into()));
    Client::start(&c).unwrap_or_else(|e| panic!("{name} starts: {e}"))
}

/// Rounds on `relay` + `median` over a fresh chain file in `dir`; the
/// round latencies.
fn rounds(
    relay: &dyn PluginRelayer,
    median: &dyn PluginMedian,
    dir: &Path,
    n: u64,
) -> Vec<Duration> {
    let file = dir.join("bench.jsonl");
    let bounds = Bounds {
        min: i128::MIN / 2,
        max: i128::MAX / 2,
    };
    Contract::open(&file)
        .unwrap()
        .set_config(&ConfigInput {
            signers: vec![],
            transmitters: vec![],
            f: 1,
            min_answer: bounds.min,
            max_answer: bounds.max,
        })
        .unwrap();
    let config = json!({"chainFile": file}).to_string();
    let relayer = relay.new_relayer(&config, None).unwrap();
    let args = RelayArgs {
        provider_type: "median".into(),
        ..Default::default()
    };
    let provider = relayer
        .new_plugin_provider(&args, &PluginArgs::default())
        .unwrap();
    let (_, digest) = provider.config.tracker.latest_config_details().unwrap();
    let source: Arc<dyn DataSource> = Arc::from(
        datasource::build(&Spec::Randomwalk {
            seed: 1,
            start: 300_000,
            step: 1500,
        })
        .unwrap(),
    );
    let juels: Arc<dyn DataSource> =
        Arc::from(datasource::build(&Spec::Static { value: 1 }).unwrap());
    let errors = Arc::new(LogErrors {
        source: "bench".into(),
    });
    let factory = median
        .new_median_factory(provider.clone(), "bench", source, juels, errors)
        .unwrap();
    let max = MaxDurations {
        query: T,
        observation: T,
        report: T,
        should_accept: T,
        should_transmit: T,
    };
    let settings = FeedSettings {
        deviation_ppb: 0,
        heartbeat: Duration::from_secs(3600),
    };
    let oracles: Vec<_> = (0..4u8)
        .map(|i| {
            let (p, _) = factory
                .new_reporting_plugin(&ReportingPluginConfig {
                    config_digest: digest.clone(),
                    oracle_id: i,
                    n: 4,
                    f: 1,
                    onchain_config: provider.onchain_codec.encode(bounds).unwrap(),
                    offchain_config: OffchainConfig::encode(settings),
                    estimated_round_interval: Duration::from_secs(1),
                    max,
                })
                .unwrap();
            (i, p)
        })
        .collect();
    let deadlines = Deadlines::new(max, Duration::from_millis(100)).unwrap();
    let mut samples = Vec::new();
    for epoch in 1..=n as u32 {
        let ts = ReportTimestamp {
            config_digest: digest.clone(),
            epoch,
            round: 0,
        };
        let t0 = Instant::now();
        let round = run_round(
            &oracles,
            epoch as usize,
            &ts,
            1,
            &deadlines,
            provider.transmitter.as_ref(),
            provider.report_codec.as_ref(),
        );
        samples.push(t0.elapsed());
        assert!(
            !matches!(round.outcome, Outcome::Failed(_)),
            "epoch {epoch}: {:?}",
            round.outcome
        );
    }
    samples
}

fn main() {
    let n = knob("LOOPP_BENCH_ROUNDS", 200);
    let base = std::env::temp_dir().join(format!("loopp-bench-feed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (a, b) = (base.join("in-process"), base.join("loopp"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut local = rounds(&Devchain::new(), &Median, &a, n);
    let mut relayer = start("devchain", DEVCHAIN, Cookie::relayer(), &b);
    let mut median = start("median", MEDIAN, Cookie::median(), &b);
    let link = |c: &Client| Link::connected(c.channel().clone(), c.broker().clone());
    let mut remote = rounds(
        &PluginRelayerClient::new("devchain", link(&relayer), T),
        &PluginMedianClient::new("median", link(&median), T),
        &b,
        n,
    );
    median.kill();
    relayer.kill();
    let _ = std::fs::remove_dir_all(&base);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (l, r) = (
        loopp::stats::summarize(&mut local),
        loopp::stats::summarize(&mut remote),
    );
    for (mode, s) in [("in_process", l), ("loopp", r)] {
        println!(
            "{}",
            json!({"bench": "feed_round", "mode": mode, "rounds": n,
                   "p50_ms": ms(s.p50), "p99_ms": ms(s.p99), "max_ms": ms(s.max)})
        );
    }
    println!(
        "{}",
        json!({"bench": "feed_round", "ratio_p50": r.p50.as_secs_f64() / l.p50.as_secs_f64(),
               "ratio_p99": r.p99.as_secs_f64() / l.p99.as_secs_f64(),
               "loopp_overhead_ms_p50": ms(r.p50.saturating_sub(l.p50))})
    );
}
