//! The devchain relayer as a LOOPP, reached through the same traits the node
//! uses ([`PluginRelayerClient`]); the host re-serves the relayer's provider
//! to a median LOOPP (the proxy) and transmits through the relayer.

use std::sync::Arc;
use std::time::Duration;

use loopp::devchain::codec;
use loopp::devchain::relayer::Devchain;
use loopp::devchain::store::Chain;
use loopp::goplugin::handshake::Cookie;
use loopp::goplugin::host::Link;
use loopp::goplugin::host::{Client, HostConfig};
use loopp::node::feeds::rounds::{run_round, Outcome};
use loopp::node::keystore::DevKeystore;
use loopp::services::datasource::{DataSource, ReportTimestamp};
use loopp::services::keystore::Keystore;
use loopp::services::median::deadlines::Deadlines;
use loopp::services::relay::grpc::PluginRelayerClient;
use loopp::services::relay::provider::ParsedObservation;
use loopp::services::relay::{
    MedianProvider, PluginArgs, PluginRelayer, RelayArgs, Relayer, Transaction,
};
use loopp::sources::{self, Spec};

use crate::median::{chain, free_port, max, median_loopp};
use crate::util::*;

const T: Duration = Duration::from_secs(5);

fn median_args() -> RelayArgs {
    RelayArgs {
        contract_id: "test".into(),
        provider_type: "median".into(),
        ..Default::default()
    }
}

/// A running loopp-devchain and the host's view of it.
struct DevchainLoopp {
    client: Client,
    plugin: PluginRelayerClient,
    metrics_port: u16,
}

fn devchain_loopp(sandbox: &Sandbox) -> DevchainLoopp {
    let mut c = HostConfig::new("devchain", devchain(), Cookie::relayer());
    c.socket_dir = Some(sandbox.dir.clone());
    let metrics_port = free_port();
    c.env
        .push(("CL_PROMETHEUS_PORT".into(), metrics_port.to_string().into()));
    let client = Client::start(&c).expect("loopp-devchain starts");
    let link = Link::connected(client.channel().clone(), client.broker().clone());
    DevchainLoopp {
        plugin: PluginRelayerClient::new("devchain", link, T),
        client,
        metrics_port,
    }
}

/// The relayer on `chain_file` and its median provider.
fn relay(
    plugin: &dyn PluginRelayer,
    chain_file: &std::path::Path,
    keystore: Option<Arc<dyn Keystore>>,
) -> (Arc<dyn Relayer>, MedianProvider) {
    let config = serde_json::json!({"chainFile": chain_file}).to_string();
    let relayer = plugin
        .new_relayer(&config, keystore, None)
        .expect("NewRelayer");
    let provider = relayer
        .new_plugin_provider(&median_args(), &PluginArgs::default())
        .expect("NewPluginProvider");
    (relayer, provider)
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
    let mut devchain = devchain_loopp(&sandbox);
    let (relayer, provider) = relay(&devchain.plugin, &path, None);
    let walk: Arc<dyn DataSource> = Arc::from(
        sources::build(&Spec::Randomwalk {
            seed: 3,
            start: 500000,
            step_ppm: 5000,
        })
        .unwrap(),
    );
    let m = max(2000);
    // The host serves the relayer's provider (client adapters) to the
    // median plugin: a proxy, the plugins never meet.
    let mut median = median_loopp(&sandbox, &provider, &digest, walk.clone(), &m);
    let deadlines = Deadlines::new(m, Duration::from_millis(100)).unwrap();
    let mut transmitted = Vec::new();
    for epoch in 1..=5u32 {
        let ts = ReportTimestamp {
            config_digest: digest.clone(),
            epoch,
            round: 0,
        };
        let out = run_round(
            &median.oracles,
            epoch as usize,
            &ts,
            1,
            &deadlines,
            provider.transmitter.clone(),
            provider.report_codec.clone(),
        )
        .outcome;
        match out {
            Outcome::Transmitted(v) => {
                assert_eq!(Ok(v), walk.observe(&ts, T));
                transmitted.push(v);
            }
            Outcome::NoReport(_) => {}
            Outcome::Failed(e) => panic!("epoch {epoch}: {e}"),
        }
    }
    assert!(transmitted.len() >= 3, "{transmitted:?}");
    let status = relayer.chain_status().unwrap();
    let v: serde_json::Value = serde_json::from_str(&status.config).unwrap();
    assert_eq!(v["transmissions"], transmitted.len());
    assert_eq!(
        provider.transmitter.latest_config_digest_and_epoch(),
        Ok((digest.clone(), 5)),
        "the last round transmitted (heartbeat 1h, deviation 0: every round reports)"
    );
    assert!(median.client.kill().graceful);
    assert!(devchain.client.kill().graceful);
    let chain = Chain::open(&path).unwrap();
    let on_file = on_chain(chain.transmissions(), |t| t.median);
    assert_eq!(
        on_file, transmitted,
        "the chain file holds every transmission, once"
    );
}

