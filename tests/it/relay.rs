//! Both plugins as LOOPPs: the devchain relayer serves the median provider,
//! the host (standing in for the node) proxies the provider's contract view
//! to the median plugin and transmits through the relayer.

use std::sync::Arc;
use std::time::Duration;

use loopp::datasource::{self, DataSource, ReportTimestamp, Spec};
use loopp::devchain::relayer::ContractTransmitterClient;
use loopp::devchain::store::Chain;
use loopp::handshake::Cookie;
use loopp::host::{Client, HostConfig};
use loopp::median::contract::MedianContractClient;
use loopp::median::deadlines::Deadlines;
use loopp::median::plugin::MedianContract;
use loopp::median::rounds::{run_round, Outcome};
use loopp::proto::relayer::{
    GetChainStatusRequest, NewPluginProviderRequest, NewRelayerRequest, RelayArgs,
};
use loopp::proto::relayer_grpc::{PluginRelayerClient, RelayerClient};

use crate::median::{chain, free_port, max, median_loopp};
use crate::util::*;

const DEVCHAIN: &str = env!("CARGO_BIN_EXE_loopp-devchain");
const T: Duration = Duration::from_secs(5);

/// Starts loopp-devchain on `chain_file` and returns it with the channel of
/// its median provider and the relayer client.
fn devchain(
    sandbox: &Sandbox,
    chain_file: &std::path::Path,
) -> (Client, grpcio::Channel, RelayerClient) {
    let mut c = HostConfig::new("devchain", DEVCHAIN, Cookie::relayer());
    c.socket_dir = Some(sandbox.dir.clone());
    c.env
        .push(("CL_PROMETHEUS_PORT".into(), free_port().to_string().into()));
    let client = Client::start(&c).expect("loopp-devchain starts");
    let config = serde_json::json!({"chainFile": chain_file}).to_string();
    let r = PluginRelayerClient::new(client.channel().clone())
        .new_relayer(
            &NewRelayerRequest {
                config,
                ..Default::default()
            },
            T,
        )
        .expect("NewRelayer");
    let relayer = RelayerClient::new(client.broker().dial(r.relayerID, T).unwrap());
    let p = relayer
        .new_plugin_provider(
            &NewPluginProviderRequest {
                relayArgs: Some(RelayArgs {
                    providerType: "median".into(),
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            },
            T,
        )
        .expect("NewPluginProvider");
    let provider = client.broker().dial(p.pluginProviderID, T).unwrap();
    (client, provider, relayer)
}

/// A chain file with a config, closed again so the relayer can own it.
fn configured_chain(sandbox: &Sandbox) -> (std::path::PathBuf, Vec<u8>) {
    let (contract, digest) = chain(sandbox);
    drop(contract);
    (sandbox.dir.join("chain.jsonl"), digest)
}

#[test]
fn median_and_devchain_loopps_transmit_to_the_chain_file() {
    let sandbox = Sandbox::new("relay-e2e");
    let (path, digest) = configured_chain(&sandbox);
    let (mut relayer, provider, relayer_client) = devchain(&sandbox, &path);
    // The host proxies the relayer's contract view to the median plugin.
    let view: Arc<dyn MedianContract> =
        Arc::new(MedianContractClient::new("devchain", provider.clone(), T));
    let walk: Arc<dyn DataSource> = Arc::from(
        datasource::build(&Spec::Randomwalk {
            seed: 3,
            start: 500,
            step: 40,
        })
        .unwrap(),
    );
    let m = max(2000);
    let (mut median, oracles) = median_loopp(&sandbox, &view, &digest, walk.clone(), &m);
    let transmitter = ContractTransmitterClient::new("devchain", provider, T);
    let deadlines = Deadlines::new(m, Duration::from_millis(100)).unwrap();
    let mut transmitted = Vec::new();
    for epoch in 1..=5u32 {
        let ts = ReportTimestamp {
            config_digest: digest.clone(),
            epoch,
            round: 0,
        };
        match run_round(&oracles, epoch as usize, &ts, 1, &deadlines, &transmitter) {
            Outcome::Transmitted(v) => {
                assert_eq!(Ok(v), walk.observe(&ts, T));
                transmitted.push(v);
            }
            Outcome::NoReport(_) => {}
            Outcome::Failed(e) => panic!("epoch {epoch}: {e}"),
        }
    }
    assert!(transmitted.len() >= 3, "{transmitted:?}");
    let status = relayer_client
        .get_chain_status(&GetChainStatusRequest::new(), T)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&status.chain.config).unwrap();
    assert_eq!(v["transmissions"], transmitted.len());
    assert!(median.kill().graceful);
    assert!(relayer.kill().graceful);
    let chain = Chain::open(&path).unwrap();
    let on_file: Vec<i128> = chain.transmissions().iter().map(|t| t.median).collect();
    assert_eq!(
        on_file, transmitted,
        "the chain file holds every transmission, once"
    );
}

#[test]
fn killing_the_relayer_mid_run_leaves_a_valid_file_with_every_acknowledged_transmission() {
    let sandbox = Sandbox::new("relay-kill");
    let (path, digest) = configured_chain(&sandbox);
    let (relayer, provider, _) = devchain(&sandbox, &path);
    let view: Arc<dyn MedianContract> =
        Arc::new(MedianContractClient::new("devchain", provider.clone(), T));
    let walk: Arc<dyn DataSource> = Arc::from(
        datasource::build(&Spec::Randomwalk {
            seed: 11,
            start: 0,
            step: 1000,
        })
        .unwrap(),
    );
    let m = max(1000);
    let (mut median, oracles) = median_loopp(&sandbox, &view, &digest, walk, &m);
    let transmitter = ContractTransmitterClient::new("devchain", provider, T);
    let deadlines = Deadlines::new(m, Duration::from_millis(100)).unwrap();
    let pid = relayer.pid();
    let mut acknowledged = Vec::new();
    let mut failed_after_kill = false;
    for epoch in 1..=40u32 {
        if epoch == 8 {
            // SAFETY: killing the relayer process we started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let ts = ReportTimestamp {
            config_digest: digest.clone(),
            epoch,
            round: 0,
        };
        match run_round(&oracles, epoch as usize, &ts, 1, &deadlines, &transmitter) {
            Outcome::Transmitted(v) => acknowledged.push(v),
            Outcome::Failed(_) if epoch >= 8 => failed_after_kill = true,
            Outcome::NoReport(_) => {}
            Outcome::Failed(e) => panic!("epoch {epoch}: {e}"),
        }
        if failed_after_kill {
            break;
        }
    }
    assert!(failed_after_kill, "rounds fail once the relayer is gone");
    assert!(!acknowledged.is_empty());
    let chain = Chain::open(&path).expect("the chain file is valid after the kill");
    let on_file: Vec<i128> = chain.transmissions().iter().map(|t| t.median).collect();
    assert_eq!(
        on_file, acknowledged,
        "no acknowledged transmission lost, none duplicated"
    );
    median.kill();
    drop(relayer);
}
