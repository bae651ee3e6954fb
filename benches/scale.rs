//! `make bench`, scale part: N feeds on one node (the default job's feed
//! settings: 4 oracles, 1 s interval, random walk), with both plugins as
//! LOOPPs and in-process, in the same run, for N in LOOPP_BENCH_SCALE_N
//! (`1,100,300,1000`), each measured for LOOPP_BENCH_SCALE_SECS (20) after
//! every feed has finished a round (at most 120 s of set-up). Up to
//! LOOPP_BENCH_SCALE_PER_FEED_MAX feeds (100), also as LOOPPs with a median
//! process per feed (`processes: "per_feed"`), compared with the shared one.
//! Every mode runs the job's default `round_slack` (`auto`: rounds start on
//! ticks that gather about 8 rounds each, 50 ms at most; off below 40
//! feeds). From 40 up to LOOPP_BENCH_SCALE_SLACK_MAX feeds (1000), also as
//! LOOPPs with `round_slack` 0s, rounds started as each is due, compared
//! with the default (CPU per round lower with the ticks: `met`; the round
//! time does not count the up to a tick a round starts late). Up to
//! LOOPP_BENCH_SCALE_GO_MAX feeds (1), also with Go's median plugin
//! (`tests/go/median`: go-plugin 1.0.1 and grpc-go, as a Go Chainlink
//! median LOOPP) as the node's median LOOPP, loopp's devchain beside it: what
//! the same rounds cost with a Go plugin (reported, no target).
//!
//! Per N and mode, one JSON line: rounds/s, missed rounds (expected at the
//! interval, less those that ended with a report or a decision not to
//! report), round p50/p99 (from the node's
//! `loopp_feed_round_duration_seconds` histogram, bucket upper bounds), and
//! per program CPU (share of one core), RSS, threads and fds (summed over
//! its processes). Correctness at
//! every N: every chain file parses, every transmission is within the
//! contract's bounds, and no (epoch, round) is transmitted twice.
//!
//! Then the targets of issue 12, with `met`: at the largest N with both
//! plugins as LOOPPs, under 1% of rounds missed and p99 under 250 ms; memory
//! per feed (RSS growth from the smallest to the largest N, over the feeds
//! added) at most 100 KB in each process; threads and fds not growing with
//! N (at most 16 more at the largest N than at the smallest); CPU per round
//! of LOOPP within 3x of in-process plus the floor of its RPCs (RPCs per
//! round, served by the node and its plugins, times the CPU of a one-byte round trip over
//! a unix socket pair, measured first in the same run). A comparison with
//! a run whose feeds were not all set up within the 120 s is never `met`.

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/floor.rs"]
mod floor;
#[path = "common/goprograms.rs"]
mod goprograms;
use goprograms::go_program;
#[path = "../tests/common/programs.rs"]
mod programs;
use programs::{devchain, median, node};

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

fn knob(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A process's CPU seconds, RSS (KiB), threads and fds.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    cpu_s: f64,
    rss_kib: u64,
    threads: u64,
    fds: u64,
    /// Threads of gRPC's event-engine pool (the C core's own, elastic: it
    /// grows while work waits and ends spare threads after 30 s idle).
    grpc_pool: u64,
    /// Processes summed up (a median per feed).
    processes: u64,
}

fn figures(pid: u32) -> Figures {
    let f = loopp::goplugin::metrics::process_figures(Some(pid)).unwrap_or_default();
    let grpc_pool = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("event_engine"))
                })
                .count() as u64
        })
        .unwrap_or(0);
    Figures {
        // In ns (the process's CPU clock), not in /proc's 10 ms ticks.
        cpu_s: cpu::of(pid).map_or(f.cpu_seconds, |d| d.as_secs_f64()),
        rss_kib: f.rss_bytes / 1024,
        threads: f.threads,
        fds: f.fds,
        grpc_pool,
        processes: 1,
    }
}

