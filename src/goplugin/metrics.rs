//! Metrics, on both sides, in the process-wide `prometheus` registry:
//! - process metrics (`process_*`, read from `/proc/self` at each scrape);
//! - gRPC server metrics (`grpc_server_*`, per method and code): the
//!   generated service glue calls [`server_begin`], and the `rpc::respond*`
//!   helpers finish the call when the reply is sent;
//! - host-side RPC metrics (`loopp_rpc_*`, per plugin and method, with
//!   deadline-exceeded counts), through [`client_observe`];
//! - HTTP server connections (`loopp_http_connections*`, per server), from
//!   [`crate::goplugin::http`];
//! - per-plugin lanes of served calls (`loopp_served_calls_*`), from
//!   [`crate::goplugin::pool::Lane`].
//!
//! Higher layers add their own metrics to the same registry with
//! [`register`] (the node's: `crate::node::metrics`).
//!
//! Plugin authors register their own metrics with the re-exported
//! [`prometheus`] crate (`prometheus::register(...)`); they appear on the
//! plugin's `/metrics`. [`encode`] renders everything in the text format.

use std::cell::Cell;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

pub use prometheus;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, TextEncoder,
};

/// Latency buckets for RPCs, in seconds (50 µs .. 10 s).
pub const RPC_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Registers `c` in the process-wide registry and returns it (for the
/// `LazyLock` statics that hold metrics, here and in higher layers).
pub fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Registration fails only for duplicate names, which would be our bug.
    prometheus::register(Box::new(c.clone())).expect("metric registered once");
    c
}

struct Server {
    started: IntCounterVec,
    handled: IntCounterVec,
    seconds: HistogramVec,
}

static SERVER: LazyLock<Server> = LazyLock::new(|| Server {
    started: register(
        IntCounterVec::new(
            Opts::new(
                "grpc_server_started_total",
                "gRPC calls started on this server.",
            ),
            &["grpc_method"],
        )
        .unwrap(),
    ),
    handled: register(
        IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "gRPC unary calls answered, by status code.",
            ),
            &["grpc_method", "grpc_code"],
        )
        .unwrap(),
    ),
    seconds: register(
        HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Time from a unary call's arrival to its reply being sent.",
            )
            .buckets(RPC_BUCKETS.to_vec()),
            &["grpc_method"],
        )
        .unwrap(),
    ),
});

/// Objects this process serves on its brokers now (both modes: servers of
/// their own, or routed): what a leak of brokered objects shows on.
pub static BROKER_OBJECTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "loopp_broker_objects",
            "Objects this process serves the other side on its brokers (broker ids), now.",
        )
        .unwrap(),
    )
});

/// Framed connections open (see [`crate::goplugin::framed`]): `in`, to
/// this process's framed servers; `out`, its own to other processes'.
pub static FRAMED_CONNECTIONS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    let g = register(
        prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "loopp_framed_connections",
                "Framed connections open now, to this process's framed servers (in) and from it to others' (out).",
            ),
            &["direction"],
        )
        .unwrap(),
    );
    // Shown from the start, at 0.
    g.with_label_values(&["in"]);
    g.with_label_values(&["out"]);
    g
});