/// Everything a relayer answers, in one comparable value.
fn answers(plugin: &dyn PluginRelayer, path: &std::path::Path) -> Vec<String> {
    let keystore: Arc<dyn Keystore> = Arc::new(DevKeystore::new(
        b"node secret",
        vec!["transmitter-0".into(), "transmitter-1".into()],
    ));
    let (relayer, provider) = relay(plugin, path, Some(keystore));
    let cp = relayer.new_config_provider(&median_args()).unwrap();
    let (block, digest) = cp.tracker.latest_config_details().unwrap();
    let config = cp.tracker.latest_config(block).unwrap();
    let mut out = vec![
        format!("details {block} {digest:?}"),
        format!("config {config:?}"),
        format!("recomputed {:?}", cp.digester.config_digest(&config)),
        format!("prefix {:?}", cp.digester.config_digest_prefix()),
        format!("height {:?}", cp.tracker.latest_block_height()),
        format!("from {:?}", provider.transmitter.from_account()),
        format!(
            "latest {:?}",
            provider.transmitter.latest_config_digest_and_epoch()
        ),
        format!(
            "requested {:?}",
            provider
                .contract
                .latest_round_requested(Duration::from_secs(60))
        ),
        format!(
            "transmission {:?}",
            provider.contract.latest_transmission_details()
        ),
        format!("status {:?}", relayer.chain_status()),
        format!("nodes {:?}", relayer.list_node_statuses(10, "")),
        format!("head {:?}", relayer.latest_head()),
        format!("finalized {:?}", relayer.finalized_head()),
        format!("info {:?}", relayer.chain_info()),
        format!("replay {:?}", relayer.replay("1", &Default::default())),
        format!(
            "onchain {:?}",
            provider
                .onchain_codec
                .decode(&config.onchain_config)
                .map(|b| (b.min, b.max))
        ),
    ];
    // Refusals: the in-process message is carried inside the gRPC status.
    let refusals = [
        relayer
            .transact(&Transaction {
                from: "a".into(),
                to: "b".into(),
                amount: 1,
                balance_check: true,
            })
            .unwrap_err(),
        relayer
            .new_plugin_provider(
                &RelayArgs {
                    provider_type: "mercury".into(),
                    ..Default::default()
                },
                &PluginArgs::default(),
            )
            .err()
            .unwrap(),
        plugin.new_relayer("{}", None, None).err().unwrap(),
        relayer.list_node_statuses(10, "page-2").unwrap_err(),
        cp.tracker.latest_config(block + 5).unwrap_err(),
        relayer.replay("99", &Default::default()).unwrap_err(),
        relayer
            .replay(
                "0",
                serde_json::json!({"nested": {"list": [1.5, "x", null, true]}})
                    .as_object()
                    .unwrap(),
            )
            .unwrap_err(),
    ];
    for (i, e) in refusals.iter().enumerate() {
        let want = [
            "Transact is not supported",
            "provides \"median\"",
            "missing field `chainFile`",
            "one node, on one page",
            "no config was set in block 6: the latest config was set in block 1",
            "fromBlock 99 is beyond the chain's height 1",
            "replay argument \"nested\": the devchain takes none",
        ][i];
        assert!(e.contains(want), "{e}");
        out.push(format!("refused {want}"));
    }
    out
}