/// The node's children that are plugins: (program name, pid); a program
/// may run as many processes (a median per feed).
fn plugins_of(node: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid != Some(node) {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let name = comm.trim().trim_start_matches("loopp-").to_string();
        out.push((name, pid));
    }
    out
}

/// The node's `/metrics` page.
fn scrape(port: u16) -> String {
    get(port, "/metrics")
}

/// A page of the node's HTTP server.
fn get(port: u16, path: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .and_then(|mut r| r.body_mut().with_config().limit(256 << 20).read_to_string())
        .unwrap_or_default()
}

/// RPCs served so far by the node and every LOOPP (each RPC is served by
/// exactly one of them; a median plugin calls a forwarded provider on the
/// relayer, so the node is not at one end of every RPC): the sum of their
/// `grpc_server_handled_total`, the plugins' read through the node's
/// metrics proxy, as `/discovery` lists them.
fn rpcs_served(port: u16) -> f64 {
    let handled = |page: &str| -> f64 {
        page.lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let groups: Vec<serde_json::Value> =
        serde_json::from_str(&get(port, "/discovery")).unwrap_or_default();
    groups
        .iter()
        .filter_map(|g| g["labels"]["__metrics_path__"].as_str())
        .map(|path| handled(&get(port, path)))
        .sum()
}

/// What the round metrics say: rounds by outcome (all feeds), the feeds
/// that finished a round, and the round-time histogram (upper bound → count).
#[derive(Default)]
struct Rounds {
    by_outcome: BTreeMap<String, f64>,
    feeds_done: usize,
    buckets: Vec<(f64, f64)>,
}

fn rounds(page: &str) -> Rounds {
    let mut r = Rounds::default();
    let mut feeds = HashSet::new();
    for line in page.lines() {
        let value = || line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(rest) = line.strip_prefix("loopp_feed_rounds_total{") {
            let label = |k: &str| {
                rest.split(&format!("{k}=\"")[..])
                    .nth(1)
                    .and_then(|v| v.split('"').next())
                    .unwrap_or("")
                    .to_string()
            };
            let (feed, outcome) = (label("feed"), label("outcome"));
            let v = value().unwrap_or(0.0);
            if outcome == "transmitted" || outcome == "no_report" {
                feeds.insert(feed);
            }
            *r.by_outcome.entry(outcome).or_default() += v;
        } else if let Some(rest) =
            line.strip_prefix("loopp_feed_round_duration_seconds_bucket{le=\"")
        {
            let le = rest.split('"').next().unwrap_or("");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            r.buckets.push((le, value().unwrap_or(0.0)));
        }
    }
    r.feeds_done = feeds.len();
    r
}

/// The upper bound of the bucket holding quantile `q` of what was counted
/// between `a` and `b`.
fn quantile(a: &Rounds, b: &Rounds, q: f64) -> f64 {
    let before: BTreeMap<u64, f64> = a.buckets.iter().map(|(le, c)| (le.to_bits(), *c)).collect();
    let counts: Vec<(f64, f64)> = b
        .buckets
        .iter()
        .map(|(le, c)| (*le, c - before.get(&le.to_bits()).copied().unwrap_or(0.0)))
        .collect();
    let total = counts.last().map(|(_, c)| *c).unwrap_or(0.0);
    if total <= 0.0 {
        return f64::NAN;
    }
    counts
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
        .unwrap_or(f64::INFINITY)
}

fn job(n: usize, mode: Mode, data: &Path) -> String {
    let feeds: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"name": "f{i}", "relay": "devchain", "median": "median",
                 "source": {{"type": "randomwalk", "seed": {}, "start": 300000, "step_ppm": 2000}},
                 "oracles": 4, "f": 1, "interval": "1s", "alpha_ppb": 1000000, "delta_c": "10s"}}"#,
                i + 1
            )
        })
        .collect();
    format!(
        r#"{{"plugins": [{{"name": "devchain", "kind": "relayer"}}, {{"name": "median", "kind": "median", "processes": "{}"}}],
            "http": {{"listen": "127.0.0.1:0"}}, "data_dir": {:?}, {}"feeds": [{}]}}"#,
        if mode == Mode::PerFeed {
            "per_feed"
        } else {
            "shared"
        },
        data.display().to_string(),
        if mode == Mode::Due {
            r#""round_slack": "0s", "#
        } else {
            ""
        },
        feeds.join(",")
    )
}

