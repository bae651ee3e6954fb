//! The median plugin as a real LOOPP: the host serves the data sources and
//! the contract view on broker ids, the plugin makes a factory and one
//! reporting plugin per oracle, and the round driver transmits to a devchain
//! contract in the host.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use loopp::devchain::contract::{ConfigInput, Contract};
use loopp::devchain::provider::DevchainCodec;
use loopp::goplugin::handshake::Cookie;
use loopp::goplugin::host::Link;
use loopp::goplugin::host::{Client, HostConfig};
use loopp::median::libocr::OffchainConfig;
use loopp::median::plugin::FeedSettings;
use loopp::node::feeds::rounds::{run_round, Oracle, Outcome};
use loopp::services::datasource::{DataSource, ReportTimestamp};
use loopp::services::median::deadlines::{Deadlines, MaxDurations};
use loopp::services::median::factory::{
    MedianFactoryArgs, PluginMedian, ReportingPluginConfig, ReportingPluginFactory,
};
use loopp::services::median::factory_grpc::PluginMedianClient;
use loopp::services::median::Bounds;
use loopp::services::relay::{ConfigProvider, MedianProvider};
use loopp::sources::{self, Spec};

use crate::util::*;

const T: Duration = Duration::from_secs(5);

struct Slow;

impl DataSource for Slow {
    fn observe(&self, _ts: &ReportTimestamp, _d: Duration) -> Result<i128, String> {
        std::thread::sleep(Duration::from_secs(3));
        Ok(0)
    }
}

/// The devchain's median provider over `c`, in-process.
pub fn devchain_provider(c: &Arc<Contract>) -> MedianProvider {
    MedianProvider {
        config: ConfigProvider {
            digester: c.clone(),
            tracker: c.clone(),
        },
        transmitter: c.clone(),
        contract: c.clone(),
        report_codec: Arc::new(DevchainCodec),
        onchain_codec: Arc::new(DevchainCodec),
        remote: None,
    }
}

/// A running loopp-median with 4 oracles reached over gRPC.
pub struct MedianLoopp {
    pub client: Client,
    pub oracles: Vec<Oracle>,
    /// Its `CL_PROMETHEUS_PORT`.
    pub metrics_port: u16,
    // Keeps the host's servers for the plugin (provider, sources) up.
    _factory: Arc<dyn ReportingPluginFactory>,
}

impl MedianLoopp {
    /// Drops the oracles and the factory (closing what was served for
    /// them) and keeps the process.
    pub fn into_client(self) -> Client {
        self.client
    }
}

/// Starts loopp-median and sets it up through [`PluginMedianClient`] (the
/// host serves `provider` and `source` on its broker), as the node does.
pub fn median_loopp(
    sandbox: &Sandbox,
    provider: &MedianProvider,
    digest: &[u8],
    source: Arc<dyn DataSource>,
    max: &MaxDurations,
) -> MedianLoopp {
    median_plugin(sandbox, Path::new(median()), provider, digest, source, max)
}