thread_local! {
    static CURRENT: Cell<Option<(&'static str, Instant)>> = const { Cell::new(None) };
}

/// Marks the start of a server call on this (completion-queue) thread; the
/// generated glue calls it before the handler.
pub fn server_begin(method: &'static str) {
    SERVER.started.with_label_values(&[method]).inc();
    CURRENT.with(|c| c.set(Some((method, Instant::now()))));
}

/// The call being handled on this thread, to be finished by whoever sends the
/// reply (possibly on another thread).
#[derive(Debug)]
pub struct ServerCall(Option<(&'static str, Instant)>);

/// Takes the current call's token (once).
pub fn server_call() -> ServerCall {
    ServerCall(CURRENT.with(|c| c.take()))
}

impl ServerCall {
    /// Records the reply with `code` (e.g. `OK`, `DEADLINE_EXCEEDED`).
    pub fn finish(self, code: &str) {
        if let Some((method, t0)) = self.0 {
            SERVER.handled.with_label_values(&[method, code]).inc();
            SERVER
                .seconds
                .with_label_values(&[method])
                .observe(t0.elapsed().as_secs_f64());
        }
    }
}

struct Client {
    total: IntCounterVec,
    deadline: IntCounterVec,
    seconds: HistogramVec,
}

static CLIENT: LazyLock<Client> = LazyLock::new(|| Client {
    total: register(
        IntCounterVec::new(
            Opts::new(
                "loopp_rpc_total",
                "Calls this host made to plugins, by status code.",
            ),
            &["plugin", "method", "code"],
        )
        .unwrap(),
    ),
    deadline: register(
        IntCounterVec::new(
            Opts::new(
                "loopp_rpc_deadline_exceeded_total",
                "Calls to plugins that ran out of time.",
            ),
            &["plugin", "method"],
        )
        .unwrap(),
    ),
    seconds: register(
        HistogramVec::new(
            HistogramOpts::new("loopp_rpc_duration_seconds", "Latency of calls to plugins.")
                .buckets(RPC_BUCKETS.to_vec()),
            &["plugin", "method"],
        )
        .unwrap(),
    ),
});

/// Records one call the host made: `code` is `OK` or the gRPC code name.
pub fn client_observe(plugin: &str, method: &str, code: &str, took: Duration) {
    CLIENT
        .total
        .with_label_values(&[plugin, method, code])
        .inc();
    CLIENT
        .seconds
        .with_label_values(&[plugin, method])
        .observe(took.as_secs_f64());
    if code == "DEADLINE_EXCEEDED" {
        CLIENT.deadline.with_label_values(&[plugin, method]).inc();
    }
}

/// The gRPC code name of a call result, for metrics labels.
pub fn code_of<T>(r: &Result<T, grpcio::Error>) -> &'static str {
    match r {
        Ok(_) => "OK",
        Err(grpcio::Error::RpcFailure(s)) => crate::goplugin::error::status_code_name(s.code()),
        Err(_) => "UNKNOWN",
    }
}

struct Http {
    open: prometheus::IntGaugeVec,
    closed: IntCounterVec,
}

static HTTP: LazyLock<Http> = LazyLock::new(|| Http {
    open: register(
        prometheus::IntGaugeVec::new(
            Opts::new(
                "loopp_http_connections",
                "HTTP connections open, by server.",
            ),
            &["server"],
        )
        .unwrap(),
    ),
    closed: register(
        IntCounterVec::new(
            Opts::new(
                "loopp_http_connections_closed_total",
                "HTTP connections closed, by server and reason (done, peer, header_timeout, \
                 idle_timeout, write_timeout, evicted, refused, error).",
            ),
            &["server", "reason"],
        )
        .unwrap(),
    ),
});

/// Sets the number of open connections of HTTP server `server`.
pub fn http_open(server: &str, open: usize) {
    HTTP.open.with_label_values(&[server]).set(open as i64);
}

/// Counts a connection of HTTP server `server` closed for `reason`.
pub fn http_closed(server: &str, reason: &str) {
    HTTP.closed.with_label_values(&[server, reason]).inc();
}

struct Lanes {
    running: prometheus::IntGaugeVec,
    queued: prometheus::IntGaugeVec,
    rejected: IntCounterVec,
}

static LANES: LazyLock<Lanes> = LazyLock::new(|| Lanes {
    running: register(
        prometheus::IntGaugeVec::new(
            Opts::new(
                "loopp_served_calls_running",
                "Calls a plugin made to what this process serves it, running now.",
            ),
            &["plugin"],
        )
        .unwrap(),
    ),
    queued: register(
        prometheus::IntGaugeVec::new(
            Opts::new(
                "loopp_served_calls_queued",
                "Calls a plugin made to what this process serves it, waiting for a thread.",
            ),
            &["plugin"],
        )
        .unwrap(),
    ),
    rejected: register(
        IntCounterVec::new(
            Opts::new(
                "loopp_served_calls_rejected_total",
                "Calls a plugin made over its bound, answered RESOURCE_EXHAUSTED.",
            ),
            &["plugin"],
        )
        .unwrap(),
    ),
});

/// Publishes a lane's running and waiting jobs.
pub fn lane_state(lane: &str, running: usize, queued: usize) {
    LANES.running.with_label_values(&[lane]).set(running as i64);
    LANES.queued.with_label_values(&[lane]).set(queued as i64);
}

/// Counts a job a lane refused.
pub fn lane_rejected(lane: &str) {
    LANES.rejected.with_label_values(&[lane]).inc();
}

struct Process {
    /// A counter (Prometheus's process collector types it so, and promtool
    /// refuses a `_total` gauge), advanced to what /proc says at each scrape.
    cpu: prometheus::Counter,
    rss: IntGauge,
    vsize: IntGauge,
    fds: IntGauge,
    max_fds: IntGauge,
    threads: IntGauge,
    start: prometheus::Gauge,
}

static PROCESS: LazyLock<Process> = LazyLock::new(|| Process {
    cpu: register(
        prometheus::Counter::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        )
        .unwrap(),
    ),
    rss: register(
        IntGauge::new(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )
        .unwrap(),
    ),
    vsize: register(
        IntGauge::new(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        )
        .unwrap(),
    ),
    fds: register(IntGauge::new("process_open_fds", "Number of open file descriptors.").unwrap()),
    max_fds: register(
        IntGauge::new(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        )
        .unwrap(),
    ),
    threads: register(IntGauge::new("process_threads", "Number of OS threads.").unwrap()),
    start: register(
        prometheus::Gauge::new(
            "process_start_time_seconds",
            "Start time of the process since the epoch in seconds.",
        )
        .unwrap(),
    ),
});

/// What `/proc` says of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessFigures {
    /// User and system CPU time.
    pub cpu_seconds: f64,
    /// OS threads.
    pub threads: u64,
    /// Virtual memory size.
    pub vsize_bytes: u64,
    /// Resident memory.
    pub rss_bytes: u64,
    /// Start time, seconds after boot.
    pub start_after_boot: f64,
    /// Open file descriptors.
    pub fds: u64,
}

