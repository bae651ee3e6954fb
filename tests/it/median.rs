//! The median plugin as a real LOOPP: the host serves the data sources and
//! the contract view on broker ids, the plugin makes a factory and one
//! reporting plugin per oracle, and the round driver transmits to a devchain
//! contract in the host.

use std::sync::Arc;
use std::time::Duration;

use loopp::datasource::{self, DataSource, ReportTimestamp, Spec};
use loopp::devchain::contract::{ConfigInput, Contract};
use loopp::handshake::Cookie;
use loopp::host::{Client, HostConfig};
use loopp::median::deadlines::{Deadlines, MaxDurations};
use loopp::median::factory;
use loopp::median::math::Bounds;
use loopp::median::plugin::{FeedSettings, ReportingPlugin};
use loopp::median::reporting::ReportingPluginClient;
use loopp::median::rounds::{run_round, Oracle, Outcome};
use loopp::proto::median_plugin::{NewMedianFactoryRequest, NewReportingPluginRequest};
use loopp::proto::median_plugin_grpc::{PluginMedianClient, ReportingPluginFactoryClient};

use crate::util::*;

const MEDIAN: &str = env!("CARGO_BIN_EXE_loopp-median");
const T: Duration = Duration::from_secs(5);

struct Slow;

impl DataSource for Slow {
    fn observe(&self, _ts: &ReportTimestamp, _d: Duration) -> Result<i128, String> {
        std::thread::sleep(Duration::from_secs(3));
        Ok(0)
    }
}

/// Starts loopp-median, serves `source` and the contract view on the host
/// broker, and returns the client and 4 oracles reached over gRPC.
pub fn median_loopp(
    sandbox: &Sandbox,
    contract: &Arc<dyn loopp::median::plugin::MedianContract>,
    digest: &[u8],
    source: Arc<dyn DataSource>,
    max: &MaxDurations,
) -> (Client, Vec<Oracle>) {
    let mut c = HostConfig::new("median", MEDIAN, Cookie::median());
    c.socket_dir = Some(sandbox.dir.clone());
    c.env
        .push(("CL_PROMETHEUS_PORT".into(), free_port().to_string().into()));
    let client = Client::start(&c).expect("loopp-median starts");
    let broker = client.broker().clone();
    let (provider, ds, juels) = (broker.next_id(), broker.next_id(), broker.next_id());
    broker
        .serve(
            provider,
            vec![
                loopp::median::contract::server(contract.clone()),
                loopp::devchain::provider::report_codec_server(Arc::new(
                    loopp::devchain::provider::DevchainCodec,
                )),
                loopp::devchain::provider::onchain_codec_server(Arc::new(
                    loopp::devchain::provider::DevchainCodec,
                )),
            ],
        )
        .unwrap();
    broker.serve(ds, vec![datasource::server(source)]).unwrap();
    let static_juels: Arc<dyn DataSource> =
        Arc::from(datasource::build(&Spec::Static { value: 5 }).unwrap());
    broker
        .serve(juels, vec![datasource::server(static_juels)])
        .unwrap();
    let reply = PluginMedianClient::new(client.channel().clone())
        .new_median_factory(
            &NewMedianFactoryRequest {
                medianProviderID: provider,
                dataSourceID: ds,
                juelsPerFeeCoinDataSourceID: juels,
                ..Default::default()
            },
            T,
        )
        .expect("NewMedianFactory");
    let factory =
        ReportingPluginFactoryClient::new(broker.dial(reply.reportingPluginFactoryID, T).unwrap());
    let bounds = Bounds {
        min: -1_000_000_000,
        max: 1_000_000_000,
    };
    let settings = FeedSettings {
        deviation_ppb: 0,
        heartbeat: Duration::from_secs(3600),
    };
    let oracles = (0..4u8)
        .map(|i| {
            let cfg = factory::config(digest, i, 4, 1, bounds, settings, max);
            let r = factory
                .new_reporting_plugin(
                    &NewReportingPluginRequest {
                        reportingPluginConfig: Some(cfg).into(),
                        ..Default::default()
                    },
                    T,
                )
                .expect("NewReportingPlugin");
            assert_eq!(r.reportingPluginInfo.name, "median");
            let ch = broker.dial(r.reportingPluginID, T).unwrap();
            (
                i,
                Arc::new(ReportingPluginClient::new("median", ch)) as Arc<dyn ReportingPlugin>,
            )
        })
        .collect();
    (client, oracles)
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
        datasource::build(&Spec::Randomwalk {
            seed: 9,
            start: 1000,
            step: 100,
        })
        .unwrap(),
    );
    let m = max(2000);
    let view: Arc<dyn loopp::median::plugin::MedianContract> = contract.clone();
    let (mut client, oracles) = median_loopp(&sandbox, &view, &digest, walk.clone(), &m);
    let deadlines = Deadlines::new(m, Duration::from_millis(100)).unwrap();
    let mut expected = Vec::new();
    for epoch in 1..=5u32 {
        let ts = ReportTimestamp {
            config_digest: digest.clone(),
            epoch,
            round: 0,
        };
        match run_round(
            &oracles,
            epoch as usize,
            &ts,
            1,
            &deadlines,
            contract.as_ref(),
        ) {
            Outcome::Transmitted(v) => {
                // Every oracle observed the same source this round.
                assert_eq!(Ok(v), walk.observe(&ts, T), "epoch {epoch}");
                expected.push(v);
            }
            Outcome::NoReport(_) => {}
            Outcome::Failed(e) => panic!("epoch {epoch}: {e}"),
        }
    }
    let on_chain: Vec<i128> = contract.transmissions().iter().map(|t| t.median).collect();
    assert!(on_chain.len() >= 3, "{on_chain:?}");
    assert_eq!(on_chain, expected);
    assert!(client.kill().graceful);
}

#[test]
fn a_data_source_past_the_observation_deadline_fails_that_round_only() {
    let sandbox = Sandbox::new("median-slow");
    let (contract, digest) = chain(&sandbox);
    let m = max(300);
    let view: Arc<dyn loopp::median::plugin::MedianContract> = contract.clone();
    let (mut client, oracles) = median_loopp(&sandbox, &view, &digest, Arc::new(Slow), &m);
    let deadlines = Deadlines::new(m, Duration::from_millis(100)).unwrap();
    let ts = ReportTimestamp {
        config_digest: digest,
        epoch: 1,
        round: 0,
    };
    let t = std::time::Instant::now();
    let out = run_round(&oracles, 0, &ts, 1, &deadlines, contract.as_ref());
    assert!(matches!(out, Outcome::NoReport(_)), "{out:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "cut at the deadline, not the source's 3 s"
    );
    client.ping().expect("the plugin keeps running");
    assert!(contract.transmissions().is_empty());
    client.kill();
}