/// Every chain file: (transmissions, invalid, duplicated).
fn check_chains(dir: &Path) -> (u64, u64, u64) {
    use loopp::devchain::store::Record;
    let (mut tx, mut invalid, mut dup) = (0, 0, 0);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let bytes = std::fs::read(e.path()).unwrap_or_default();
        let mut bounds = None;
        let mut seen = HashSet::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Record>(line) {
                Ok(Record::Config(c)) => bounds = Some((c.min_answer, c.max_answer)),
                Ok(Record::Transmission(t)) => {
                    tx += 1;
                    let within = bounds.is_some_and(|(lo, hi)| lo <= t.median && t.median <= hi);
                    if !within {
                        invalid += 1;
                    }
                    if !seen.insert((t.epoch, t.round)) {
                        dup += 1;
                    }
                }
                Err(_) => invalid += 1,
            }
        }
    }
    (tx, invalid, dup)
}

/// How the node runs its plugins.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Both as LOOPPs, one median process for all feeds (the default).
    Loopp,
    /// Both as LOOPPs, a median process per feed (`processes: "per_feed"`,
    /// as a Chainlink node runs one per job).
    PerFeed,
    /// Both as LOOPPs, rounds started as each is due (`round_slack` 0s).
    Due,
    /// Both in the node's process.
    InProcess,
    /// Both as LOOPPs, the median plugin Go's (`tests/go/median`).
    GoMedian,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Loopp => "loopp",
            Mode::PerFeed => "loopp-per-feed",
            Mode::Due => "loopp-due",
            Mode::InProcess => "in-process",
            Mode::GoMedian => "loopp-go-median",
        }
    }
}

/// The `round_slack` the node sets itself for the job of `n` feeds.
fn auto_slack(n: usize) -> Duration {
    loopp::node::config::NodeConfig::from_json(
        "scale",
        &job(n, Mode::Loopp, Path::new("data")),
        &|_| None,
    )
    .unwrap_or_else(|e| panic!("the scale job of {n} feeds: {e}"))
    .round_slack
}

struct Run {
    n: usize,
    /// Feeds that finished a round before measuring (all: a valid run).
    ready: usize,
    mode: Mode,
    missed_ratio: f64,
    p50_s: f64,
    p99_s: f64,
    cpu_per_round_ms: f64,
    rpcs_per_round: f64,
    procs: BTreeMap<String, Figures>,
}

/// The bench's scratch directory, removed however the bench ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct NodeChild(Child);

