//! `loopp-test-plugin MODE`: a plugin whose (mis)behaviour is chosen by MODE,
//! for the integration tests (go-plugin's TestHelperProcess pattern). Not
//! installed. Modes that misbehave before the handshake write raw text, as a
//! broken plugin would; the others go through `loopp::goplugin::plugin::serve`.
//!
//! Modes:
//! - `serve`: a normal plugin (Example service prefix "test: ", loop.Service);
//! - `print-before-handshake`: prints a line on stdout, then serves;
//! - `exit-before-handshake`: writes an error on stderr and exits 3;
//! - `no-handshake`: prints nothing and sleeps;
//! - `bad-core`, `netrpc`, `unknown-network`, `unreachable`: prints a handshake
//!   line with that defect, then sleeps;
//! - `noisy-stderr`: writes a 1 MiB line and invalid UTF-8 on stderr, then serves;
//! - `ignore-shutdown`: serves health only, ignores Shutdown and SIGTERM;
//! - `empty-health`: serves health only, each check ending OK without a
//!   reply message (a unary reply is a stream on the wire: it can be empty);
//! - `exit-after-handshake`: serves, then exits 7 after 200 ms;
//! - `exit-during-start`: exits 3 while `serve` builds its services (its
//!   socket directory made, no handshake printed yet);
//! - `spawn-grandchild`: serves, with a `sleep` child in its process group;
//! - `chatty`: serves and prints a line on stdout and stderr every 50 ms;
//! - `big-echo`: serves, its Echo replies 200,000 bytes more than asked;
//! - `hang-metrics`: serves, but its `/metrics` never answers (within 60 s);
//! - `metrics-required`: serves, as a LOOP plugin that requires `CL_PROMETHEUS_PORT`;
//! - `crash-loop`: while the number in the file `LOOPP_TEST_CRASH_FILE` is
//!   above 0, counts it down, prints a handshake (its socket is never
//!   served) and exits 7 at once; at 0 it serves normally. One file drives a
//!   whole crash loop under a supervisor (the one that serves writes
//!   `0 serving PID` there). With `LOOPP_TEST_CRASH_SERVED`
//!   set, each crash serves first and exits 7 20 ms after it started
//!   serving, so the host connects and pings before the crash.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use loopp::example::{ExampleServer, ExampleService};
use loopp::goplugin::handshake::Cookie;
use loopp::goplugin::plugin::{serve, MetricsPort, ServeConfig};
use loopp::services::service::served;

/// Bound on every sleep, so a test plugin can never outlive a test run.
const MAX_SLEEP: Duration = Duration::from_secs(60);

fn serve_normally(mode: &'static str) -> ExitCode {
    let config = ServeConfig {
        name: format!("test-{mode}"),
        cookie: Cookie::example(),
        versions: vec![0],
        metrics: if mode == "metrics-required" {
            MetricsPort::Required
        } else {
            MetricsPort::IfSet
        },
    };
    // "big-echo": replies 200,000 bytes larger than what was asked.
    let prefix = if mode == "big-echo" {
        "x".repeat(200_000)
    } else {
        "test: ".to_string()
    };
    serve(config, move |plugin| {
        // A metric only plugins export, for the monitoring tests.
        let up = loopp::goplugin::metrics::prometheus::IntGauge::new(
            "loopp_test_plugin_up",
            "1 while the test plugin serves.",
        )?;
        up.set(1);
        loopp::goplugin::metrics::prometheus::register(Box::new(up))?;
        match mode {
            "hang-metrics" => {
                loopp::goplugin::metrics::prometheus::register(Box::new(HangingCollector::new()))?;
            }
            "exit-after-handshake" => {
                std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_millis(200));
                    std::process::exit(7);
                });
            }
            "exit-during-start" => std::process::exit(3),
            "exit-soon" => {
                std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_millis(20));
                    std::process::exit(7);
                });
            }
            "chatty" => {
                std::thread::spawn(|| loop {
                    println!("tick on stdout");
                    eprintln!("tick on stderr");
                    std::thread::sleep(Duration::from_millis(50));
                });
            }
            "spawn-grandchild" => {
                let child = std::process::Command::new("sleep").arg("60").spawn()?;
                println!("grandchild {}", child.id());
            }
            _ => {}
        }
        Ok(served(
            Arc::new(ExampleService),
            vec![ExampleServer::new(&prefix, plugin.broker.clone()).service()],
        ))
    })
}

