//! Node processes and their figures: `loopp-node run` as a child with its
//! log read line by line, and threads, fds and RSS from /proc.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::util::{devchain, median, node};

/// A `loopp-node run` process and its stderr, line by line.
pub struct NodeProcess {
    pub child: Child,
    pub lines: Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

/// The environment that runs the default job's plugins (devchain, median)
/// as LOOPPs, with their sockets under `sockets`.
pub fn loopp_env(sockets: &Path) -> Vec<(String, String)> {
    vec![
        ("CL_DEVCHAIN_CMD".into(), devchain().into()),
        ("CL_MEDIAN_CMD".into(), median().into()),
        (
            "PLUGIN_UNIX_SOCKET_DIR".into(),
            sockets.display().to_string(),
        ),
    ]
}

/// Sets `resource` (soft and hard) to `n` in the process `cmd` starts.
pub fn set_rlimit(cmd: &mut Command, resource: libc::__rlimit_resource_t, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
    unsafe {
        cmd.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(resource, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

impl NodeProcess {
    /// Starts `loopp-node run --config JOB` with `env` added.
    pub fn start(job: &Path, env: &[(String, String)]) -> NodeProcess {
        NodeProcess::start_program(node(), job, env)
    }

    /// [`NodeProcess::start`] with another `loopp-node` executable.
    pub fn start_program(program: &str, job: &Path, env: &[(String, String)]) -> NodeProcess {
        NodeProcess::spawn(program, job, env, None)
    }

    /// [`NodeProcess::start`] under an open-file limit (soft and hard).
    pub fn start_with_open_files(
        job: &Path,
        env: &[(String, String)],
        open_files: u64,
    ) -> NodeProcess {
        NodeProcess::spawn(node(), job, env, Some(open_files))
    }

    fn spawn(
        program: &str,
        job: &Path,
        env: &[(String, String)],
        open_files: Option<u64>,
    ) -> NodeProcess {
        let mut cmd = Command::new(program);
        if let Some(n) = open_files {
            set_rlimit(&mut cmd, libc::RLIMIT_NOFILE, n);
        }
        cmd.args(["run", "--config"])
            .arg(job)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start loopp-node");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        NodeProcess {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads lines until one satisfies `f` (returned) or `timeout` passes
    /// (panics with the tail of what the node said).
    #[track_caller]
    pub fn wait_line(&mut self, timeout: Duration, mut f: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_deadline(deadline) {
                Ok(line) => {
                    let hit = f(&line);
                    self.seen.push(line.clone());
                    if hit {
                        return line;
                    }
                }
                Err(_) => {
                    let tail = self.seen.len().saturating_sub(30);
                    panic!(
                        "no expected line within {timeout:?}; node said (last 30 lines):\n{}",
                        self.seen[tail..].join("\n")
                    );
                }
            }
        }
    }

    /// Waits for the node's "HTTP on" line (bounded) and returns its port.
    #[track_caller]
    pub fn wait_http_port(&mut self, timeout: Duration) -> u16 {
        const ON: &str = "HTTP on http://127.0.0.1:";
        let line = self.wait_line(timeout, |l| l.contains(ON));
        line.split(ON)
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"))
    }

    /// SIGTERM, then a bounded wait for the exit.
    pub fn stop(mut self) {
        // SAFETY: signalling the node this test started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("the node did not stop within 10 s of SIGTERM");
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process's threads, open fds and resident memory (KiB), from /proc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figures {
    /// All threads.
    pub threads: usize,
    /// The gRPC C core's elastic pools' threads (of `threads`): the event
    /// engine's pool grows under load and ends a spare thread after 30 s
    /// without a wake-up; timer threads are never ended once made ("the number of timer
    /// threads is always increasing", grpc's timer_manager.cc). Their number
    /// follows peak concurrency, not the number of crashes.
    pub grpc_pool_threads: usize,
    pub fds: usize,
    pub rss_kib: u64,
}

/// Names (as /proc shows them, cut at 15 bytes) of the gRPC core's
/// elastic pools' threads.
pub const GRPC_POOLS: [&str; 2] = ["event_engine", "grpc_global_tim"];

/// Names of the gRPC core's executors' threads: each grows from 1 up to
/// twice the cores while work waits, and keeps them (grpc's executor.cc).
pub const GRPC_EXECUTORS: [&str; 2] = ["default-executo", "resolver-execut"];

pub fn figures(pid: u32) -> Figures {
    let f = loopp::goplugin::metrics::process_figures(Some(pid))
        .unwrap_or_else(|| panic!("no process {pid}"));
    Figures {
        threads: f.threads as usize,
        grpc_pool_threads: thread_names(pid)
            .iter()
            .filter(|(n, _)| GRPC_POOLS.contains(&n.as_str()))
            .map(|(_, c)| c)
            .sum(),
        fds: f.fds as usize,
        rss_kib: f.rss_bytes / 1024,
    }
}

/// How many threads of process `pid` have each name.
pub fn thread_names(pid: u32) -> std::collections::BTreeMap<String, usize> {
    let mut names = std::collections::BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        *names.entry(comm.trim().to_string()).or_insert(0) += 1;
    }
    names
}

/// Context switches (voluntary and not) so far of the threads of process
/// `pid` whose name starts with `prefix`, summed.
pub fn switches_of_threads(pid: u32, prefix: &str) -> u64 {
    let mut sum = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        sum += status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    sum
}

/// The smallest of each figure over a few samples: what the process holds
/// when nothing is in flight (a health check or a scrape may be, at any one
/// instant).
pub fn settled_figures(pid: u32) -> Figures {
    let mut best = figures(pid);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(50));
        let f = figures(pid);
        best.threads = best.threads.min(f.threads);
        best.grpc_pool_threads = best.grpc_pool_threads.min(f.grpc_pool_threads);
        best.fds = best.fds.min(f.fds);
        best.rss_kib = best.rss_kib.min(f.rss_kib);
    }
    best
}

/// Whether `pid` is alive: there, and not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}
