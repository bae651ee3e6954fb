//! The host's lifecycle against real loopp plugin processes.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use loopp::example::{echo, ExampleServer};
use loopp::goplugin::handshake::Network;
use loopp::goplugin::host::Client;
use loopp::proto::example::BrokerId;
use loopp::proto::example_grpc::ExampleClient;
use loopp::proto::grpc_stdio::stdio_data::Channel as Chan;
use loopp::proto::grpc_stdio_grpc::GRPCStdioClient;
use loopp::proto::health::{health_check_response::ServingStatus, HealthCheckRequest};
use loopp::proto::health_grpc::HealthClient;
use loopp::services::service::{Service, ServiceClient};

use crate::util::*;

const T: Duration = Duration::from_secs(5);

#[test]
fn start_call_and_graceful_shutdown() {
    let sandbox = Sandbox::new("lifecycle");
    let mut client = Client::start(&test_plugin("lifecycle", "serve", &sandbox)).expect("start");
    let pid = client.pid();
    let h = client.handshake().clone();
    assert_eq!(h.network, Network::Unix);
    assert!(
        h.address.starts_with(sandbox.dir.to_str().unwrap()),
        "socket in the sandbox: {}",
        h.address
    );
    let dir = std::path::Path::new(&h.address).parent().unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    client.ping().expect("ping");
    let health = HealthClient::new(client.channel().clone());
    let check = |service: &str| {
        let req = HealthCheckRequest {
            service: service.into(),
            ..Default::default()
        };
        health.check(&req, T)
    };
    assert_eq!(
        check("").unwrap().status.enum_value(),
        Ok(ServingStatus::SERVING)
    );
    let unknown = check("bogus").expect_err("unknown service");
    assert!(
        loopp::goplugin::error::rpc_status_text(&unknown).starts_with("NOT_FOUND"),
        "{unknown:?}"
    );
    let svc = ServiceClient::new("lifecycle", client.channel().clone().into(), T);
    assert_eq!(svc.try_name().unwrap(), "example");
    assert_eq!(svc.ready(), Ok(()));
    assert_eq!(
        svc.health_report().get("example").map(String::as_str),
        Some("")
    );
    let ex = ExampleClient::new(client.channel().clone());
    assert_eq!(echo("lifecycle", &ex, "hi", T).unwrap(), "test: hi");
    // Messages beyond grpc's 4 MiB default pass both ways (limits raised as go-plugin).
    let big = "x".repeat(6 << 20);
    assert_eq!(
        echo("lifecycle", &ex, &big, T).unwrap().len(),
        big.len() + "test: ".len()
    );

    let exit = client.kill();
    assert!(exit.graceful, "exited after Shutdown without SIGKILL");
    assert_eq!(exit.status.unwrap().code(), Some(0));
    assert_gone(pid);
    assert_eq!(sandbox.leftovers(), Vec::<String>::new());
}

#[test]
fn broker_both_ways_between_loopp_host_and_loopp_plugin() {
    let sandbox = Sandbox::new("broker");
    let mut client = Client::start(&test_plugin("broker", "serve", &sandbox)).expect("start");
    let ex = ExampleClient::new(client.channel().clone());
    // Plugin serves on a broker id, host dials it.
    let id = ex
        .serve_echo(&Default::default(), T)
        .expect("ServeEcho")
        .value;
    let sub = ExampleClient::new(client.broker().dial(id, T).expect("dial"));
    assert_eq!(
        echo("broker", &sub, "via broker", T).unwrap(),
        "test: via broker"
    );
    // Host serves on a broker id, plugin dials it.
    let id = client.broker().next_id();
    client
        .broker()
        .serve(
            id,
            vec![ExampleServer::new("host: ", client.broker().clone()).service()],
        )
        .expect("serve");
    let reply = ex
        .call_echo(
            &BrokerId {
                value: id,
                ..Default::default()
            },
            T,
        )
        .expect("CallEcho");
    assert_eq!(reply.value, "host: ping");
    // Dialing an id nobody announces fails in time, naming the id.
    let err = client
        .broker()
        .dial(999, Duration::from_millis(200))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("service id 999 was not announced within 200ms"),
        "{err}"
    );
    assert!(client.kill().graceful);
    assert_eq!(sandbox.leftovers(), Vec::<String>::new());
}

#[test]
fn tcp_on_loopback_within_the_port_range() {
    let sandbox = Sandbox::new("tcp");
    let mut config = test_plugin("tcp", "serve", &sandbox);
    config.network = Network::Tcp;
    config.port_range = (20000, 29999);
    let mut client = Client::start(&config).expect("start");
    let addr: std::net::SocketAddr = client.handshake().address.parse().unwrap();
    assert_eq!(client.handshake().network, Network::Tcp);
    assert!(addr.ip().is_loopback());
    assert!((20000..=29999).contains(&addr.port()));
    client.ping().expect("ping");
    assert!(client.kill().graceful);
}