fn raw_handshake(line: &str) -> ExitCode {
    if !Cookie::example().is_present_in_env() {
        return ExitCode::from(1);
    }
    println!("{line}");
    let _ = std::io::stdout().flush();
    std::thread::sleep(MAX_SLEEP);
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    // The mode comes from the first argument, else LOOPP_TEST_MODE (so a node
    // can run it through CL_<NAME>_CMD, which takes no arguments).
    let mode = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("LOOPP_TEST_MODE").ok())
        .unwrap_or_default();
    match mode.as_str() {
        "serve" => serve_normally("serve"),
        "exit-after-handshake" => serve_normally("exit-after-handshake"),
        "exit-during-start" => serve_normally("exit-during-start"),
        "spawn-grandchild" => serve_normally("spawn-grandchild"),
        "chatty" => serve_normally("chatty"),
        "hang-metrics" => serve_normally("hang-metrics"),
        "metrics-required" => serve_normally("metrics-required"),
        "big-echo" => serve_normally("big-echo"),
        "print-before-handshake" => {
            println!("starting up, version 1.2.3");
            serve_normally("serve")
        }
        "noisy-stderr" => {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&vec![b'x'; 1 << 20]);
            let _ = err.write_all(b"\n");
            let _ = err.write_all(b"bad bytes \xff\xfe\xfd here\n");
            let _ = err.write_all(b"{\"@level\":\"warn\",\"@message\":{\"not\":\"a string\"}}\n");
            drop(err);
            serve_normally("serve")
        }
        "exit-before-handshake" => {
            eprintln!("fatal: cannot read config /etc/loopp/test.toml: no such file");
            ExitCode::from(3)
        }
        "no-handshake" => {
            std::thread::sleep(MAX_SLEEP);
            ExitCode::SUCCESS
        }
        "bad-core" => raw_handshake("2|0|unix|/tmp/nowhere.sock|grpc|"),
        "netrpc" => raw_handshake("1|0|unix|/tmp/nowhere.sock|netrpc|"),
        "unknown-network" => raw_handshake("1|0|udp|127.0.0.1:9|grpc|"),
        "unreachable" => raw_handshake(&format!(
            "1|0|unix|/tmp/loopp-test-unreachable-{}.sock|grpc|",
            std::process::id()
        )),
        "ignore-shutdown" => ignore_shutdown::run(),
        "empty-health" => empty_health::run(),
        "crash-loop" => crash_loop(),
        other => {
            eprintln!("loopp-test-plugin: unknown mode {other:?}");
            ExitCode::from(2)
        }
    }
}

/// See `crash-loop` in the module docs.
fn crash_loop() -> ExitCode {
    if !Cookie::example().is_present_in_env() {
        return ExitCode::from(1);
    }
    let Some(file) = std::env::var_os("LOOPP_TEST_CRASH_FILE") else {
        eprintln!("crash-loop: set LOOPP_TEST_CRASH_FILE");
        return ExitCode::from(2);
    };
    let file = std::path::PathBuf::from(file);
    let left: u64 = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // Renamed into place: the test reads the file while plugins write it.
    let tmp = file.with_extension("tmp");
    let write =
        |text: String| std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &file));
    if left == 0 {
        // Which process serves, for the test to tell it from the crashes.
        if write(format!("0 serving {}\n", std::process::id())).is_err() {
            return ExitCode::from(2);
        }
        return serve_normally("serve");
    }
    if write(format!("{}\n", left - 1)).is_err() {
        return ExitCode::from(2);
    }
    if std::env::var_os("LOOPP_TEST_CRASH_SERVED").is_some() {
        return serve_normally("exit-soon");
    }
    println!(
        "1|0|unix|/tmp/loopp-test-crash-loop-{}.sock|grpc|",
        std::process::id()
    );
    let _ = std::io::stdout().flush();
    ExitCode::from(7)
}

/// A metrics collector whose collection hangs (for proxy timeout tests).
struct HangingCollector {
    desc: loopp::goplugin::metrics::prometheus::core::Desc,
}