#[test]
fn a_relayer_loopp_answers_every_call_as_the_in_process_relayer_does() {
    let sandbox = Sandbox::new("relay-same");
    let (path, digest) = configured_chain(&sandbox);
    let devchain = devchain_loopp(&sandbox);
    let over_grpc = answers(&devchain.plugin, &path);
    let in_process = answers(&Devchain::new(), &path);
    assert_eq!(over_grpc, in_process);
    assert!(
        over_grpc[0].contains(&format!("{digest:?}")),
        "{over_grpc:?}"
    );
    assert!(
        over_grpc.iter().any(|a| a == "from Ok(\"transmitter-0\")"),
        "the account comes from the host's keystore: {over_grpc:?}"
    );
    assert!(over_grpc.iter().any(|a| a == "requested Ok(None)"));
    // The chain's head: one block (the config), its hash chained from zero.
    let head = over_grpc.iter().find(|a| a.starts_with("head ")).unwrap();
    assert!(
        head.contains("height: \"1\"") && head.contains("timestamp: 0"),
        "{head}"
    );
    assert!(
        over_grpc
            .iter()
            .any(|a| a.starts_with("info Ok(ChainInfo { family_name: \"devchain\"")),
        "{over_grpc:?}"
    );
}

/// One report with median `v`.
fn report(v: i128) -> Vec<u8> {
    codec::build_report(&[ParsedObservation {
        timestamp: 1_700_000_000,
        value: v,
        juels_per_fee_coin: 1,
        gas_price_subunits: 0,
        observer: 0,
    }])
    .unwrap()
}

#[test]
fn killing_the_relayer_mid_transmit_leaves_a_valid_file_with_every_acknowledged_transmission() {
    let sandbox = Sandbox::new("relay-kill");
    let (path, digest) = configured_chain(&sandbox);
    let mut acknowledged: Vec<u32> = Vec::new();
    let mut attempted_unacknowledged: Vec<u32> = Vec::new();
    let mut epoch = 0u32;
    // Transmissions back to back (each one a write and an fsync in the
    // relayer), and a SIGKILL at a different moment each time: the kill
    // lands while a Transmit is being handled.
    for (i, after) in [40u64, 110, 230].into_iter().enumerate() {
        let devchain = devchain_loopp(&sandbox);
        let (_relayer, provider) = relay(&devchain.plugin, &path, None);
        let pid = devchain.client.pid();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(after));
            // SAFETY: killing the relayer process this test started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        });
        let mut failed = false;
        let bound = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < bound {
            epoch += 1;
            let ts = ReportTimestamp {
                config_digest: digest.clone(),
                epoch,
                round: 0,
            };
            match provider
                .transmitter
                .transmit(&ts, &report(i128::from(epoch)))
            {
                Ok(()) => acknowledged.push(epoch),
                Err(e) => {
                    assert!(
                        !e.contains("FAILED_PRECONDITION"),
                        "only the kill may fail a transmission, not the contract: {e}"
                    );
                    attempted_unacknowledged.push(epoch);
                    failed = true;
                    break;
                }
            }
        }
        killer.join().unwrap();
        assert!(
            failed,
            "run {i}: transmissions fail once the relayer is gone"
        );
        drop(devchain);
        // The file is valid after every kill, and a new relayer continues it.
        let chain = Chain::open(&path).expect("the chain file is valid after the kill");
        let on_file = on_chain(chain.transmissions(), |t| t.epoch);
        let lost: Vec<&u32> = acknowledged
            .iter()
            .filter(|e| !on_file.contains(e))
            .collect();
        assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
        // Only an attempt whose reply the kill cut off may be there too.
        for e in &on_file {
            assert!(
                acknowledged.contains(e) || attempted_unacknowledged.contains(e),
                "epoch {e} on file was never sent"
            );
        }
        let mut sorted = on_file.clone();
        sorted.dedup();
        assert_eq!(sorted, on_file, "no transmission twice");
        // The next run starts after whatever the file holds.
        epoch = epoch.max(on_file.last().copied().unwrap_or(0));
    }
    assert!(acknowledged.len() >= 3, "{acknowledged:?}");
}

