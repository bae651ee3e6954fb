//! Interop with real Go code: a go-plugin 1.0.1 host and plugin, built from
//! Debian's packages by tests/go/build.sh during the test run.

use std::process::Command;
use std::time::Duration;

use loopp::example::{echo, ExampleServer};
use loopp::goplugin::handshake::Cookie;
use loopp::goplugin::host::{Client, HostConfig};
use loopp::proto::example::BrokerId;
use loopp::proto::example_grpc::ExampleClient;

use crate::util::*;

const T: Duration = Duration::from_secs(5);

#[test]
fn go_host_runs_a_loopp_plugin() {
    let (gohost, _) = go_bins();
    let out = run_bounded(
        Command::new(gohost).arg("interop").arg(example()),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gohost failed:\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "ping ok");
    assert_eq!(
        lines[1], "echo loopp: from go host",
        "app RPC answered by the loopp plugin"
    );
    assert_eq!(
        lines[2], "serve-echo loopp: via broker",
        "loopp plugin serves, Go host dials"
    );
    assert_eq!(
        lines[3], "call-echo go: ping",
        "Go host serves, loopp plugin dials"
    );
    assert!(lines[4].starts_with("kill "));
    assert_eq!(lines[5], "exited true");
    // go-plugin's own verdict on Kill(): graceful, no SIGKILL.
    assert!(stderr.contains(r#""@message":"plugin exited""#), "{stderr}");
    assert!(!stderr.contains("failed to exit gracefully"), "{stderr}");
    // Our JSON log lines went through go-plugin's hclog relay.
    assert!(
        stderr.contains(r#""@message":"example service closed""#),
        "{stderr}"
    );
}

#[test]
fn loopp_host_runs_a_go_plugin() {
    capture_logs();
    let (_, goplugin) = go_bins();
    let mut config = HostConfig::new("goplugin", &goplugin, Cookie::example());
    config.start_timeout = Duration::from_secs(10);
    // go-plugin 1.0.1 leaves its socket file in TMPDIR: keep it in a sandbox.
    let sandbox = Sandbox::new("interop-go-plugin");
    config
        .env
        .push(("TMPDIR".into(), sandbox.dir.clone().into()));
    let mut client = Client::start(&config).expect("start the Go plugin");
    client.ping().expect("ping");
    let ex = ExampleClient::new(client.channel().clone());
    assert_eq!(
        echo("goplugin", &ex, "from loopp host", T).unwrap(),
        "go: from loopp host"
    );

    // The Go plugin serves on a broker id; the loopp host dials it.
    let id = ex
        .serve_echo(&Default::default(), T)
        .expect("ServeEcho")
        .value;
    let sub = ExampleClient::new(
        client
            .broker()
            .dial(id, T)
            .expect("dial the Go plugin's broker id"),
    );
    assert_eq!(
        echo("goplugin", &sub, "via broker", T).unwrap(),
        "go: via broker"
    );

    // The loopp host serves on a broker id; the Go plugin dials it.
    let id = client.broker().next_id();
    client
        .broker()
        .serve(
            id,
            vec![ExampleServer::new("loopp host: ", client.broker().clone()).service()],
        )
        .unwrap();
    let reply = ex
        .call_echo(
            &BrokerId {
                value: id,
                ..Default::default()
            },
            T,
        )
        .expect("CallEcho");
    assert_eq!(reply.value, "loopp host: ping");

    let pid = client.pid();
    let exit = client.kill();
    assert!(exit.graceful, "the Go plugin exited after Shutdown");
    assert_gone(pid);
    // go-plugin 1.0.1 has no GRPCStdio: that means "no stdio", not an error.
    assert!(
        wait_until(T, || logs_for("loopp::goplugin::host::stdio").iter().any(
            |r| r.message == "plugin goplugin: no stdio service (go-plugin before 1.5)"
        )),
        "Unimplemented StreamStdio is reported as no stdio"
    );
    // The Go plugin's hclog lines were relayed under its name with their level.
    assert!(
        logs_for("goplugin")
            .iter()
            .any(|r| r.message.contains("plugin address") && r.level == log::Level::Debug),
        "{:?}",
        logs_for("goplugin")
    );
}