impl HangingCollector {
    fn new() -> HangingCollector {
        let desc = loopp::goplugin::metrics::prometheus::core::Desc::new(
            "loopp_test_hang".into(),
            "Never collected in time.".into(),
            vec![],
            Default::default(),
        )
        .expect("desc");
        HangingCollector { desc }
    }
}

impl loopp::goplugin::metrics::prometheus::core::Collector for HangingCollector {
    fn desc(&self) -> Vec<&loopp::goplugin::metrics::prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<loopp::goplugin::metrics::prometheus::proto::MetricFamily> {
        std::thread::sleep(MAX_SLEEP);
        vec![]
    }
}

/// A plugin that answers health checks but never stops by itself.
mod ignore_shutdown {
    use super::*;
    use loopp::goplugin::call::{Ctx, Sink};
    use loopp::proto::grpc_controller::Empty;
    use loopp::proto::{grpc_controller_grpc, health, health_grpc};

    #[derive(Clone)]
    struct Deaf;

    impl health_grpc::Health for Deaf {
        fn check(
            &mut self,
            ctx: Ctx,
            _req: health::HealthCheckRequest,
            sink: Sink<health::HealthCheckResponse>,
        ) {
            let resp = health::HealthCheckResponse {
                status: health::health_check_response::ServingStatus::SERVING.into(),
                ..Default::default()
            };
            loopp::goplugin::rpc::respond(&ctx, sink, Ok(resp));
        }
    }

    impl grpc_controller_grpc::GRPCController for Deaf {
        fn shutdown(&mut self, ctx: Ctx, _req: Empty, sink: Sink<Empty>) {
            // Says yes, does nothing.
            loopp::goplugin::rpc::respond(&ctx, sink, Ok(Empty::new()));
        }
    }

    pub fn run() -> ExitCode {
        if !Cookie::example().is_present_in_env() {
            return ExitCode::from(1);
        }
        // SAFETY: ignoring SIGTERM is always sound.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
        serve_raw(vec![
            health_grpc::create_health(Deaf),
            grpc_controller_grpc::create_grpc_controller(Deaf),
        ])
    }
}

/// Serves `services` on a socket of its own, without `serve`: prints the
/// handshake itself, then sleeps (bounded).
fn serve_raw(services: Vec<grpcio::Service>) -> ExitCode {
    let dir = loopp::goplugin::sockdir::SocketDir::create().expect("socket dir");
    let path = dir.path("plugin.sock").expect("socket path");
    let mut builder = loopp::goplugin::rpc::server_builder();
    for service in services {
        builder = builder.register_service(service);
    }
    let mut server = builder.build().expect("server");
    server
        .add_listening_port(
            format!("unix:{}", path.display()),
            grpcio::ServerCredentials::insecure(),
        )
        .expect("listen");
    server.start();
    println!("1|0|unix|{}|grpc|", path.display());
    let _ = std::io::stdout().flush();
    std::thread::sleep(MAX_SLEEP);
    ExitCode::SUCCESS
}

/// A plugin whose health checks end OK without a reply message: a server
/// may do that to a unary call (its reply is a stream on the wire), and
/// grpcio's client panics on it unless guarded (`loopp::goplugin::unary`).
mod empty_health {
    use super::*;
    use grpcio::{Method, MethodType, ServerStreamingSink, ServiceBuilder};
    use loopp::proto::health::{HealthCheckRequest, HealthCheckResponse};

    pub fn run() -> ExitCode {
        if !Cookie::example().is_present_in_env() {
            return ExitCode::from(1);
        }
        // The health check's path, served as a stream that ends at once.
        let empty: Method<HealthCheckRequest, HealthCheckResponse> = Method {
            ty: MethodType::ServerStreaming,
            ..loopp::proto::health_grpc::METHOD_HEALTH_CHECK
        };
        let service = ServiceBuilder::new()
            .add_server_streaming_handler(
                &empty,
                |ctx, _req, mut sink: ServerStreamingSink<HealthCheckResponse>| {
                    ctx.spawn(async move {
                        let _ = futures_util::SinkExt::close(&mut sink).await;
                    })
                },
            )
            .build();
        serve_raw(vec![service])
    }
}