#[test]
fn stdio_is_streamed_after_the_handshake() {
    let sandbox = Sandbox::new("stdio");
    let mut client = Client::start(&test_plugin("stdio", "chatty", &sandbox)).expect("start");
    // Take the stream over from the host and read what the plugin prints. The
    // plugin has one subscriber at a time: if the host's relay subscribes after
    // us, our stream ends and we subscribe again.
    let stdio = GRPCStdioClient::new(client.channel().clone());
    let mut stream = stdio
        .stream_stdio(&Default::default(), T)
        .expect("StreamStdio");
    let (mut out, mut err, mut reopened) = (false, false, 0);
    for _ in 0..100 {
        let Some(data) = futures_executor::block_on(stream.next()) else {
            reopened += 1;
            assert!(reopened < 5, "the stream keeps ending");
            stream = stdio
                .stream_stdio(&Default::default(), T)
                .expect("StreamStdio");
            continue;
        };
        let data = data.expect("data");
        let text = String::from_utf8_lossy(&data.data);
        match data.channel.enum_value() {
            Ok(Chan::STDOUT) if text.contains("tick on stdout") => out = true,
            Ok(Chan::STDERR) if text.contains("tick on stderr") => err = true,
            _ => {}
        }
        if out && err {
            break;
        }
    }
    assert!(
        out && err,
        "both channels streamed (stdout {out}, stderr {err})"
    );
    assert!(client.kill().graceful);
}

#[test]
fn stdio_relayed_into_host_logs() {
    capture_logs();
    let sandbox = Sandbox::new("relay");
    let mut client = Client::start(&test_plugin("relay", "chatty", &sandbox)).expect("start");
    assert!(
        wait_until(T, || logs_for("relay::stdout")
            .iter()
            .any(|r| r.message.contains("tick on stdout"))
            && logs_for("relay")
                .iter()
                .any(|r| r.message.contains("tick on stderr"))),
        "stdout and stderr of the plugin show up under its name"
    );
    assert!(client.kill().graceful);
}

#[test]
fn a_plugin_that_ignores_shutdown_is_killed_and_cleaned_up() {
    let sandbox = Sandbox::new("deaf");
    let mut config = test_plugin("deaf", "ignore-shutdown", &sandbox);
    config.shutdown_grace = Duration::from_millis(300);
    let mut client = Client::start(&config).expect("start");
    let pid = client.pid();
    let exit = client.kill();
    assert!(!exit.graceful);
    assert_eq!(exit.status.unwrap().signal(), Some(libc::SIGKILL));
    assert_gone(pid);
    assert_eq!(
        sandbox.leftovers(),
        Vec::<String>::new(),
        "its socket was removed by the host"
    );
}

/// A health check that ends OK without a reply message (grpcio's receiver
/// panics on it: tikv/grpc-rs#670) fails the start with an error that says
/// so; the host's thread goes on, and the plugin is killed and cleaned up.
#[test]
fn a_health_reply_without_a_message_fails_the_start_without_a_panic() {
    let sandbox = Sandbox::new("empty-health");
    let mut config = test_plugin("empty", "empty-health", &sandbox);
    config.shutdown_grace = Duration::from_millis(300);
    let started = std::thread::spawn(move || Client::start(&config).map(|_| ()));
    let err = started
        .join()
        .expect("the host's thread returns instead of panicking")
        .expect_err("a start whose health check has no reply fails");
    let text = err.to_string();
    assert!(
        text.contains("plugin empty") && text.contains("without a reply message"),
        "{text}"
    );
    assert_eq!(
        sandbox.leftovers(),
        Vec::<String>::new(),
        "its socket was removed by the host"
    );
}

#[test]
fn exit_is_noticed_and_reaped() {
    let sandbox = Sandbox::new("exit7");
    let mut client =
        Client::start(&test_plugin("exit7", "exit-after-handshake", &sandbox)).expect("start");
    let pid = client.pid();
    let exited = client.process().exited();
    assert!(
        exited.recv_timeout(T).is_err(),
        "the exit channel disconnects"
    );
    assert_eq!(client.process().status().unwrap().code(), Some(7));
    assert_gone(pid);
    let exit = client.kill();
    assert_eq!(exit.status.unwrap().code(), Some(7));
}

#[test]
fn grandchildren_do_not_outlive_the_plugin() {
    capture_logs();
    let sandbox = Sandbox::new("grandchild");
    let mut client =
        Client::start(&test_plugin("grandchild", "spawn-grandchild", &sandbox)).expect("start");
    let mut grandchild = None;
    assert!(wait_until(T, || {
        grandchild = logs_for("grandchild::stdout").iter().find_map(|r| {
            r.message
                .strip_prefix("grandchild ")
                .and_then(|p| p.parse::<u32>().ok())
        });
        grandchild.is_some()
    }));
    let grandchild = grandchild.unwrap();
    assert!(pid_exists(grandchild));
    client.kill();
    assert!(
        wait_until(T, || !pid_exists(grandchild)),
        "grandchild {grandchild} survived"
    );
}

/// The plugin's own watch on its parent (what saves Go hosts from orphans):
/// a host that sets no parent-death signal is SIGKILLed; the plugin follows.
#[test]
fn plugin_exits_when_its_host_is_killed() {
    let sandbox = Sandbox::new("orphan");
    let mut host = Command::new("bash")
        .arg("-c")
        .arg(format!("{TEST_PLUGIN} serve & echo $!; wait"))
        .env(
            "LOOPP_EXAMPLE_PLUGIN",
            loopp::goplugin::handshake::Cookie::example().value,
        )
        .env("PLUGIN_UNIX_SOCKET_DIR", &sandbox.dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(host.stdout.take().unwrap()));
    let pid: u32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    let handshake = lines.next().unwrap().unwrap();
    assert!(handshake.starts_with("1|0|unix|"), "{handshake}");
    host.kill().unwrap();
    host.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || !pid_exists(pid)),
        "plugin {pid} outlived its host by 2 s"
    );
    assert!(
        wait_until(T, || sandbox.leftovers().is_empty()),
        "it cleaned its socket up: {:?}",
        sandbox.leftovers()
    );
}
