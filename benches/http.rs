//! `make bench`, HTTP part: scrape latency and throughput through the node's
//! proxy (`/plugins/NAME/metrics`) against the plugin's own `/metrics`, and
//! `/discovery` throughput. All on loopback.
//!
//! Sequential latency (one client, keep-alive) gives the proxy's p50/p99
//! overhead (target: p50 < 0.3 ms); `wrk` (Debian's, when installed) gives
//! throughput under load. One JSON object per line; `compare` lines give
//! differences and ratios within this run. Then the same sequential scrapes
//! while LOOPP_BENCH_HOSTILE (10000) connections that never finish a request
//! are held open against the node: `flood_*` ratios against the quiet run
//! (target: p50 within 1.5x, p99 within 3x). Knobs: LOOPP_BENCH_SCRAPES
//! (2000), LOOPP_BENCH_WRK_SECS (3).

#[path = "../tests/common/programs.rs"]
mod programs;
use programs::example;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use loopp::node::config::NodeConfig;
use loopp::node::registry::State;
use loopp::node::Node;
use serde_json::json;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sequential GETs with one keep-alive client: p50/p99 in µs.
fn sequential(url: &str, n: u64) -> (f64, f64) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let get = || {
        let mut r = agent.get(url).call().expect("GET");
        let mut sink = Vec::new();
        r.body_mut()
            .as_reader()
            .read_to_end(&mut sink)
            .expect("body");
    };
    for _ in 0..100 {
        get();
    }
    let mut samples = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = Instant::now();
        get();
        samples.push(t.elapsed());
    }
    let s = loopp::stats::summarize(&mut samples);
    (s.p50.as_secs_f64() * 1e6, s.p99.as_secs_f64() * 1e6)
}

/// `wrk` requests/s and p50 latency (µs), if wrk is installed.
fn wrk(url: &str, secs: u64) -> Option<(f64, f64)> {
    let out = Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{secs}s"), "--latency", url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())?;
    let p50 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .map(|v| parse_wrk_duration(v.trim()))?;
    Some((rps, p50))
}

fn parse_wrk_duration(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(0.0);
    match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => n,
    }
}

fn main() {
    let scrapes = knob("LOOPP_BENCH_SCRAPES", 2000);
    let secs = knob("LOOPP_BENCH_WRK_SECS", 3);
    let text = r#"{"plugins":[{"name":"p","kind":"example"}],"http":{"listen":"127.0.0.1:0"}}"#;
    let config = NodeConfig::from_json("bench", text, &|k| {
        (k == "CL_P_CMD").then(|| example().to_string())
    })
    .expect("bench job");
    let node = Node::start(&config).expect("node");
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.registry().get("p").map(|s| s.state) != Some(State::Running) {
        assert!(Instant::now() < deadline, "plugin did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let base = format!("http://{}", node.http_addr().unwrap());
    let port = node.registry().get("p").unwrap().metrics_port.unwrap();
    let direct = format!("http://127.0.0.1:{port}/metrics");
    let proxied = format!("{base}/plugins/p/metrics");
    let discovery = format!("{base}/discovery");

    // Interleaved: direct, proxied, direct, proxied.
    let mut d = Vec::new();
    let mut p = Vec::new();
    for _ in 0..2 {
        d.push(sequential(&direct, scrapes / 2));
        p.push(sequential(&proxied, scrapes / 2));
    }
    let avg = |v: &[(f64, f64)], i: usize| {
        v.iter()
            .map(|x| if i == 0 { x.0 } else { x.1 })
            .sum::<f64>()
            / v.len() as f64
    };
    let (d50, d99, p50, p99) = (avg(&d, 0), avg(&d, 1), avg(&p, 0), avg(&p, 1));
    println!(
        "{}",
        json!({"bench": "scrape_sequential", "path": "direct", "us_p50": d50, "us_p99": d99, "n": scrapes})
    );
    println!(
        "{}",
        json!({"bench": "scrape_sequential", "path": "proxied", "us_p50": p50, "us_p99": p99, "n": scrapes})
    );
    println!(
        "{}",
        json!({"compare": "proxy_overhead_p50", "us": p50 - d50, "ratio": p50 / d50, "target_us": 300.0, "met": p50 - d50 < 300.0})
    );
    match (
        wrk(&direct, secs),
        wrk(&proxied, secs),
        wrk(&discovery, secs),
    ) {
        (Some((drps, dlat)), Some((prps, plat)), Some((srps, slat))) => {
            println!(
                "{}",
                json!({"bench": "wrk", "path": "direct", "rps": drps, "us_p50": dlat})
            );
            println!(
                "{}",
                json!({"bench": "wrk", "path": "proxied", "rps": prps, "us_p50": plat})
            );
            println!(
                "{}",
                json!({"bench": "wrk", "path": "discovery", "rps": srps, "us_p50": slat})
            );
            println!(
                "{}",
                json!({"compare": "proxy_throughput", "ratio": prps / drps})
            );
        }
        _ => println!(
            "{}",
            json!({"bench": "wrk", "skipped": "wrk not installed (apt-get install wrk)"})
        ),
    }
    flood(
        &node,
        &discovery,
        &proxied,
        scrapes,
        knob("LOOPP_BENCH_HOSTILE", 10_000),
    );
    node.shutdown();
}

/// Sequential scrapes while `hostile` connections sit open: ratios against
/// the same scrapes on a quiet server.
fn flood(node: &Node, discovery: &str, proxied: &str, scrapes: u64, hostile: u64) {
    use std::io::Write;
    // SAFETY: getrlimit/setrlimit on a local struct (this process holds the
    // hostile sockets too).
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let quiet = [
        sequential(discovery, scrapes / 2),
        sequential(proxied, scrapes / 2),
    ];
    let addr = node.http_addr().unwrap();
    let mut held = Vec::new();
    for i in 0..hostile {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(mut c) => {
                if i % 2 == 1 {
                    let _ = c.write_all(b"GET /discovery HTTP/1.1\r\nX-Slow: ");
                }
                held.push(c);
            }
            Err(e) => {
                println!(
                    "{}",
                    json!({"bench": "flood", "error": format!("connection {i}: {e}")})
                );
                break;
            }
        }
    }
    let loaded = [
        sequential(discovery, scrapes / 2),
        sequential(proxied, scrapes / 2),
    ];
    for (i, path) in ["discovery", "proxied"].iter().enumerate() {
        let (q50, q99) = quiet[i];
        let (l50, l99) = loaded[i];
        println!(
            "{}",
            json!({"bench": "flood", "path": path, "hostile": held.len(), "us_p50": l50, "us_p99": l99, "quiet_us_p50": q50, "quiet_us_p99": q99})
        );
        println!(
            "{}",
            json!({"compare": format!("flood_{path}_p50"), "ratio": l50 / q50, "target": 1.5, "met": l50 / q50 <= 1.5})
        );
        println!(
            "{}",
            json!({"compare": format!("flood_{path}_p99"), "ratio": l99 / q99, "target": 3.0, "met": l99 / q99 <= 3.0})
        );
    }
}
