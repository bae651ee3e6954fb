//! Monitoring: /discovery, the metrics proxy, /metrics and /health over real
//! HTTP against real plugin processes, and a real Prometheus server.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loopp::goplugin::handshake::Cookie;
use loopp::goplugin::host::{Client, HostConfig};
use loopp::node::registry::State;
use loopp::node::Node;
use serde_json::Value;

use crate::util::*;

const BOUND: Duration = Duration::from_secs(30);

/// A node (in this process) with test plugins `(name, mode)` ("in-process":
/// in the node), HTTP on a free loopback port; returns its base URL.
fn node_with(name: &str, plugins: &[(&str, &str)]) -> (Node, String, Sandbox) {
    let (config, sandbox) = test_job(
        name,
        plugins,
        &[
            ("health_interval", "300ms"),
            ("backoff_initial", "50ms"),
            ("backoff_max", "300ms"),
        ],
    );
    let node = Node::start(&config).expect("node starts");
    let base = format!("http://{}", node.http_addr().expect("http runs"));
    (node, base, sandbox)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent()
}

/// GET with headers; returns (status, content type, body).
fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut body = String::new();
    resp.body_mut()
        .as_reader()
        .read_to_string(&mut body)
        .unwrap();
    (resp.status().as_u16(), ctype, body)
}

#[test]
fn discovery_lists_the_node_then_each_loopp_sorted() {
    let (node, base, _sb) = node_with(
        "disco",
        &[
            ("zeta", "serve"),
            ("alpha", "serve"),
            ("inside", "in-process"),
        ],
    );
    running_pid(&node, "zeta");
    running_pid(&node, "alpha");
    let (status, ctype, body) = get(&format!("{base}/discovery"), &[]);
    assert_eq!(status, 200);
    assert_eq!(ctype, "application/json");
    let groups: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        groups.len(),
        3,
        "node + 2 LOOPPs (in-process plugins have no endpoint): {body}"
    );
    let port = node.http_addr().unwrap().port();
    for g in &groups {
        let target = g["targets"][0].as_str().unwrap();
        assert!(target.ends_with(&format!(":{port}")), "{target}");
    }
    assert_eq!(
        groups[0]["labels"],
        serde_json::json!({"__metrics_path__": "/metrics"})
    );
    let names: Vec<&str> = groups[1..]
        .iter()
        .map(|g| g["labels"]["__meta_plugin_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "zeta"]);
    assert_eq!(
        groups[1]["labels"]["__metrics_path__"],
        "/plugins/alpha/metrics"
    );
    assert_eq!(groups[1]["labels"]["__meta_loopp_state"], "running");
    assert_eq!(groups[1]["labels"]["__meta_loopp_kind"], "example");
    node.shutdown();
}

/// The metrics proxy reaches plugins on loopback directly, whatever proxy
/// the node's environment names (ureq would take `http_proxy` for
/// 127.0.0.1 too).
#[test]
fn the_metrics_proxy_does_not_go_through_a_proxy_in_the_environment() {
    let trap = ProxyTrap::start();
    // Set before anything in this test process starts a thread or a client
    // (nextest runs each test in a process of its own).
    for (k, v) in trap.env() {
        std::env::set_var(k, v);
    }
    for k in ["no_proxy", "NO_PROXY", "no_grpc_proxy"] {
        std::env::remove_var(k);
    }
    let (node, base, _sb) = node_with("envproxy", &[("p", "serve")]);
    running_pid(&node, "p");
    let (status, _, body) = get(&format!("{base}/plugins/p/metrics"), &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("loopp_test_plugin_up 1"), "{body}");
    assert_eq!(trap.connections(), 0, "the scrape went through the proxy");
    node.shutdown();
}

#[test]
fn the_proxy_returns_the_plugins_own_metrics_and_keeps_its_port_across_restarts() {
    let (node, base, _sb) = node_with("proxy", &[("p", "serve")]);
    let pid = running_pid(&node, "p");
    let url = format!("{base}/plugins/p/metrics");
    let (status, ctype, body) = get(&url, &[("Accept", "text/plain;version=0.0.4")]);
    assert_eq!(status, 200, "{body}");
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    for want in [
        "loopp_test_plugin_up 1",
        "process_resident_memory_bytes",
        "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"/grpc.health.v1.Health/Check\"}",
    ] {
        assert!(body.contains(want), "missing {want:?}");
    }
    let port = node.registry().get("p").unwrap().metrics_port;
    // SAFETY: killing the plugin we saw running.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    assert!(wait_until(BOUND, || node.registry().get("p").is_some_and(
        |s| s.state == State::Running && s.pid != Some(pid)
    )));
    assert_eq!(
        node.registry().get("p").unwrap().metrics_port,
        port,
        "same metrics port after the restart"
    );
    assert!(
        wait_until(BOUND, || get(&url, &[]).0 == 200),
        "scrapes work again after the restart"
    );
    // The node's own metrics tell the story.
    let (status, _, m) = get(&format!("{base}/metrics"), &[]);
    assert_eq!(status, 200);
    for want in [
        "loopp_plugin_up{kind=\"example\",mode=\"loopp\",plugin=\"p\"} 1",
        "loopp_plugin_restarts{plugin=\"p\"} 1",
        "loopp_proxy_scrapes_total{plugin=\"p\"}",
        "loopp_rpc_total{code=\"OK\",method=\"/grpc.health.v1.Health/Check\",plugin=\"p\"}",
        "loopp_rpc_duration_seconds_bucket",
    ] {
        assert!(m.contains(want), "node /metrics lacks {want:?}");
    }
    node.shutdown();
}