impl Drop for NodeChild {
    fn drop(&mut self) {
        // SAFETY: signalling the node this bench started.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(n: usize, mode: Mode, secs: u64, dir: &Path) -> Run {
    let loopp = mode != Mode::InProcess;
    let data = dir.join(format!("data-{n}-{}", mode.name()));
    let jobfile = dir.join(format!("job-{n}.json"));
    std::fs::write(&jobfile, job(n, mode, &data)).unwrap();
    let mut cmd = Command::new(node());
    cmd.args(["run", "--config"])
        .arg(&jobfile)
        // The HTTP line, without a line per round.
        .env("RUST_LOG", "warn,loopp::node=info,loopp::node::feeds=warn")
        .env("PLUGIN_UNIX_SOCKET_DIR", dir)
        // go-plugin 1.0.1 (Go's median plugin) makes its sockets in TMPDIR
        // and leaves them: in the scratch directory, not in /tmp.
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if loopp {
        cmd.env("CL_DEVCHAIN_CMD", devchain());
        if mode == Mode::GoMedian {
            cmd.env("CL_MEDIAN_CMD", go_program("gomedian"));
        } else {
            cmd.env("CL_MEDIAN_CMD", median());
        }
    }
    let mut child = cmd.spawn().expect("loopp-node");
    // The HTTP port from the log; the rest of the log is drained.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = crossbeam_channel::bounded::<u16>(1);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("HTTP on http://127.0.0.1:").nth(1) {
                if let Some(p) = rest.split(' ').next().and_then(|p| p.parse().ok()) {
                    let _ = tx.try_send(p);
                }
            }
        }
    });
    let node = NodeChild(child);
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the node's HTTP port");
    let pid = node.0.id();
    // Set-up: every feed has finished a round.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut before = rounds(&scrape(port));
    while before.feeds_done < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        before = rounds(&scrape(port));
    }
    let ready = before.feeds_done;
    let rpcs_before = rpcs_served(port);
    let mut pids = plugins_of(pid);
    pids.push(("node".into(), pid));
    let cpu0: Vec<f64> = pids.iter().map(|(_, p)| figures(*p).cpu_s).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let after = rounds(&scrape(port));
    let took = t0.elapsed().as_secs_f64();
    // Per program, the sum over its processes.
    let mut procs: BTreeMap<String, Figures> = BTreeMap::new();
    for ((k, p), c0) in pids.iter().zip(&cpu0) {
        let f = figures(*p);
        let sum = procs.entry(k.clone()).or_default();
        sum.cpu_s += (f.cpu_s - c0) / took;
        sum.rss_kib += f.rss_kib;
        sum.threads += f.threads;
        sum.fds += f.fds;
        sum.grpc_pool += f.grpc_pool;
        sum.processes += 1;
    }
    // After the figures: reading every plugin's page costs CPU too.
    let rpcs_after = rpcs_served(port);
    drop(node);
    let delta = |k: &str| {
        after.by_outcome.get(k).copied().unwrap_or(0.0)
            - before.by_outcome.get(k).copied().unwrap_or(0.0)
    };
    let done = delta("transmitted") + delta("no_report");
    let all: f64 = after.by_outcome.keys().map(|k| delta(k)).sum();
    let expected = n as f64 * took;
    let missed = (expected - done).max(0.0);
    let (p50, p99) = (
        quantile(&before, &after, 0.5),
        quantile(&before, &after, 0.99),
    );
    let (tx, invalid, dup) = check_chains(&data.join("devchain"));
    let cpu_total: f64 = procs.values().map(|f| f.cpu_s).sum();
    let cpu_per_round_ms = cpu_total * took / done.max(1.0) * 1e3;
    let rpcs_per_round = (rpcs_after - rpcs_before) / all.max(1.0);
    let mut line = json!({
        "bench": "scale", "feeds": n, "mode": mode.name(),
        "ready_feeds": ready, "secs": took, "rounds_per_s": all / took, "done_rounds": done,
        "missed_rounds": missed, "missed_ratio": missed / expected.max(1.0),
        "round_p50_s": p50, "round_p99_s": p99, "cpu_per_round_ms": cpu_per_round_ms,
        "rpcs_per_round": rpcs_per_round,
        "chain_transmissions": tx, "chain_invalid": invalid, "chain_duplicates": dup,
        "correct": invalid == 0 && dup == 0,
    });
    for (k, f) in &procs {
        line[k] = json!({"cpu_cores": f.cpu_s, "rss_kib": f.rss_kib, "threads": f.threads, "fds": f.fds, "processes": f.processes});
    }
    println!("{line}");
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_file(&jobfile);
    Run {
        n,
        ready,
        mode,
        missed_ratio: missed / expected.max(1.0),
        p50_s: p50,
        p99_s: p99,
        cpu_per_round_ms,
        rpcs_per_round,
        procs,
    }
}

