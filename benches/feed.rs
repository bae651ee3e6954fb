//! `make bench`, feed part: what running the relayer and the median plugin as
//! LOOPPs costs a median round, against the same round in-process, in the
//! same run.
//!
//! Both modes are set up and run by the node's own feed code
//! (`feeds::Setup::build`, which deploys the contract through the relayer, and `Setup::round`), then run rounds
//! back to back, a round of each mode in turn (so both see the same
//! machine): Query, 4 Observations, Report, 4 ShouldAccept,
//! ShouldTransmit, Transmit (a write and an fsync of the chain file), each
//! timed as the node times its rounds (`Setup::timed_round`: from its
//! start until its outcome is known). Output: one JSON object per line, per
//! mode, then the LOOPP/in-process ratios, with `met` against issue 12's
//! target (p50 at most 4x). Knob: LOOPP_BENCH_ROUNDS (500).

#[path = "../tests/common/programs.rs"]
mod programs;
use programs::{devchain, median};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use loopp::devchain::relayer::Devchain;
use loopp::goplugin::handshake::Cookie;
use loopp::goplugin::host::Link;
use loopp::goplugin::host::{Client, HostConfig};
use loopp::median::factory::Median;
use loopp::median::plugin::FeedSettings;
use loopp::node::feeds::rounds::Outcome;
use loopp::node::feeds::{FeedConfig, Inputs, Setup};
use loopp::node::keystore::DevKeystore;
use loopp::services::median::deadlines::{Deadlines, MaxDurations};
use loopp::services::median::factory::PluginMedian;
use loopp::services::median::factory_grpc::PluginMedianClient;
use loopp::services::median::Bounds;
use loopp::services::relay::grpc::PluginRelayerClient;
use loopp::services::relay::PluginRelayer;
use loopp::sources::{self, Spec};
use serde_json::json;

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

/// A feed on `relay` + `median` over a fresh chain file in `dir`, set up
/// by the node's own feed code.
fn feed(relay: &dyn PluginRelayer, median: &dyn PluginMedian, dir: &Path) -> (Setup, FeedConfig) {
    let source = Spec::Randomwalk {
        seed: 1,
        start: 300_000,
        step_ppm: 2000,
    };
    let juels = Spec::Static { value: 1 };
    let max = MaxDurations {
        query: T,
        observation: T,
        report: T,
        should_accept: T,
        should_transmit: T,
    };
    let cfg = FeedConfig {
        name: "bench".into(),
        relay: "devchain".into(),
        median: "median".into(),
        source: source.clone(),
        juels: juels.clone(),
        gas_price: Spec::Static { value: 0 },
        deviation_func: None,
        oracles: 4,
        f: 1,
        interval: Duration::from_secs(1),
        offchain: FeedSettings {
            deviation_ppb: 0,
            heartbeat: Duration::from_secs(3600),
        }
        .into(),
        bounds: Bounds {
            min: i128::MIN / 2,
            max: i128::MAX / 2,
        },
        deadlines: Deadlines::new(max, Duration::from_millis(100)).unwrap(),
    };
    let file = dir.join("bench.jsonl");
    let keystore = Arc::new(DevKeystore::new(b"bench", vec!["transmitter-0".into()]));
    let inputs = Inputs {
        keystore: keystore.clone(),
        csa_keystore: keystore,
        source: Arc::from(sources::build(&source).unwrap()),
        juels: Arc::from(sources::build(&juels).unwrap()),
        gas_price: Arc::from(sources::build(&cfg.gas_price).unwrap()),
    };
    let setup = Setup::build(&cfg, relay, median, &file, &inputs).unwrap();
    (setup, cfg)
}

/// One round of `feed`, timed as the node times a round: until its
/// outcome is known, not until this thread wakes up to it.
fn round((setup, cfg): &(Setup, FeedConfig), epoch: u32) -> Duration {
    let (round, took) = setup.timed_round(cfg, epoch);
    assert!(
        !matches!(round.outcome, Outcome::Failed(_)),
        "epoch {epoch}: {:?}",
        round.outcome
    );
    took
}

fn main() {
    let n = knob("LOOPP_BENCH_ROUNDS", 500);
    let base = std::env::temp_dir().join(format!("loopp-bench-feed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (a, b) = (base.join("in-process"), base.join("loopp"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let in_process = feed(&Devchain::new(), &Median, &a);
    let mut relayer = start("devchain", devchain(), Cookie::relayer(), &b);
    let mut median = start("median", median(), Cookie::median(), &b);
    // As the node links a plugin: its own services framed when it frames
    // them, so no process here runs gRPC.
    let link = |c: &Client| Link::connected(c.conn().clone(), c.broker().clone());
    let relay = PluginRelayerClient::new("devchain", link(&relayer), T);
    let plugin = PluginMedianClient::new("median", link(&median), T);
    let loopp = feed(&relay, &plugin, &b);
    // Interleaved, a round of each in turn: what the machine does
    // meanwhile weighs on both alike.
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for epoch in 1..=n as u32 {
        local.push(round(&in_process, epoch));
        remote.push(round(&loopp, epoch));
    }
    drop((in_process, loopp, relay, plugin));
    median.kill();
    relayer.kill();
    let _ = std::fs::remove_dir_all(&base);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (l, r) = (
        loopp::stats::summarize(&mut local),
        loopp::stats::summarize(&mut remote),
    );
    // Issue 12: a LOOPP round at most 4x an in-process round (p50).
    const TARGET: f64 = 4.0;
    let ratio = r.p50.as_secs_f64() / l.p50.as_secs_f64();
    for (mode, s) in [("in_process", l), ("loopp", r)] {
        println!(
            "{}",
            json!({"bench": "feed_round", "mode": mode, "rounds": n,
                   "p50_ms": ms(s.p50), "p99_ms": ms(s.p99), "max_ms": ms(s.max)})
        );
    }
    println!(
        "{}",
        json!({"bench": "feed_round", "ratio_p50": ratio,
               "ratio_p99": r.p99.as_secs_f64() / l.p99.as_secs_f64(),
               "loopp_overhead_ms_p50": ms(r.p50.saturating_sub(l.p50)),
               "target_ratio_p50": TARGET, "met": ratio <= TARGET})
    );
}
