//! Shared helpers: the binaries under test, a per-test sandbox directory, a log
//! capture, bounded process waits and `#[track_caller]` assertions.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use loopp::goplugin::handshake::Cookie;
use loopp::goplugin::host::HostConfig;
use loopp::node::config::NodeConfig;
use loopp::node::registry::State;
use loopp::node::Node;

pub use crate::programs::{devchain, example, median, node};

pub const TEST_PLUGIN: &str = env!("CARGO_BIN_EXE_loopp-test-plugin");

/// A fresh directory for one test's sockets, removed on drop.
pub struct Sandbox {
    pub dir: PathBuf,
}

impl Sandbox {
    pub fn new(name: &str) -> Sandbox {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        // Short: plugins' unix sockets go in here, and a socket path may
        // not exceed 107 bytes (the target dir of a --target build is deep).
        let short: String = name.chars().take(10).collect();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{short}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Sandbox { dir }
    }

    /// What is left in the sandbox (should be nothing after a kill).
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect(&self.dir, &mut out);
        out
    }
}

fn collect(dir: &Path, out: &mut Vec<String>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.path().display().to_string());
            if e.path().is_dir() {
                collect(&e.path(), out);
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A host config for `loopp-test-plugin MODE` with short, test-sized timeouts.
pub fn test_plugin(name: &str, mode: &str, sandbox: &Sandbox) -> HostConfig {
    let mut c = HostConfig::new(name, TEST_PLUGIN, Cookie::example());
    c.args = vec![mode.into()];
    c.start_timeout = Duration::from_secs(10);
    c.rpc_timeout = Duration::from_secs(2);
    c.shutdown_grace = Duration::from_secs(2);
    c.socket_dir = Some(sandbox.dir.clone());
    c
}

/// Whether a pid still exists (zombies count as gone for us only once reaped,
/// so a zombie child of ours still "exists": that is what we want to catch).
pub fn pid_exists(pid: u32) -> bool {
    // SAFETY: signal 0 checks existence only.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[track_caller]
pub fn assert_gone(pid: u32) {
    assert!(!pid_exists(pid), "process {pid} is still there");
}

/// Waits until `f` is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command to completion, killing it after `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    wait_bounded(child, timeout)
}

/// Waits for `child` with a bound; kills it and panics on timeout.
pub fn wait_bounded(child: Child, timeout: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: killing the child we started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let out = rx
                .recv_timeout(Duration::from_secs(5))
                .ok()
                .and_then(|o| o.ok());
            panic!(
                "command (pid {pid}) did not finish within {timeout:?}; stderr: {}",
                out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default()
            );
        }
    }
}

/// The Go interop binaries (`gohost`, `goplugin`), built once per test run.
pub fn go_bins() -> (PathBuf, PathBuf) {
    (go_bin("gohost"), go_bin("goplugin"))
}

/// One of the Go test programs of tests/go (built once per test process):
/// `gohost`, `goplugin`, `gorelayer`.
pub fn go_bin(name: &str) -> PathBuf {
    static BINS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BINS
        .get_or_init(|| {
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/build.sh");
            let o = run_bounded(
                Command::new("bash").arg(script).arg(&out),
                Duration::from_secs(600),
            );
            if o.status.success() {
                Ok(out)
            } else {
                Err(format!(
                    "tests/go/build.sh failed: {}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ))
            }
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"));
    dir.join(name)
}

/// A log record captured from the `log` facade.
#[derive(Clone, Debug)]
pub struct Captured {
    pub target: String,
    pub level: log::Level,
    pub message: String,
}

static RECORDS: Mutex<Vec<Captured>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        let mut v = RECORDS.lock().unwrap();
        if v.len() < 100_000 {
            v.push(Captured {
                target: r.target().to_string(),
                level: r.level(),
                message: r.args().to_string(),
            });
        }
    }
    fn flush(&self) {}
}

/// Installs the capturing logger (once) so tests can see relayed plugin logs.
pub fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// Records logged under `target` so far.
pub fn logs_for(target: &str) -> Vec<Captured> {
    RECORDS
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.target == target)
        .cloned()
        .collect()
}

/// A job of LOOPPs, each `(name, test-plugin mode)` ("in-process": none), with
/// fast supervision; `overrides` replace supervision settings.
/// Returns the config and the sandbox holding the dotenv files and sockets.
pub fn test_job(
    name: &str,
    plugins: &[(&str, &str)],
    overrides: &[(&str, &str)],
) -> (NodeConfig, Sandbox) {
    let sandbox = Sandbox::new(name);
    let mut vars: Vec<(String, String)> =
        vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())];
    let mut entries = Vec::new();
    for (pname, mode) in plugins {
        let envfile = test_plugin_env(sandbox.dir.as_path(), pname, mode);
        let prefix = loopp::node::config::env_prefix(pname);
        if *mode != "in-process" {
            vars.push((format!("{prefix}_CMD"), TEST_PLUGIN.into()));
            vars.push((format!("{prefix}_ENV"), envfile.display().to_string()));
        }
        entries.push(format!(r#"{{"name":"{pname}","kind":"example"}}"#));
    }
    let mut supervision: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        r#"{"health_interval":"200ms","health_timeout":"300ms","health_failures":1,"backoff_initial":"50ms",
            "backoff_max":"400ms","stable_after":"5s","shutdown_grace":"1s","start_timeout":"10s"}"#,
    )
    .unwrap();
    for (k, v) in overrides {
        supervision.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    let text = format!(
        r#"{{"plugins":[{}],"supervision":{},"http":{{"listen":"127.0.0.1:0"}}}}"#,
        entries.join(","),
        serde_json::Value::Object(supervision)
    );
    let config = NodeConfig::from_json(name, &text, &move |k| {
        vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    (config, sandbox)
}

/// Waits until `name` is running and returns its pid.
#[track_caller]
pub fn running_pid(node: &Node, name: &str) -> u32 {
    let mut pid = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            pid = node
                .registry()
                .get(name)
                .filter(|s| s.state == State::Running)
                .and_then(|s| s.pid);
            pid.is_some()
        }),
        "{name} never ran: {:?}",
        node.registry().get(name)
    );
    pid.unwrap()
}