/// As [`median_loopp`], for any median plugin `command` (a Go one too): it
/// gets the environment the node gives a LOOPP.
pub fn median_plugin(
    sandbox: &Sandbox,
    command: &Path,
    provider: &MedianProvider,
    digest: &[u8],
    source: Arc<dyn DataSource>,
    max: &MaxDurations,
) -> MedianLoopp {
    let mut c = HostConfig::new("median", command, Cookie::median());
    c.socket_dir = Some(sandbox.dir.clone());
    // TMPDIR: go-plugin 1.0.1 leaves its socket file there.
    let metrics_port = free_port();
    c.env = loopp::node::loopenv::plugin_env(
        metrics_port,
        &[("TMPDIR".into(), sandbox.dir.clone().into())],
    );
    let client = Client::start(&c).expect("the median plugin starts");
    let link = Link::connected(client.channel().clone(), client.broker().clone());
    let median = PluginMedianClient::new("median", link, T);
    let static_juels: Arc<dyn DataSource> =
        Arc::from(sources::build(&Spec::Static { value: 5 }).unwrap());
    let errors = Arc::new(loopp::services::keystore::LogErrors {
        source: "test".into(),
    });
    let factory = median
        .new_median_factory(MedianFactoryArgs {
            provider: provider.clone(),
            contract_id: "test".into(),
            data_source: source,
            juels_per_fee_coin: static_juels,
            gas_price_subunits: Arc::from(sources::build(&Spec::Static { value: 7 }).unwrap()),
            error_log: errors,
            deviation_func: None,
        })
        .expect("NewMedianFactory");
    let bounds = Bounds {
        min: -1_000_000_000,
        max: 1_000_000_000,
    };
    let settings = FeedSettings {
        deviation_ppb: 0,
        heartbeat: Duration::from_secs(3600),
    };
    let onchain_config = provider.onchain_codec.encode(bounds).unwrap();
    let oracles = (0..4u8)
        .map(|i| {
            let (plugin, info) = factory
                .new_reporting_plugin(&ReportingPluginConfig {
                    config_digest: digest.to_vec(),
                    oracle_id: i,
                    n: 4,
                    f: 1,
                    onchain_config: onchain_config.clone(),
                    offchain_config: OffchainConfig::from(settings).encode(),
                    estimated_round_interval: Duration::from_secs(1),
                    max: *max,
                })
                .expect("NewReportingPlugin");
            assert_eq!(info.name, "NumericalMedian");
            assert_eq!(info.max_observation_length, 92);
            assert!(info.max_report_length > 0);
            (i, plugin)
        })
        .collect();
    MedianLoopp {
        client,
        oracles,
        metrics_port,
        _factory: factory,
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A devchain contract in the sandbox, with a config; returns its digest.
pub fn chain(sandbox: &Sandbox) -> (Arc<Contract>, Vec<u8>) {
    let c = Arc::new(Contract::open(&sandbox.dir.join("chain.jsonl")).unwrap());
    let digest = c
        .set_config(&ConfigInput {
            signers: vec![],
            transmitters: vec![],
            f: 1,
            min_answer: -1_000_000_000,
            max_answer: 1_000_000_000,
        })
        .unwrap();
    (c, digest.to_vec())
}

pub fn max(ms: u64) -> MaxDurations {
    let d = Duration::from_millis(ms);
    MaxDurations {
        query: d,
        observation: d,
        report: d,
        should_accept: d,
        should_transmit: d,
    }
}

#[test]
fn rounds_through_a_median_loopp_transmit_the_data_sources_values() {
    let sandbox = Sandbox::new("median-loopp");
    let (contract, digest) = chain(&sandbox);
    let walk: Arc<dyn DataSource> = Arc::from(
        sources::build(&Spec::Randomwalk {
            seed: 9,
            start: 1000000,
            step_ppm: 5000,
        })
        .unwrap(),
    );
    let m = max(2000);
    let mut m_loopp = median_loopp(
        &sandbox,
        &devchain_provider(&contract),
        &digest,
        walk.clone(),
        &m,
    );
    let oracles = &m_loopp.oracles;
    let deadlines = Deadlines::new(m, Duration::from_millis(100)).unwrap();
    let mut expected = Vec::new();
    for epoch in 1..=5u32 {
        let ts = ReportTimestamp {
            config_digest: digest.clone(),
            epoch,
            round: 0,
        };
        match run_round(
            oracles,
            epoch as usize,
            &ts,
            1,
            &deadlines,
            contract.clone(),
            Arc::new(DevchainCodec),
        )
        .outcome
        {
            Outcome::Transmitted(v) => {
                // Every oracle observed the same source this round.
                assert_eq!(Ok(v), walk.observe(&ts, T), "epoch {epoch}");
                expected.push(v);
            }
            Outcome::NoReport(_) => {}
            Outcome::Failed(e) => panic!("epoch {epoch}: {e}"),
        }
    }
    let medians = on_chain(contract.transmissions(), |t| t.median);
    assert!(medians.len() >= 3, "{medians:?}");
    assert_eq!(medians, expected);
    assert!(m_loopp.client.kill().graceful);
}

#[test]
fn a_data_source_past_the_observation_deadline_fails_that_round_only() {
    let sandbox = Sandbox::new("median-slow");
    let (contract, digest) = chain(&sandbox);
    let m = max(300);
    let mut m_loopp = median_loopp(
        &sandbox,
        &devchain_provider(&contract),
        &digest,
        Arc::new(Slow),
        &m,
    );
    let oracles = &m_loopp.oracles;
    let deadlines = Deadlines::new(m, Duration::from_millis(100)).unwrap();
    let ts = ReportTimestamp {
        config_digest: digest,
        epoch: 1,
        round: 0,
    };
    let t = std::time::Instant::now();
    let round = run_round(
        oracles,
        0,
        &ts,
        1,
        &deadlines,
        contract.clone(),
        Arc::new(DevchainCodec),
    );
    let out = round.outcome;
    assert!(matches!(out, Outcome::NoReport(_)), "{out:?}");
    assert_eq!(
        round.missed,
        vec!["Observation"; 4],
        "every oracle's observation missed its deadline"
    );
    assert!(!round.reported);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "cut at the deadline, not the source's 3 s"
    );
    m_loopp.client.ping().expect("the plugin keeps running");
    assert!(contract.transmissions().unwrap().is_empty());
    m_loopp.client.kill();
}
