//! loopp as a drop-in for Chainlink's Go LOOP layer: Go LOOP plugins under
//! `loopp-node`. The Go programs (tests/go) are built from loopp's own
//! protos and behave as chainlink-common's servers do at their entry points.

use std::time::Duration;

use loopp::node::config::NodeConfig;
use loopp::node::Node;

use crate::util::*;

const BOUND: Duration = Duration::from_secs(40);

/// A job with the Go relayer as relay `gorelay` and the in-process median.
fn go_relayer_job(sandbox: &Sandbox) -> NodeConfig {
    let job = format!(
        r#"{{"plugins":[{{"name":"gorelay","kind":"relayer"}},{{"name":"median","kind":"median"}}],
            "feeds":[{{"name":"g","relay":"gorelay","median":"median",
                "source":{{"type":"static","value":1}},"interval":"200ms"}}],
            "supervision":{{"backoff_initial":"50ms","backoff_max":"200ms"}},
            "http":{{"listen":"off"}},"data_dir":{}}}"#,
        serde_json::Value::String(sandbox.dir.join("data").display().to_string())
    );
    let relayer = go_bin("gorelayer").display().to_string();
    let sock = sandbox.dir.display().to_string();
    // go-plugin 1.0.1 puts its socket in TMPDIR: the sandbox, through the
    // plugin's own env file, so the test leaves nothing in /tmp.
    let env_file = sandbox.dir.join("gorelay.env");
    std::fs::write(&env_file, format!("TMPDIR={sock}\n")).unwrap();
    let env_file = env_file.display().to_string();
    NodeConfig::from_json("dropin", &job, &move |k| match k {
        "CL_GORELAY_CMD" => Some(relayer.clone()),
        "CL_GORELAY_ENV" => Some(env_file.clone()),
        "PLUGIN_UNIX_SOCKET_DIR" => Some(sock.clone()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A Go relayer starts under the node (it needs the Go LOOP environment),
/// its NewRelayer dials the keystore, the CSA keystore and the capabilities
/// registry the node serves and uses each, and the first call it does not
/// implement is reported with its name, in the feed's log line.
#[test]
fn a_go_relayer_gets_past_new_relayer_and_names_what_it_does_not_implement() {
    capture_logs();
    let sb = Sandbox::new("dropin-relayer");
    let node = Node::start(&go_relayer_job(&sb)).expect("node starts");
    let said = |target: &str, want: &[&str]| {
        logs_for(target)
            .iter()
            .any(|r| want.iter().all(|w| r.message.contains(w)))
    };
    assert!(
        wait_until(BOUND, || said(
            "gorelay",
            &[
                "NewRelayer ok",
                "4 keystore accounts, 1 CSA accounts, 0 capabilities"
            ]
        )),
        "the Go relayer's NewRelayer did not get its services; its log: {:?}",
        logs_for("gorelay")
    );
    assert!(
        wait_until(BOUND, || said(
            "loopp::node::feeds",
            &[
                "feed g: not ready",
                "/loop.Relayer/NewPluginProvider",
                "UNIMPLEMENTED"
            ]
        )),
        "the unimplemented call is not named; feed log: {:?}",
        logs_for("loopp::node::feeds")
    );
    node.shutdown();
}

/// A Go median LOOPP beside loopp-devchain, under the node: its
/// NewMedianFactory dials the five services the node serves (data source,
/// juels, gas price, provider, error log), and its rounds, with libocr's
/// observation encoding and reports built by the devchain's codec through
/// the node's proxy, are transmitted.
#[test]
fn a_go_median_plugin_runs_the_feed_with_loopp_devchain() {
    capture_logs();
    let sb = Sandbox::new("dropin-median");
    let job = format!(
        r#"{{"plugins":[{{"name":"devchain","kind":"relayer"}},{{"name":"gomed","kind":"median"}}],
            "feeds":[{{"name":"m","relay":"devchain","median":"gomed",
                "source":{{"type":"static","value":4321}},
                "gas_price":{{"type":"static","value":77}},"interval":"200ms"}}],
            "supervision":{{"backoff_initial":"50ms","backoff_max":"200ms"}},
            "http":{{"listen":"off"}},"data_dir":{}}}"#,
        serde_json::Value::String(sb.dir.join("data").display().to_string())
    );
    let median = go_bin("gomedian").display().to_string();
    let sock = sb.dir.display().to_string();
    let env_file = sb.dir.join("gomed.env");
    std::fs::write(&env_file, format!("TMPDIR={sock}\n")).unwrap();
    let env_file = env_file.display().to_string();
    let config = NodeConfig::from_json("dropin-median", &job, &move |k| match k {
        "CL_DEVCHAIN_CMD" => Some(devchain().into()),
        "CL_GOMED_CMD" => Some(median.clone()),
        "CL_GOMED_ENV" => Some(env_file.clone()),
        "PLUGIN_UNIX_SOCKET_DIR" => Some(sock.clone()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let node = Node::start(&config).expect("node starts");
    let chain = sb.dir.join("data/devchain/m.jsonl");
    let transmitted = || -> Vec<(u32, i128)> {
        loopp::devchain::store::Chain::open(&chain)
            .map(|c| {
                c.transmissions()
                    .unwrap_or_default()
                    .iter()
                    .map(|t| (t.epoch, t.median))
                    .collect()
            })
            .unwrap_or_default()
    };
    let ok = wait_until(BOUND, || transmitted().len() >= 3);
    node.shutdown();
    assert!(
        ok,
        "the Go median's feed did not transmit: {:?}; its log: {:?}; feed: {:?}",
        transmitted(),
        logs_for("gomed"),
        logs_for("loopp::node::feeds")
    );
    let t = transmitted();
    assert!(t.iter().all(|(_, m)| *m == 4321), "{t:?}");
    assert!(
        t.windows(2).all(|w| w[0].0 < w[1].0),
        "epochs increase: {t:?}"
    );
    assert!(logs_for("gomed")
        .iter()
        .any(|r| r.message.contains("NewMedianFactory ok")));
}

/// A DON of two loopp oracles and two Go oracles (the Go median plugin,
/// libocr's encodings): every observation decodes as libocr's, a loopp
/// leader and a Go leader build the same report from the same
/// observations, and mixed rounds transmit whoever leads. Stopped, the Go
/// plugin leaves no socket behind (the host removes what it announced).
#[test]
fn loopp_and_go_median_oracles_share_a_don() {
    use loopp::devchain::provider::DevchainCodec;
    use loopp::median::libocr::Observation;
    use loopp::node::feeds::rounds::{run_round, Oracle, Outcome};
    use loopp::services::datasource::{DataSource, ReportTimestamp};
    use loopp::services::median::deadlines::Deadlines;
    use loopp::sources::{build, Spec};
    use std::sync::Arc;

    use crate::median::{chain, devchain_provider, max, median_loopp, median_plugin};

    let sandbox = Sandbox::new("dropin-mixed");
    let (contract, digest) = chain(&sandbox);
    let provider = devchain_provider(&contract);
    let source: Arc<dyn DataSource> = Arc::from(
        build(&Spec::Randomwalk {
            seed: 11,
            start: 50_000,
            step_ppm: 20_000,
        })
        .unwrap(),
    );
    let m = max(2000);
    let ours = median_loopp(&sandbox, &provider, &digest, source.clone(), &m);
    let go = median_plugin(
        &sandbox,
        &go_bin("gomedian"),
        &provider,
        &digest,
        source.clone(),
        &m,
    );
    let oracles: Vec<Oracle> = vec![
        ours.oracles[0].clone(),
        ours.oracles[1].clone(),
        go.oracles[2].clone(),
        go.oracles[3].clone(),
    ];
    let t = Duration::from_secs(5);
    let ts = |epoch| ReportTimestamp {
        config_digest: digest.clone(),
        epoch,
        round: 0,
    };
    let observations: Vec<(u8, Vec<u8>)> = oracles
        .iter()
        .map(|(i, p)| (*i, p.observation(&ts(1), &[], t).expect("observation")))
        .collect();
    for (i, o) in &observations {
        let o = Observation::decode(o).unwrap_or_else(|e| panic!("oracle {i}: {e}"));
        assert_eq!(o.value.to_i128(), source.observe(&ts(1), t), "oracle {i}");
        assert_eq!(o.gas_price_subunits.map(|g| g.to_i128()), Some(Ok(7)));
    }
    let by_loopp = oracles[0].1.report(&ts(1), &[], &observations, t);
    let by_go = oracles[2].1.report(&ts(1), &[], &observations, t);
    let report = by_loopp.expect("loopp reports").expect("a report");
    assert_eq!(
        Some(report),
        by_go.expect("Go reports"),
        "the same report bytes"
    );

    let deadlines = Deadlines::new(m, Duration::from_millis(100)).unwrap();
    for epoch in 1..=4u32 {
        let round = run_round(
            &oracles,
            epoch as usize, // leaders 1, 2, 3, 0: loopp and Go in turn
            &ts(epoch),
            1,
            &deadlines,
            contract.clone(),
            Arc::new(DevchainCodec),
        );
        match round.outcome {
            Outcome::Transmitted(v) => {
                assert_eq!(Ok(v), source.observe(&ts(epoch), t), "epoch {epoch}")
            }
            other => panic!("epoch {epoch}: {other:?}"),
        }
    }
    assert_eq!(contract.transmissions().unwrap().len(), 4);
    // go-plugin 1.0.1 makes its sockets in TMPDIR (the sandbox), one for
    // the plugin and one per object it serves (the factory, each reporting
    // plugin), and leaves them when it exits: the host removes them.
    let sockets = || {
        use std::os::unix::fs::FileTypeExt;
        std::fs::read_dir(&sandbox.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
            .count()
    };
    assert!(sockets() >= 6, "Go's sockets: {}", sockets());
    drop(oracles);
    assert!(ours.into_client().kill().graceful);
    assert!(go.into_client().kill().graceful);
    assert_eq!(sockets(), 0, "{:?}", sandbox.leftovers());
}

/// A Go node (go-plugin's host, the Go LOOP environment, Go's client-side
/// checks) runs loopp-devchain and loopp-median on a fresh contract with a
/// libocr protobuf offchain config: the fresh contract answers as Go's
/// client requires, every round reports, is accepted and transmitted, and
/// the chain file has the transmissions.
#[test]
fn a_go_node_runs_loopps_from_a_fresh_contract() {
    let sb = Sandbox::new("dropin-gonode");
    let out = run_bounded(
        std::process::Command::new(go_bin("gonode"))
            .arg(devchain())
            .arg(median())
            .arg(&sb.dir)
            .arg("4"),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gonode failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        serde_json::json!({"fresh": true, "epoch": 0, "round": 0, "digestIsConfig": true}),
        "the fresh contract: the config's digest, epoch and round 0"
    );
    for (i, l) in lines[1..5].iter().enumerate() {
        assert_eq!(l["epoch"], i + 1);
        assert_eq!(l["reported"], true, "{l}");
        assert_eq!(l["accepted"], 4, "{l}");
        assert_eq!(l["transmitted"], true, "{l}");
    }
    assert_eq!(
        lines[5],
        serde_json::json!({"final": true, "epoch": 4, "answer": "4242"})
    );
    let chain = loopp::devchain::store::Chain::open(&sb.dir.join("chain.jsonl")).unwrap();
    let epochs = on_chain(chain.transmissions(), |t| t.epoch);
    assert_eq!(epochs, vec![1, 2, 3, 4]);
}