#[test]
fn a_hanging_plugin_gets_504_in_time_while_everything_else_answers() {
    let (node, base, _sb) = node_with("hang", &[("slow", "hang-metrics"), ("ok", "serve")]);
    running_pid(&node, "slow");
    running_pid(&node, "ok");
    let slow_url = format!("{base}/plugins/slow/metrics");
    let hung = std::thread::spawn(move || {
        let t = Instant::now();
        let r = get(&slow_url, &[("X-Prometheus-Scrape-Timeout-Seconds", "1")]);
        (r, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    // While that scrape hangs, the rest of the node answers.
    assert_eq!(get(&format!("{base}/discovery"), &[]).0, 200);
    assert_eq!(get(&format!("{base}/plugins/ok/metrics"), &[]).0, 200);
    let ((status, _, body), took) = hung.join().unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("plugin slow"), "{body}");
    assert!(
        took < Duration::from_secs(3),
        "ended by the scrape timeout, took {took:?}"
    );
    node.shutdown();
}

#[test]
fn a_plugin_that_is_down_fails_fast_and_health_says_so() {
    capture_logs();
    let (node, base, _sb) = node_with(
        "down",
        &[("gone", "exit-before-handshake"), ("ok", "serve")],
    );
    running_pid(&node, "ok");
    assert!(wait_until(BOUND, || node
        .registry()
        .get("gone")
        .is_some_and(|s| s.restarts >= 1)));
    let (status, ctype, body) = get(&format!("{base}/plugins/gone/metrics"), &[]);
    assert_eq!(status, 503, "{body}");
    assert!(ctype.starts_with("text/plain"));
    assert!(body.contains("plugin gone is not running"), "{body}");
    let (status, ctype, body) = get(&format!("{base}/health"), &[]);
    assert_eq!(
        (status, ctype.as_str()),
        (503, "application/json"),
        "{body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["healthy"], false);
    assert_eq!(v["report"]["ok"], "");
    // Why it is down, with its own last words, in /health and in the log.
    let stderr_line = "fatal: cannot read config /etc/loopp/test.toml: no such file";
    let why = v["report"]["gone"].as_str().unwrap();
    assert!(
        why.contains("exit status: 3") && why.contains(stderr_line),
        "{why}"
    );
    assert!(
        logs_for("loopp::node::supervisor")
            .iter()
            .any(|r| r.level == log::Level::Warn
                && r.message.starts_with("plugin gone:")
                && r.message.contains(stderr_line)),
        "the node's log names the plugin's stderr"
    );
    node.shutdown();
}

#[test]
fn health_is_200_when_all_is_well() {
    let (node, base, _sb) = node_with("healthy", &[("a", "serve"), ("b", "in-process")]);
    running_pid(&node, "a");
    assert!(wait_until(BOUND, || get(&format!("{base}/health"), &[]).0 == 200));
    let (_, _, body) = get(&format!("{base}/health"), &[]);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["healthy"], true);
    assert_eq!(v["report"]["a.example"], "");
    assert_eq!(v["report"]["b.example"], "");
    node.shutdown();
}

#[test]
fn two_hundred_concurrent_scrapes_are_all_answered() {
    let (node, base, _sb) = node_with("many", &[("p", "serve")]);
    running_pid(&node, "p");
    let url = format!("{base}/plugins/p/metrics");
    let threads: Vec<_> = (0..200)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || get(&url, &[]).0)
        })
        .collect();
    let codes: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    node.shutdown();
}