/// `(name, pid)` from a node log line "plugin NAME running (pid PID, ...".
pub fn running_line(line: &str) -> Option<(String, u32)> {
    let rest = line.split("plugin ").nth(1)?;
    let (name, rest) = rest.split_once(" running (pid ")?;
    let pid = rest.split(',').next()?.parse().ok()?;
    Some((name.to_string(), pid))
}

/// Writes `DIR/NAME.env` for a test plugin: its mode, and sockets in `dir`.
pub fn test_plugin_env(dir: &Path, name: &str, mode: &str) -> PathBuf {
    let envfile = dir.join(format!("{name}.env"));
    std::fs::write(
        &envfile,
        format!(
            "LOOPP_TEST_MODE={mode}\nPLUGIN_UNIX_SOCKET_DIR={}\n",
            dir.display()
        ),
    )
    .unwrap();
    envfile
}

/// One field of each transmission a chain (or contract) reads back from
/// its file, in order.
pub fn on_chain<T>(
    read: std::io::Result<Vec<loopp::devchain::store::Transmission>>,
    field: impl Fn(&loopp::devchain::store::Transmission) -> T,
) -> Vec<T> {
    read.expect("the chain file reads back")
        .iter()
        .map(field)
        .collect()
}

/// A proxy that must never be used: a loopback listener that counts the
/// connections made to it. `url()` goes into `http_proxy` and friends.
pub struct ProxyTrap {
    port: u16,
    connections: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl ProxyTrap {
    pub fn start() -> ProxyTrap {
        use std::sync::atomic::AtomicBool;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ProxyTrap {
            port,
            connections,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every variable gRPC or ureq reads a proxy from, set to this trap.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        [
            "grpc_proxy",
            "https_proxy",
            "http_proxy",
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "ALL_PROXY",
            "all_proxy",
        ]
        .into_iter()
        .map(|k| (k, self.url()))
        .collect()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for ProxyTrap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Writes `job.json` in `sandbox`: `n` feeds `f0`.. (devchain relay, the
/// median plugin, random walks seeded by index) every `interval`, HTTP
/// off unless `extra` sets it, data under `sandbox/data`, plus the job
/// fields in `extra` (JSON members, each followed by a comma, e.g.
/// `"feed_threads":2,`).
pub fn walk_feeds_job(sandbox: &Sandbox, n: usize, interval: &str, extra: &str) -> PathBuf {
    let feeds: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"name":"f{i}","relay":"devchain","median":"median",
                    "source":{{"type":"randomwalk","seed":{i},"start":1000000,"step_ppm":5000}},
                    "interval":"{interval}","deviation_ppb":0,"heartbeat":"1h"}}"#
            )
        })
        .collect();
    let job = sandbox.dir.join("job.json");
    std::fs::write(
        &job,
        format!(
            r#"{{"plugins":[{{"name":"devchain","kind":"relayer"}},{{"name":"median","kind":"median"}}],
                "feeds":[{}],{extra}{}"data_dir":{}}}"#,
            feeds.join(","),
            if extra.contains(r#""http""#) {
                ""
            } else {
                r#""http":{"listen":"off"},"#
            },
            serde_json::Value::String(sandbox.dir.join("data").display().to_string())
        ),
    )
    .unwrap();
    job
}

/// The feed a node log line names (`... feed NAME: ...`), or "" for a line
/// that names none.
pub fn feed_of(line: &str) -> String {
    line.split("feed ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or_default()
        .to_string()
}

/// The Prometheus page at `http://127.0.0.1:PORT/metrics`.
#[track_caller]
pub fn metrics_page(port: u16) -> String {
    ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .unwrap_or_else(|e| panic!("GET /metrics on port {port}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// The count of a histogram's bucket `le` (unlabelled) on a Prometheus page.
#[track_caller]
pub fn histogram_bucket(page: &str, histogram: &str, le: &str) -> f64 {
    let key = format!("{histogram}_bucket{{le=\"{le}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /metrics"))
}
