//! The node's HTTP server under hostile load: 10,000 connections that never
//! finish a request, from this process, against a real `loopp-node run`
//! with a LOOPP plugin. The node's threads stay put, its open connections
//! stay at the limit, and `/discovery` and the metrics proxy keep answering.
//! The figures are printed (`cargo nextest run --no-capture -E
//! 'test(ten_thousand)'`); latency under load is measured by `make bench`
//! (benches/http.rs), not here.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::proc::*;
use crate::util::*;

const BOUND: Duration = Duration::from_secs(30);
const HOSTILE: usize = 10_000;

/// (threads, RSS KiB) of a process.
fn threads_and_rss(pid: u32) -> (usize, u64) {
    let f = figures(pid);
    (f.threads, f.rss_kib)
}

/// This process may hold 10,000 sockets: the soft open-file limit raised
/// to the hard one. Returns the limit.
fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

/// One GET on a fresh connection: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// The value of an unlabelled or `server="http"` sample in a metrics page.
fn sample(page: &str, prefix: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn ten_thousand_hostile_connections_leave_the_node_serving_on_bounded_threads() {
    let limit = raise_open_files();
    assert!(
        limit as usize > HOSTILE + 500,
        "this test needs an open-file hard limit above {HOSTILE} (have {limit})"
    );
    let sandbox = Sandbox::new("flood");
    let jobfile = sandbox.dir.join("job.json");
    std::fs::write(
        &jobfile,
        r#"{"plugins":[{"name":"ex","kind":"example"}],
            "http":{"listen":"127.0.0.1:0","max_connections":512,"header_timeout":"30s"}}"#,
    )
    .unwrap();
    let mut node = NodeProcess::start(
        &jobfile,
        &[
            ("CL_EX_CMD".into(), example().into()),
            (
                "PLUGIN_UNIX_SOCKET_DIR".into(),
                sandbox.dir.display().to_string(),
            ),
        ],
    );
    let pid = node.pid();
    let port = node.wait_http_port(BOUND);
    node.wait_line(BOUND, |l| running_line(l).is_some());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Warm: each endpoint once, so lazily started pieces are counted.
    assert_eq!(get(addr, "/discovery").0, 200);
    assert_eq!(get(addr, "/plugins/ex/metrics").0, 200);
    let (threads0, rss0) = threads_and_rss(pid);

    // 10,000 connections: a third silent, a third with half a head, a
    // third with a head that never ends. None is ever read from.
    let t0 = Instant::now();
    let hostile: Vec<TcpStream> = (0..HOSTILE)
        .map(|i| {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("hostile connection {i}: {e}"));
            let _ = match i % 3 {
                0 => Ok(()),
                1 => c.write_all(b"GET /discovery HTTP/1.1\r\nHost: x\r\nX-Slow: "),
                _ => c.write_all(b"GET /"),
            };
            c
        })
        .collect();
    let opened = t0.elapsed();
    let (threads1, rss1) = threads_and_rss(pid);

    // Real clients still get answers, and each is a whole answer.
    let mut took = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let (status, body) = get(addr, "/discovery");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("/plugins/ex/metrics"), "{body}");
        let (status, body) = get(addr, "/plugins/ex/metrics");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("process_resident_memory_bytes"), "{body}");
        took.push(t.elapsed());
    }
    let (status, page) = get(addr, "/metrics");
    assert_eq!(status, 200);
    let open = sample(&page, "loopp_http_connections{server=\"http\"}").unwrap();
    let evicted = sample(
        &page,
        "loopp_http_connections_closed_total{reason=\"evicted\",server=\"http\"}",
    )
    .unwrap_or(0.0);
    let (threads2, rss2) = threads_and_rss(pid);
    took.sort();
    println!(
        "flood: {HOSTILE} hostile connections opened in {opened:?}; node threads {threads0} -> {threads1} -> {threads2}, \
         RSS {rss0} -> {rss1} -> {rss2} kB; open connections {open} (limit 512), evicted {evicted}; \
         discovery + proxy pair p50 {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(
        threads1 <= threads0 + 1 && threads2 <= threads0 + 1,
        "threads grew with connections: {threads0} -> {threads1} -> {threads2}"
    );
    assert!(open <= 512.0, "open connections {open} over the limit 512");
    assert!(
        evicted >= (HOSTILE - 512) as f64,
        "only {evicted} evicted of {HOSTILE} hostile connections"
    );
    assert!(
        rss2 < rss0 + 64 * 1024,
        "RSS grew by more than 64 MB: {rss0} -> {rss2} kB"
    );
    drop(hostile);
    assert_eq!(get(addr, "/health").0, 200);
    node.stop();
}
