//! `loopp-node probe`, the operator's diagnostic, end to end.

use std::process::Command;
use std::time::Duration;

use crate::util::*;

const BOUND: Duration = Duration::from_secs(60);

/// A loopp plugin is pinged framed on its own socket (it says so in the
/// handshake's 10th field), and over gRPC when the host does not frame
/// (`LOOPP_BROKER_FRAMED=0`); either way the same checks pass.
#[test]
fn probes_the_example_plugin() {
    for (framing, handshake, ping) in [
        (
            None,
            "|loopp-routed|loopp-framed|loopp-framed-own\n",
            "health checks (framed)",
        ),
        (Some("0"), "|loopp-routed\n", "health checks (gRPC)"),
    ] {
        let mut cmd = Command::new(node());
        cmd.args([
            "probe",
            "--kind",
            "example",
            "--calls",
            "50",
            "--",
            example(),
        ]);
        if let Some(v) = framing {
            cmd.env("LOOPP_BROKER_FRAMED", v);
        }
        let out = run_bounded(&mut cmd, BOUND);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for want in [
            "handshake   1|0|unix|",
            handshake,
            "negotiated  app version 0, network unix",
            "service     loop.Service \"example\", ready, health {example: ok}",
            &format!("rpc         50 {ping}: p50 "),
            "shutdown    graceful: exit status: 0",
        ] {
            assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
        }
    }
}

/// A proxy in the environment (`http_proxy` and friends, as behind a
/// corporate gateway) is never used to reach a plugin: gRPC would take it
/// for a TCP target, and the plugin on loopback would be unreachable.
#[test]
fn a_proxy_in_the_environment_is_not_used_to_reach_a_plugin() {
    let trap = ProxyTrap::start();
    let mut cmd = Command::new(node());
    cmd.args([
        "probe",
        "--kind",
        "example",
        "--network",
        "tcp",
        "--calls",
        "5",
        "--json",
        "--",
        example(),
    ])
    .env_remove("no_proxy")
    .env_remove("NO_PROXY")
    .env_remove("no_grpc_proxy");
    for (k, v) in trap.env() {
        cmd.env(k, v);
    }
    let out = run_bounded(&mut cmd, BOUND);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["network"], "tcp", "{report}");
    assert_eq!(
        trap.connections(),
        0,
        "the plugin was reached through the proxy"
    );
}

#[test]
fn probes_a_go_plugin_as_json() {
    let (_, goplugin) = go_bins();
    // go-plugin 1.0.1 leaves its socket file in TMPDIR: keep it in a sandbox.
    let sandbox = Sandbox::new("probe-go-plugin");
    let out = run_bounded(
        Command::new(node())
            .args([
                "probe", "--kind", "example", "--calls", "20", "--json", "--",
            ])
            .arg(goplugin)
            .env("TMPDIR", &sandbox.dir),
        BOUND,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["ok"], true);
    assert_eq!(v["network"], "unix");
    assert_eq!(v["calls"], 20);
    assert_eq!(v["ping"], "gRPC", "a Go plugin has no framed socket");
    assert_eq!(v["graceful"], true);
    assert!(
        v["service"].is_null(),
        "the Go example does not serve loop.Service"
    );
    assert!(v["rpc_us_p50"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_failing_plugin_gives_exit_1_and_the_reason() {
    let out = run_bounded(
        Command::new(node()).args([
            "probe",
            "--kind",
            "example",
            "--",
            TEST_PLUGIN,
            "exit-before-handshake",
        ]),
        BOUND,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugin exited before we could connect"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot read config"), "{stderr}");
}

#[test]
fn a_plugin_ignoring_shutdown_is_reported() {
    let out = run_bounded(
        Command::new(node()).args([
            "probe",
            "--kind",
            "example",
            "--calls",
            "1",
            "--",
            TEST_PLUGIN,
            "ignore-shutdown",
        ]),
        BOUND,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FORCED"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ignored Shutdown"));
}

#[test]
fn bad_arguments_give_exit_2_and_a_hint() {
    for (args, want) in [
        (
            vec!["probe", "--", "x"],
            "give --kind relayer|median|example or --cookie KEY=VALUE",
        ),
        (
            vec!["probe", "--kind", "nope", "--", "x"],
            "--kind \"nope\" is unknown",
        ),
        (
            vec![
                "probe",
                "--kind",
                "example",
                "--rpc-timeout",
                "0s",
                "--",
                "x",
            ],
            "realistic timeout",
        ),
        (vec!["probe", "--kind", "example"], "no plugin command"),
        (vec!["frobnicate"], "unknown command"),
    ] {
        let out = run_bounded(Command::new(node()).args(&args), BOUND);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

/// The probe gives a plugin the environment the node gives a LOOPP: the
/// median and relayer LOOPPs, which refuse to start without their metrics
/// port, start under it and answer.
#[test]
fn probes_the_median_and_relayer_loopps_with_the_nodes_environment() {
    for (kind, plugin, name) in [
        ("median", median(), "median"),
        ("relayer", devchain(), "devchain"),
    ] {
        let out = run_bounded(
            Command::new(node()).args(["probe", "--kind", kind, "--calls", "5", "--", plugin]),
            BOUND,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "probe --kind {kind}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = format!("service     loop.Service \"{name}\", ready");
        assert!(stdout.contains(&want), "missing {want:?} in\n{stdout}");
    }
}