#[test]
fn bad_requests_get_the_right_status_and_the_node_keeps_serving() {
    let (node, base, _sb) = node_with("bad", &[("a", "serve")]);
    running_pid(&node, "a");
    let post = agent()
        .post(&format!("{base}/discovery"))
        .send("x")
        .unwrap();
    assert_eq!(post.status().as_u16(), 405);
    assert_eq!(post.headers().get("allow").unwrap(), "GET, HEAD");
    let long = "a".repeat(5000);
    for (path, want) in [
        ("/nope".to_string(), 404),
        ("/plugins/../metrics".to_string(), 404),
        ("/plugins/a%2Fb/metrics".to_string(), 404),
        ("/plugins/a/../a/metrics".to_string(), 404),
        ("/plugins/A/metrics".to_string(), 404),
        ("/plugins/a/metrics/extra".to_string(), 404),
        ("/plugins//metrics".to_string(), 404),
        (format!("/plugins/{long}/metrics"), 414),
    ] {
        let (status, _, body) = get(&format!("{base}{path}"), &[]);
        assert_eq!(status, want, "{path}: {body}");
    }
    // Raw bytes that are not even HTTP.
    let mut s = std::net::TcpStream::connect(node.http_addr().unwrap()).unwrap();
    std::io::Write::write_all(&mut s, b"\x00\xff garbage\r\n\r\n").unwrap();
    drop(s);
    assert_eq!(get(&format!("{base}/discovery"), &[]).0, 200);
    assert_eq!(get(&format!("{base}/plugins/a/metrics"), &[]).0, 200);
    node.shutdown();
}

#[test]
fn a_malformed_metrics_port_is_a_clear_start_error() {
    let sandbox = Sandbox::new("badport");
    let mut c = HostConfig::new("badport", TEST_PLUGIN, Cookie::example());
    c.args = vec!["serve".into()];
    c.socket_dir = Some(sandbox.dir.clone());
    c.env.push(("CL_PROMETHEUS_PORT".into(), "eighty".into()));
    let err = Client::start(&c).err().expect("must fail").to_string();
    assert!(
        err.contains("CL_PROMETHEUS_PORT=\"eighty\" is not a TCP port"),
        "{err}"
    );
}