/// The figures of process `pid` (None: this one), or None if it is gone.
pub fn process_figures(pid: Option<u32>) -> Option<ProcessFigures> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    // SAFETY: sysconf has no preconditions.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let (hz, page) = (hz.max(1) as f64, page.max(1) as u64);
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after "(comm)": state=0, utime=11, stime=12, threads=17, starttime=19, vsize=20, rss=21.
    Some(ProcessFigures {
        cpu_seconds: (num(11) + num(12)) / hz,
        threads: num(17) as u64,
        vsize_bytes: num(20) as u64,
        rss_bytes: num(21) as u64 * page,
        start_after_boot: num(19) / hz,
        fds: std::fs::read_dir(format!("{dir}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0),
    })
}

/// Reads `/proc/self` into the `process_*` gauges.
fn refresh_process() {
    let p = &*PROCESS;
    let Some(f) = process_figures(None) else {
        return;
    };
    let counted = p.cpu.get();
    if f.cpu_seconds > counted {
        p.cpu.inc_by(f.cpu_seconds - counted);
    }
    p.threads.set(f.threads as i64);
    p.vsize.set(f.vsize_bytes as i64);
    p.rss.set(f.rss_bytes as i64);
    if let Some(boot) = boot_time() {
        p.start.set(boot + f.start_after_boot);
    }
    p.fds.set(f.fds as i64);
    if let Some(max) = max_fds() {
        p.max_fds.set(max);
    }
}

/// The soft open-file limit, as Prometheus's process collector reports
/// it (so `process_open_fds / process_max_fds` alerts work alike for Go
/// and loopp processes); None when unlimited.
fn max_fds() -> Option<i64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    i64::try_from(lim.rlim_cur).ok()
}

fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Everything in the registry, in the Prometheus text format, with its
/// content type.
pub fn encode() -> (Vec<u8>, String) {
    refresh_process();
    LazyLock::force(&SERVER);
    LazyLock::force(&CLIENT);
    LazyLock::force(&HTTP);
    LazyLock::force(&LANES);
    let encoder = TextEncoder::new();
    let mut buf = Vec::new();
    let _ = encoder.encode(&prometheus::gather(), &mut buf);
    (buf, encoder.format_type().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_process_server_and_client_metrics() {
        server_begin("/t.S/M");
        server_call().finish("OK");
        client_observe("p", "/t.S/M", "DEADLINE_EXCEEDED", Duration::from_millis(3));
        let (body, ctype) = encode();
        let text = String::from_utf8(body).unwrap();
        assert!(ctype.starts_with("text/plain"), "{ctype}");
        for want in [
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"/t.S/M\"} 1",
            "loopp_rpc_deadline_exceeded_total{method=\"/t.S/M\",plugin=\"p\"} 1",
            "loopp_rpc_duration_seconds_bucket{method=\"/t.S/M\",plugin=\"p\",le=\"0.005\"} 1",
        ] {
            assert!(text.contains(want), "missing {want:?}");
        }
    }
}
