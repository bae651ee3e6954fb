//! `loopp-node run`: start every plugin of the job, supervise them, stop
//! cleanly on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use loopp::node::config::{Mode, NodeConfig};
use loopp::node::Node;

const HELP: &str = "\
loopp-node run: run the job's plugins, supervised, until SIGINT or SIGTERM

USAGE:
    loopp-node run [--config FILE]

OPTIONS:
    --config FILE   the job file (JSON); without it, the embedded default job
    --http ADDR     HTTP listen address (default from the job, else
                    127.0.0.1:6688); off for none

Each plugin NAME runs as a LOOPP when CL_<NAME>_CMD names its executable
(looked up on PATH), with the variables of the dotenv file CL_<NAME>_ENV added
to its environment; otherwise it runs in-process. Every LOOPP also gets the
Go Chainlink node's LOOP environment (CL_MERCURY_*, CL_TRACING_ENABLED, ...;
its env file overrides them) and its CL_PROMETHEUS_PORT. CL_<NAME>_SHA256
pins its executable: a mismatch is not started. Configuration errors stop
the node before anything starts (exit status 2).

The default job is a devchain relay (CL_DEVCHAIN_CMD=loopp-devchain) and one
median feed (CL_MEDIAN_CMD=loopp-median); each round is logged. Feeds keep
their contract in DATA/<relay>/<feed>.jsonl (the relayer deploys it), the
node's keys in DATA/keystore.secret and DATA/csa.secret, DATA being the job's
data_dir (default ./loopp-data). A median plugin with \"processes\":
\"per_feed\" runs, as a LOOPP, one process per feed (<plugin>-<feed>), as a
Chainlink node runs one per job; the default, \"shared\", one for all.
CL_MIN_OCR2_MAX_DURATION_QUERY is the floor of the Query deadline (100ms).
The data dir must be writable: the node checks it before anything starts.
Between loopp processes every brokered object rides one shared server and
connection per side (routed brokering, agreed at the handshake; Go plugins
keep go-plugin's server and socket per object); LOOPP_BROKER_ROUTED=0 in
the node's environment, or in one plugin's env file, turns it off. Then
the median plugin also calls the relayer's provider directly, which the
node forwards it; LOOPP_BROKER_FORWARD=0 keeps every such call through the
node. The node checks the job's open files against its limit before
anything starts. A thread waiting for a health check's or set-up call's
reply spins for it up to LOOPP_RPC_SPIN_US (200) microseconds before it
sleeps, one thread fewer than the CPUs at most; 0 sleeps at once. Every
loopp process allocates from one malloc arena unless MALLOC_ARENA_MAX (or
glibc.malloc.arena_max in GLIBC_TUNABLES) says how many.

Bounds, from the job file: a LOOPP's plugins[].rpc (max_message_bytes,
default 16 MiB; concurrent_calls 16 and queued_calls 1024 for its calls to
what the node serves it, then RESOURCE_EXHAUSTED) and the HTTP server's
http.max_connections (1024), header_timeout, idle_timeout, write_timeout;
feed_threads (128): the threads that run every feed's rounds, started as
rounds need them. round_slack (auto): start rounds only on ticks that far
apart, so rounds due close together start together (less CPU; a round
starts up to that much late; at most a tenth of the shortest interval).
auto sets ticks of about 8 rounds at the feeds' rate, at most 50ms, and
none below 2 rounds a tick (for feeds at 1s: off below 40 feeds); 0s
starts each round as it is due.
";

pub fn main(args: &[String]) -> Result<ExitCode, String> {
    let mut config_path: Option<PathBuf> = None;
    let mut http: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--help" | "-h" => {
                print!("{HELP}");
                return Ok(ExitCode::SUCCESS);
            }
            "--http" => {
                let v = it
                    .next()
                    .ok_or("--http needs an address, e.g. 127.0.0.1:6688, or off")?;
                if v != "off" && v.parse::<std::net::SocketAddr>().is_err() {
                    return Err(format!(
                        "--http {v:?} is not IP:PORT; use e.g. 127.0.0.1:6688, or off"
                    ));
                }
                http = Some(v.clone());
            }
            "--config" => {
                let v = it
                    .next()
                    .ok_or("--config needs a file; see 'loopp-node run --help'")?;
                config_path = Some(PathBuf::from(v));
            }
            other => {
                return Err(format!(
                    "unknown option {other:?}; see 'loopp-node run --help'"
                ))
            }
        }
    }
    let mut config = NodeConfig::load(config_path.as_deref()).map_err(|e| e.to_string())?;
    if let Some(h) = http {
        config.http = (h != "off").then_some(h);
    }
    let signals = loopp::goplugin::signals::notify(&[libc::SIGINT, libc::SIGTERM])
        .map_err(|e| format!("cannot handle SIGINT/SIGTERM: {e}"))?;
    // A write past the file size limit (the keystore, an in-process
    // relayer's chain file) fails with EFBIG and is reported, instead of
    // SIGXFSZ killing the node.
    // SAFETY: setting a signal disposition to SIG_IGN is always sound.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };

    for p in &config.plugins {
        match &p.mode {
            Mode::Loopp { command, .. } => log::info!(
                "plugin {} ({}): LOOPP {}",
                p.name,
                p.kind.name,
                command.display()
            ),
            Mode::InProcess => log::info!("plugin {} ({}): in-process", p.name, p.kind.name),
        }
    }
    let node = Node::start(&config).map_err(|e| format!("cannot start the node: {e}"))?;
    log::info!(
        "node running {} plugins (pid {}); stop with Ctrl-C or SIGTERM",
        config.plugins.len(),
        std::process::id()
    );

    // Once every plugin is ready (or after a bound, if one never is) and
    // the node has settled, the code only start-up ran is given back.
    let settled_by = Instant::now() + loopp::pages::SETTLE_BOUND;
    let mut ready_at = None;
    let sig = loop {
        match signals.recv_timeout(Duration::from_millis(200)) {
            Ok(sig) => break sig,
            Err(RecvTimeoutError::Disconnected) => break libc::SIGTERM,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        if ready_at.is_none() && node.ready().is_ok() {
            ready_at = Some(now);
        }
        if ready_at.is_some_and(|r| now >= r + loopp::pages::SETTLE) || now >= settled_by {
            let released = loopp::pages::release_code();
            log::debug!("gave back {} KiB of start-up code", released / 1024);
            break signals.recv().unwrap_or(libc::SIGTERM);
        }
    };
    let name = if sig == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    log::info!("{name}: stopping every plugin");
    // A second signal means "now": the plugins still exit by themselves
    // (parent-death signal and their own watch on the node).
    std::thread::spawn(move || {
        if signals.recv().is_ok() {
            eprintln!("loopp-node: second signal, exiting at once");
            std::process::exit(130);
        }
    });
    let took = node.shutdown();
    log::info!("node stopped in {took:?}");
    Ok(ExitCode::SUCCESS)
}