#[test]
fn a_loop_plugin_without_a_metrics_port_names_the_variable() {
    let sandbox = Sandbox::new("noport");
    let mut c = HostConfig::new("noport", TEST_PLUGIN, Cookie::example());
    c.args = vec!["metrics-required".into()];
    c.socket_dir = Some(sandbox.dir.clone());
    let err = Client::start(&c).err().expect("must fail").to_string();
    assert!(err.contains("CL_PROMETHEUS_PORT is not set"), "{err}");
    // With the port it starts, and serves /metrics there.
    let port = free_port();
    c.env
        .push(("CL_PROMETHEUS_PORT".into(), port.to_string().into()));
    let mut client = Client::start(&c).expect("starts with a port");
    let (status, _, body) = get(&format!("http://127.0.0.1:{port}/metrics"), &[]);
    assert_eq!(status, 200);
    assert!(body.contains("loopp_test_plugin_up 1"));
    assert!(client.kill().graceful);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Prometheus discovers the node and its plugins through /discovery, scrapes
/// each plugin through the node, and sees a killed plugin come back.
#[test]
fn a_real_prometheus_discovers_and_scrapes_every_plugin() {
    let prometheus = which("prometheus").expect("prometheus is installed (scripts/deps.sh test)");
    let sandbox = Sandbox::new("prom");
    // The node, as operators run it.
    let jobfile = sandbox.dir.join("job.json");
    std::fs::write(
        &jobfile,
        r#"{"plugins":[{"name":"a","kind":"example"},{"name":"b","kind":"example"}],
            "supervision":{"backoff_initial":"100ms"},"http":{"listen":"127.0.0.1:0"}}"#,
    )
    .unwrap();
    let mut cmd = Command::new(node());
    cmd.args(["run", "--config"])
        .arg(&jobfile)
        .env("RUST_LOG", "info")
        // No CL_PROMETHEUS_DISCOVERY_HOSTNAME: the default must be reachable.
        .env_remove("CL_PROMETHEUS_DISCOVERY_HOSTNAME")
        .env("PLUGIN_UNIX_SOCKET_DIR", &sandbox.dir);
    for n in ["A", "B"] {
        let envfile = sandbox.dir.join(format!("{n}.env"));
        std::fs::write(&envfile, "LOOPP_TEST_MODE=serve\n").unwrap();
        cmd.env(format!("CL_{n}_CMD"), TEST_PLUGIN)
            .env(format!("CL_{n}_ENV"), &envfile);
    }
    let mut node = KillOnDrop(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let stderr = BufReader::new(node.0.stderr.take().unwrap());
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut node_port = 0u16;
    let mut pids = std::collections::HashMap::new();
    let deadline = Instant::now() + BOUND;
    while node_port == 0 || pids.len() < 2 {
        let line = rx
            .recv_deadline(deadline)
            .expect("node starts with HTTP and both plugins");
        if let Some(rest) = line.split("HTTP on http://127.0.0.1:").nth(1) {
            node_port = rest.split(' ').next().unwrap().parse().unwrap();
        }
        if let Some((name, pid)) = running_line(&line) {
            pids.insert(name, pid);
        }
    }

    // Prometheus, on loopback, discovering through the node.
    let prom_port = free_port();
    let config = sandbox.dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: loopp\n    http_sd_configs:\n      - url: http://127.0.0.1:{node_port}/discovery\n        refresh_interval: 1s\n\
             \x20   relabel_configs:\n      - source_labels: [__meta_plugin_name]\n        target_label: plugin\n"
        ),
    )
    .unwrap();
    let _prom = KillOnDrop(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                sandbox.dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api = format!("http://127.0.0.1:{prom_port}/api/v1");
    let targets = || -> Vec<Value> {
        let (status, _, body) = get(&format!("{api}/targets?state=active"), &[]);
        if status != 200 {
            return vec![];
        }
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let all_up = |ts: &[Value]| ts.len() == 3 && ts.iter().all(|t| t["health"] == "up");
    let connectable = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", prom_port)).is_ok()
    });
    assert!(connectable, "prometheus listens");
    assert!(
        wait_until(Duration::from_secs(40), || all_up(&targets())),
        "all targets up: {:#?}",
        targets()
    );
    let ts = targets();
    let mut plugins: Vec<&str> = ts
        .iter()
        .filter_map(|t| t["labels"]["plugin"].as_str())
        .collect();
    plugins.sort();
    assert_eq!(plugins, ["a", "b"], "the node and both plugins are targets");

    // A metric only the plugins export, queried with the plugin label.
    let query = |q: &str| -> Vec<Value> {
        let (_, _, body) = get(&format!("{api}/query?query={q}"), &[]);
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(20), || query("loopp_test_plugin_up")
            .len()
            == 2),
        "{:?}",
        query("loopp_test_plugin_up")
    );
    let r = query("loopp_test_plugin_up%7Bplugin%3D%22a%22%7D");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["value"][1], "1");

    // Kill plugin a: it is restarted and its target comes back up.
    let old = pids["a"];
    // SAFETY: killing the plugin the node reported.
    unsafe { libc::kill(old as libc::pid_t, libc::SIGKILL) };
    let deadline = Instant::now() + BOUND;
    loop {
        let line = rx.recv_deadline(deadline).expect("plugin a is restarted");
        if let Some(("a", pid)) = running_line(&line).as_ref().map(|(n, p)| (n.as_str(), *p)) {
            assert_ne!(pid, old);
            break;
        }
    }
    let restarted_at = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let ts = targets();
            all_up(&ts)
                && ts.iter().any(|t| {
                    t["labels"]["plugin"] == "a"
                        && t["lastScrapeDuration"].as_f64().is_some()
                        && restarted_at.elapsed() > Duration::from_secs(2)
                })
        }),
        "plugin a's target is up again: {:#?}",
        targets()
    );
    let r = query("up%7Bplugin%3D%22a%22%7D");
    assert_eq!(r[0]["value"][1], "1", "{r:?}");
    // SAFETY: stopping the node we started.
    unsafe { libc::kill(node.0.id() as libc::pid_t, libc::SIGTERM) };
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every exposition loopp serves passes `promtool check metrics` (Debian's
/// prometheus package): the node's own `/metrics` after RPCs and proxied
/// scrapes, and a plugin's `/metrics` through the proxy.
#[test]
fn every_exposition_passes_promtool_lint() {
    let (node, base, _sb) = node_with("lint", &[("a", "serve"), ("b", "in-process")]);
    running_pid(&node, "a");
    // Some traffic, so the RPC, proxy and plugin families have samples.
    assert!(wait_until(BOUND, || get(
        &format!("{base}/plugins/a/metrics"),
        &[]
    )
    .0 == 200));
    let _ = get(&format!("{base}/health"), &[]);
    let _ = get(&format!("{base}/plugins/nope/metrics"), &[]);
    for path in ["/metrics", "/plugins/a/metrics"] {
        let (status, _, body) = get(&format!("{base}{path}"), &[]);
        assert_eq!(status, 200, "{path}: {body}");
        let mut lint = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (Debian package prometheus) runs");
        use std::io::Write;
        lint.stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = lint.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{path} fails promtool's lint: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            body.contains("# TYPE process_cpu_seconds_total counter"),
            "{path}"
        );
    }
    node.shutdown();
}