fn main() {
    let ns: Vec<usize> = knob("LOOPP_BENCH_SCALE_N", "1,100,300,1000")
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let secs: u64 = knob("LOOPP_BENCH_SCALE_SECS", "20").parse().unwrap_or(20);
    // A median process per feed is measured up to this many feeds (each is
    // a process of ~10 MB).
    let per_feed_max: usize = knob("LOOPP_BENCH_SCALE_PER_FEED_MAX", "100")
        .parse()
        .unwrap_or(100);
    // Rounds started as each is due (`round_slack` 0s) are measured up to
    // this many feeds, where the default starts them on ticks.
    let slack_max: usize = knob("LOOPP_BENCH_SCALE_SLACK_MAX", "1000")
        .parse()
        .unwrap_or(1000);
    // Go's median plugin is measured up to this many feeds.
    let go_max: usize = knob("LOOPP_BENCH_SCALE_GO_MAX", "1").parse().unwrap_or(1);
    let floor_us = floor::cpu_us(20_000);
    println!(
        "{}",
        json!({"bench": "scale", "floor": "unix-socket round trip", "cpu_us": floor_us})
    );
    let dir = Scratch(std::env::temp_dir().join(format!("loopp-scale-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let mut runs = Vec::new();
    for &n in &ns {
        for mode in [Mode::Loopp, Mode::InProcess] {
            runs.push(run(n, mode, secs, &dir.0));
        }
        if n <= per_feed_max {
            runs.push(run(n, Mode::PerFeed, secs, &dir.0));
        }
        if !auto_slack(n).is_zero() && n <= slack_max {
            runs.push(run(n, Mode::Due, secs, &dir.0));
        }
        if n <= go_max {
            runs.push(run(n, Mode::GoMedian, secs, &dir.0));
        }
    }
    drop(dir);
    let (Some(&lo), Some(&hi)) = (ns.iter().min(), ns.iter().max()) else {
        return;
    };
    let get = |n: usize, mode: Mode| runs.iter().find(|r| r.n == n && r.mode == mode);
    if let Some(top) = get(hi, Mode::Loopp) {
        println!(
            "{}",
            json!({"compare": "scale_missed_rounds", "feeds": hi, "ratio": top.missed_ratio, "target": 0.01, "met": top.missed_ratio < 0.01})
        );
        println!(
            "{}",
            json!({"compare": "scale_round_p99", "feeds": hi, "s": top.p99_s, "target_s": 0.25, "met": top.p99_s < 0.25})
        );
    }
    if hi > lo {
        for mode in [Mode::Loopp, Mode::InProcess] {
            let (Some(a), Some(b)) = (get(lo, mode), get(hi, mode)) else {
                continue;
            };
            // Figures of a run whose feeds were not all set up say nothing
            // of what a feed costs.
            let whole = a.ready == a.n && b.ready == b.n;
            for (name, fa) in &a.procs {
                let Some(fb) = b.procs.get(name) else {
                    continue;
                };
                let per_feed_kb =
                    (fb.rss_kib as f64 - fa.rss_kib as f64) * 1.024 / (hi - lo) as f64;
                let mode = mode.name();
                println!(
                    "{}",
                    json!({"compare": "scale_memory_per_feed", "mode": mode, "process": name, "kb": per_feed_kb, "target_kb": 100.0, "all_feeds_set_up": whole, "met": whole && per_feed_kb <= 100.0})
                );
                println!(
                    "{}",
                    json!({"compare": "scale_threads_fds", "mode": mode, "process": name,
                           "threads": [fa.threads, fb.threads], "fds": [fa.fds, fb.fds],
                           "all_feeds_set_up": whole,
                           "met": whole && fb.threads <= fa.threads + 16 && fb.fds <= fa.fds + 16})
                );
            }
        }
    }
    for &n in &ns {
        if let (Some(l), Some(i)) = (get(n, Mode::Loopp), get(n, Mode::InProcess)) {
            // Issue 12: within 3x of the in-process figure plus the floor
            // of the RPCs a LOOPP round makes.
            let floor_ms = l.rpcs_per_round * floor_us / 1e3;
            let target_ms = 3.0 * (i.cpu_per_round_ms + floor_ms);
            let whole = l.ready == l.n && i.ready == i.n;
            println!(
                "{}",
                json!({"compare": "scale_cpu_per_round", "feeds": n, "loopp_ms": l.cpu_per_round_ms,
                       "in_process_ms": i.cpu_per_round_ms, "ratio": l.cpu_per_round_ms / i.cpu_per_round_ms,
                       "rpcs_per_round": l.rpcs_per_round, "floor_ms": floor_ms, "target_ms": target_ms,
                       "all_feeds_set_up": whole, "met": whole && l.cpu_per_round_ms <= target_ms})
            );
        }
    }
    // The same rounds with Go's median plugin: the whole (node, devchain,
    // median) and the median process alone, per round.
    for &n in &ns {
        if let (Some(l), Some(g)) = (get(n, Mode::Loopp), get(n, Mode::GoMedian)) {
            let per_round = |r: &Run, k: &str| {
                r.procs.get(k).map_or(0.0, |f| f.cpu_s) * r.cpu_per_round_ms
                    / r.procs.values().map(|f| f.cpu_s).sum::<f64>().max(1e-12)
            };
            let whole = l.ready == l.n && g.ready == g.n;
            println!(
                "{}",
                json!({"compare": "scale_cpu_per_round_vs_go_median", "feeds": n,
                       "loopp_ms": l.cpu_per_round_ms, "with_go_median_ms": g.cpu_per_round_ms,
                       "ratio": l.cpu_per_round_ms / g.cpu_per_round_ms,
                       "median_ms": per_round(l, "median"), "go_median_ms": per_round(g, "gomedian"),
                       "median_ratio": per_round(l, "median") / per_round(g, "gomedian"),
                       "all_feeds_set_up": whole, "faster": l.cpu_per_round_ms < g.cpu_per_round_ms})
            );
        }
    }
    // What `Node::start` and the job check count a job's open files as
    // (node/openfiles.rs) against what each process holds: the count must
    // not fall short, or a job that passes the check would run out. The
    // LOOPPs here are loopp's own links, so they route.
    for &n in &ns {
        for (mode, load) in [
            (
                Mode::Loopp,
                loopp::node::openfiles::NodeLoad {
                    loopps: 2,
                    routed_feeds: n,
                    ..Default::default()
                },
            ),
            (
                Mode::PerFeed,
                loopp::node::openfiles::NodeLoad {
                    loopps: n + 1,
                    routed_feeds: n,
                    ..Default::default()
                },
            ),
            (
                Mode::InProcess,
                loopp::node::openfiles::NodeLoad {
                    in_process_feeds: n,
                    ..Default::default()
                },
            ),
        ] {
            let Some(r) = get(n, mode) else { continue };
            for (name, f) in &r.procs {
                let counted = match name.as_str() {
                    "node" => load.need(),
                    // Per feed: n processes of one feed each.
                    "median" if mode == Mode::PerFeed => {
                        loopp::node::openfiles::plugin_need("median", 1, true) * n as u64
                    }
                    "median" => loopp::node::openfiles::plugin_need("median", n, true),
                    "devchain" => loopp::node::openfiles::plugin_need("relayer", n, true),
                    _ => continue,
                };
                println!(
                    "{}",
                    json!({"compare": "scale_fds_within_the_checked_need", "feeds": n, "mode": mode.name(),
                           "process": name, "fds": f.fds, "counted": counted,
                           "all_feeds_set_up": r.ready == r.n, "met": f.fds <= counted})
                );
            }
        }
    }
    // Threads against the bounds the README states (Scale), from the
    // job's settings, whatever the number of feeds: the node's own (about
    // 48 with gRPC's fixed ones and HTTP's workers), 8 per LOOPP, the feed
    // timer and the deadline timer, `feed_threads` workers, pool threads
    // for a round's calls that can only block (in-process: at most a
    // source's or the contract's three per oracle per round in progress;
    // none to a LOOPP, whose calls are futures) and for what it serves
    // each LOOPP (`rpc.concurrent_calls`); a plugin's own (about 32) and
    // what it serves at once, at most what the node sends it (a round
    // thread's calls to every oracle, and the median's re-served calls)
    // and at most LOOPP_MAX_CONCURRENT_CALLS. gRPC's event-engine pool is
    // the C core's and elastic: printed apart, not bounded here.
    {
        let feed_threads = loopp::node::feeds::scheduler::DEFAULT_THREADS as u64;
        let oracles = 4u64;
        let calls = loopp::goplugin::host::DEFAULT_CONCURRENT_CALLS as u64;
        let plugin_cap = loopp::goplugin::rpc::DEFAULT_CONCURRENT_CALLS as u64;
        let rounds = 2 + feed_threads;
        let blocking_parts = 3 * oracles * feed_threads;
        for &n in &ns {
            for mode in [Mode::Loopp, Mode::InProcess] {
                let Some(r) = get(n, mode) else { continue };
                for (name, f) in &r.procs {
                    let bound = match (mode, name.as_str()) {
                        (Mode::Loopp, "node") => 48 + 8 * 2 + rounds + 2 * calls,
                        (Mode::InProcess, "node") => 48 + rounds + blocking_parts,
                        (_, "median") => 32 + (feed_threads * oracles).min(plugin_cap),
                        (_, "devchain") => 32 + (feed_threads * oracles + calls).min(plugin_cap),
                        _ => continue,
                    };
                    let own = f.threads - f.grpc_pool;
                    println!(
                        "{}",
                        json!({"compare": "scale_threads_within_the_stated_bound", "feeds": n,
                               "mode": mode.name(), "process": name, "threads": own,
                               "grpc_pool_threads": f.grpc_pool, "bound": bound,
                               "all_feeds_set_up": r.ready == r.n, "met": own <= bound})
                    );
                }
            }
        }
    }
    // The two LOOPP modes side by side: what a median process per feed
    // costs against one for all.
    for &n in &ns {
        if let (Some(shared), Some(own)) = (get(n, Mode::Loopp), get(n, Mode::PerFeed)) {
            let median = |r: &Run| r.procs.get("median").copied().unwrap_or_default();
            let all_rss = |r: &Run| r.procs.values().map(|f| f.rss_kib).sum::<u64>();
            println!(
                "{}",
                json!({"compare": "scale_median_per_feed_vs_shared", "feeds": n,
                       "cpu_per_round_ms": [shared.cpu_per_round_ms, own.cpu_per_round_ms],
                       "missed_ratio": [shared.missed_ratio, own.missed_ratio],
                       "round_p99_s": [shared.p99_s, own.p99_s],
                       "median_processes": [median(shared).processes, median(own).processes],
                       "median_rss_kib": [median(shared).rss_kib, median(own).rss_kib],
                       "all_rss_kib": [all_rss(shared), all_rss(own)],
                       "all_feeds_set_up": shared.ready == shared.n && own.ready == own.n})
            );
        }
    }
    // Rounds started as each is due, and on the default's ticks.
    for &n in &ns {
        if let (Some(due), Some(ticks)) = (get(n, Mode::Due), get(n, Mode::Loopp)) {
            let whole = due.ready == due.n && ticks.ready == ticks.n;
            println!(
                "{}",
                json!({"compare": "scale_round_slack", "feeds": n, "round_slack_ms": [0, auto_slack(n).as_millis()],
                       "cpu_per_round_ms": [due.cpu_per_round_ms, ticks.cpu_per_round_ms],
                       "ratio": ticks.cpu_per_round_ms / due.cpu_per_round_ms.max(1e-9),
                       "missed_ratio": [due.missed_ratio, ticks.missed_ratio],
                       "round_p50_s": [due.p50_s, ticks.p50_s],
                       "round_p99_s": [due.p99_s, ticks.p99_s],
                       "all_feeds_set_up": whole,
                       "met": whole && ticks.cpu_per_round_ms < due.cpu_per_round_ms})
            );
        }
    }
}