/// Brokered sockets under `dir` (both sides put theirs there in these tests).
fn broker_sockets(dir: &std::path::Path) -> usize {
    fn walk(d: &std::path::Path, n: &mut usize) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if p
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("id-"))
            {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}

/// `loopp_broker_objects` in an exposition.
fn broker_objects_in(text: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix("loopp_broker_objects "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no loopp_broker_objects in:\n{text}"))
}

/// The objects a plugin serves on its broker, from its `/metrics`.
fn plugin_broker_objects(port: u16) -> i64 {
    let text = metrics_page(port);
    broker_objects_in(&text)
}

/// The objects this (host) process serves on its brokers.
fn host_broker_objects() -> i64 {
    let (text, _) = loopp::goplugin::metrics::encode();
    broker_objects_in(&String::from_utf8(text).unwrap())
}

/// With go-plugin's brokering (one server and socket per object, as with a
/// Go peer): dropping a setup removes every socket served for it.
#[test]
fn dropping_a_setup_closes_everything_served_for_it_on_both_sides() {
    // Before any thread: this host offers no routing (see goplugin::route).
    std::env::set_var(loopp::goplugin::route::OFFER_VAR, "0");
    dropping_a_setup(false);
}

/// With routed brokering (loopp on both sides: every object on one shared
/// server per side): dropping a setup ends every route served for it, and
/// no per-object socket is ever made.
#[test]
fn dropping_a_routed_setup_closes_everything_served_for_it_on_both_sides() {
    dropping_a_setup(true);
}

fn dropping_a_setup(routed: bool) {
    let sandbox = Sandbox::new("relay-close");
    let (path, digest) = configured_chain(&sandbox);
    let devchain = devchain_loopp(&sandbox);
    assert_eq!(devchain.client.broker().routed(), routed);
    let baseline = broker_sockets(&sandbox.dir);
    let host_before = host_broker_objects();
    let relayer_before = plugin_broker_objects(devchain.metrics_port);
    for round in 0..3 {
        // What the node builds for a feed: relayer (with the node's
        // keystore), provider, config provider, the median factory and
        // its plugins (the node proxying the provider to them).
        let keystore: Arc<dyn Keystore> =
            Arc::new(DevKeystore::new(b"secret", vec!["transmitter-0".into()]));
        let (relayer, provider) = relay(&devchain.plugin, &path, Some(keystore));
        let cp = relayer.new_config_provider(&median_args()).unwrap();
        assert!(cp.tracker.latest_block_height().is_ok());
        let walk: Arc<dyn DataSource> =
            Arc::from(sources::build(&Spec::Static { value: 1 }).unwrap());
        let median = median_loopp(&sandbox, &provider, &digest, walk, &max(1000));
        assert_eq!(median.client.broker().routed(), routed);
        let median_port = median.metrics_port;
        // relayer, provider, config provider and keystore; factory, 4
        // plugins, and the node's provider, sources and error log.
        let open = broker_sockets(&sandbox.dir);
        let served = host_broker_objects() - host_before
            + plugin_broker_objects(devchain.metrics_port)
            - relayer_before
            + plugin_broker_objects(median_port);
        println!(
            "round {round}: {served} objects served, {open} sockets for them ({baseline} before)"
        );
        assert!(
            served >= 4 + 5 + 4,
            "round {round}: {served} objects served"
        );
        if routed {
            assert_eq!(open, baseline, "routed: no socket of its own per object");
        } else {
            assert!(open >= baseline + 4 + 5 + 4, "round {round}: {open} open");
        }
        let mut client = median.into_client();
        drop((relayer, provider, cp));
        let all_closed = || {
            broker_sockets(&sandbox.dir) == baseline
                && host_broker_objects() == host_before
                && plugin_broker_objects(devchain.metrics_port) == relayer_before
                && plugin_broker_objects(median_port) == 0
        };
        assert!(
            wait_until(Duration::from_secs(10), all_closed),
            "round {round}: {} brokered sockets left, {baseline} before; objects: host {} (was {host_before}), relayer {} (was {relayer_before}), median {}",
            broker_sockets(&sandbox.dir),
            host_broker_objects(),
            plugin_broker_objects(devchain.metrics_port),
            plugin_broker_objects(median_port),
        );
        client.kill();
    }
}
