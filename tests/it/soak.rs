//! The soak: the default job plus 100 feeds, both plugins as LOOPPs, for
//! `LOOPP_SOAK_SECS` (60 here and in CI; `make soak` runs 600), sampling
//! each process's RSS, threads and fds every `LOOPP_SOAK_SAMPLE_SECS` (5; 10
//! for `make soak`). After a warm-up (the first minute, or the first third
//! of a shorter run), the least of the last third of the samples may not
//! exceed the least of the first third by more than 10%, for any figure
//! of any process; no plugin may restart; the default feed keeps
//! transmitting. The least, not the median: what a process holds when its
//! load is lightest is what a leak raises. Threads are counted outside the
//! elastic pools (`loopp-pool`, gRPC's), which are printed apart: a pool
//! follows the calls of its last 10 s (its threads end after 10 s idle,
//! within configured bounds), and a burst of slow rounds late in a run once
//! raised the median plugin's threads from 39 to 60 with nothing leaked;
//! gRPC's executors grow from 1 to 4 threads on 2 cores under load and keep
//! them, which once read as the median's threads growing 16 -> 18. Every sample is printed as a JSON line
//! (`--no-capture`).
//!
//! Run it on the release build, as `make test` and `make soak` do: 100
//! feeds on unoptimized binaries take both cores of a 2-core machine, and
//! then measure the machine, not loopp.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::proc::*;
use crate::util::*;

const EXTRA_FEEDS: usize = 100;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn job(data: &Path) -> String {
    let mut feeds = vec![
        r#"{"name": "demo-usd", "relay": "devchain", "median": "median",
         "source": {"type": "randomwalk", "seed": 1, "start": 300000, "step_ppm": 2000},
         "oracles": 4, "f": 1, "interval": "1s", "alpha_ppb": 1000000, "delta_c": "10s"}"#
            .to_string(),
    ];
    for i in 0..EXTRA_FEEDS {
        feeds.push(format!(
            r#"{{"name": "soak-{i}", "relay": "devchain", "median": "median",
                 "source": {{"type": "randomwalk", "seed": {}, "start": 300000, "step_ppm": 2000}},
                 "oracles": 4, "f": 1, "interval": "1s", "alpha_ppb": 1000000, "delta_c": "10s"}}"#,
            i + 2
        ));
    }
    format!(
        r#"{{"plugins": [{{"name": "devchain", "kind": "relayer"}}, {{"name": "median", "kind": "median"}}],
            "http": {{"listen": "127.0.0.1:0"}}, "data_dir": {:?}, "feeds": [{}]}}"#,
        data.display().to_string(),
        feeds.join(",")
    )
}

#[test]
fn soak_the_default_job_and_100_feeds_hold_steady() {
    let secs = knob("LOOPP_SOAK_SECS", 60);
    let every = Duration::from_secs(knob("LOOPP_SOAK_SAMPLE_SECS", 5).max(1));
    let warmup = Duration::from_secs((secs / 3).min(60));
    let sandbox = Sandbox::new("soak");
    let data = sandbox.dir.join("data");
    let jobfile = sandbox.dir.join("job.json");
    std::fs::write(&jobfile, job(&data)).unwrap();
    let mut node = NodeProcess::start(&jobfile, &loopp_env(&sandbox.dir));
    let mut pids = std::collections::BTreeMap::new();
    while pids.len() < 2 {
        let line = node.wait_line(Duration::from_secs(30), |l| running_line(l).is_some());
        let (name, pid) = running_line(&line).unwrap();
        pids.insert(name, pid);
    }
    let procs: Vec<(String, u32)> = std::iter::once(("node".to_string(), node.pid()))
        .chain(pids.iter().map(|(n, p)| (n.clone(), *p)))
        .collect();
    let chain = data.join("devchain").join("demo-usd.jsonl");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);

    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    // (process, figure) -> samples after the warm-up.
    let mut samples: std::collections::BTreeMap<(String, &str), Vec<f64>> = Default::default();
    let mut chain_at_warmup = None;
    let mut next = t0 + every;
    while next <= end {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += every;
        let t = t0.elapsed().as_secs();
        for (name, pid) in &procs {
            assert!(
                alive(*pid),
                "{name} (pid {pid}) is gone at {t} s: a plugin restarted or the node died"
            );
            let f = figures(*pid);
            // The elastic pools: loopp's, and gRPC's (see `Figures`) and
            // its executors.
            let pooled: usize = thread_names(*pid)
                .iter()
                .filter(|(n, _)| {
                    n.as_str() == "loopp-pool"
                        || GRPC_POOLS.contains(&n.as_str())
                        || GRPC_EXECUTORS.contains(&n.as_str())
                })
                .map(|(_, c)| c)
                .sum();
            let own = f.threads.saturating_sub(pooled);
            println!(
                r#"{{"soak_sample":{t},"process":"{name}","rss_kib":{},"threads":{},"pool_threads":{pooled},"fds":{}}}"#,
                f.rss_kib, own, f.fds
            );
            if t0.elapsed() >= warmup {
                for (what, v) in [
                    ("rss_kib", f.rss_kib as f64),
                    ("threads", own as f64),
                    ("fds", f.fds as f64),
                ] {
                    samples.entry((name.clone(), what)).or_default().push(v);
                }
            }
        }
        if t0.elapsed() >= warmup && chain_at_warmup.is_none() {
            chain_at_warmup = Some(size(&chain));
        }
        // Drain the log, so a restart is seen.
        while let Ok(line) = node.lines.try_recv() {
            assert!(
                !line.contains("restarting in"),
                "a plugin restarted during the soak: {line}"
            );
            node.seen.push(line);
        }
    }
    let mut grew = Vec::new();
    for ((name, what), v) in &samples {
        assert!(
            v.len() >= 3,
            "too few samples after the warm-up: {}",
            v.len()
        );
        let third = v.len() / 3;
        let least = |w: &[f64]| w.iter().copied().fold(f64::INFINITY, f64::min);
        let first = least(&v[..third.max(1)]);
        let last = least(&v[v.len() - third.max(1)..]);
        let growth = (last - first) / first.max(1.0);
        println!(
            r#"{{"soak":"{name}","figure":"{what}","first_third_least":{first},"last_third_least":{last},"growth":{growth:.4},"met":{}}}"#,
            growth <= 0.10
        );
        if growth > 0.10 {
            grew.push(format!(
                "{name} {what}: {first} -> {last} (+{:.1}%)",
                growth * 100.0
            ));
        }
    }
    assert!(
        size(&chain) > chain_at_warmup.unwrap_or(0),
        "the default feed transmitted nothing after the warm-up"
    );
    assert!(grew.is_empty(), "grew by more than 10%: {grew:?}");
    node.stop();
}
