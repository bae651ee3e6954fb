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
