//! The node: supervision of real plugin processes, in-process fallback,
//! shutdown and process hygiene.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use loopp::node::config::NodeConfig;
use loopp::node::registry::State;
use loopp::node::Node;

use crate::util::*;

const BOUND: Duration = Duration::from_secs(20);

/// Waits until `name` runs with a pid other than `old`.
#[track_caller]
fn restarted_pid(node: &Node, name: &str, old: u32) -> u32 {
    let mut pid = None;
    assert!(
        wait_until(BOUND, || {
            pid = node
                .registry()
                .get(name)
                .filter(|s| s.state == State::Running && s.pid != Some(old))
                .and_then(|s| s.pid);
            pid.is_some()
        }),
        "{name} was not restarted: {:?}",
        node.registry().get(name)
    );
    pid.unwrap()
}

/// Zombie processes whose parent is this test process.
fn zombie_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            out.push(pid);
        }
    }
    out
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: sending a signal to a pid we observed.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

#[test]
fn a_sigkilled_plugin_is_restarted_and_healthy_again() {
    let (config, _sb) = test_job("sigkill", &[("p1", "serve")], &[]);
    let node = Node::start(&config).expect("node starts");
    let pid = running_pid(&node, "p1");
    signal(pid, libc::SIGKILL);
    let new = restarted_pid(&node, "p1", pid);
    assert_ne!(new, pid);
    let st = node.registry().get("p1").unwrap();
    assert_eq!(st.restarts, 1);
    assert!(
        st.last_error.unwrap().contains("exited unexpectedly"),
        "{:?}",
        st.last_exit
    );
    assert_eq!(st.last_exit.as_deref(), Some("signal: 9 (SIGKILL)"));
    let svc = node.service("p1").unwrap();
    assert_eq!(
        svc.ready(),
        Ok(()),
        "clients reach the new process without being rebuilt"
    );
    assert_eq!(svc.name(), "example");
    node.shutdown();
    assert_gone(new);
}

#[test]
fn a_sigstopped_plugin_misses_its_health_deadline_and_is_replaced() {
    let (config, _sb) = test_job("sigstop", &[("p1", "serve")], &[]);
    let node = Node::start(&config).expect("node starts");
    let pid = running_pid(&node, "p1");
    signal(pid, libc::SIGSTOP);
    let new = restarted_pid(&node, "p1", pid);
    let st = node.registry().get("p1").unwrap();
    assert!(
        st.last_error
            .as_deref()
            .unwrap_or("")
            .contains("DEADLINE_EXCEEDED"),
        "{st:?}"
    );
    // The old process was killed, so SIGCONT cannot bring it back.
    signal(pid, libc::SIGCONT);
    assert!(
        wait_until(BOUND, || !pid_exists(pid)),
        "the stopped process was not killed"
    );
    assert_eq!(node.registry().get("p1").unwrap().pid, Some(new));
    node.shutdown();
}

#[test]
fn a_crash_loop_backs_off_to_the_cap_and_hurts_nobody() {
    let (config, _sb) = test_job(
        "crashloop",
        &[("bad", "exit-before-handshake"), ("good", "serve")],
        &[],
    );
    let node = Node::start(&config).expect("node starts");
    let good = running_pid(&node, "good");
    let cap = Duration::from_millis(400);
    assert!(
        wait_until(BOUND, || node
            .registry()
            .get("bad")
            .and_then(|s| s.last_delay)
            .is_some_and(|d| d >= cap.mul_f64(0.8))),
        "the delay grows to the cap: {:?}",
        node.registry().get("bad")
    );
    let bad = node.registry().get("bad").unwrap();
    assert!(bad.last_delay.unwrap() <= cap);
    assert!(bad.restarts >= 3, "{bad:?}");
    assert!(bad
        .last_error
        .unwrap()
        .contains("exited before we could connect"));
    // Calls to it fail fast, naming the plugin; the other plugin is untouched.
    let err = node.service("bad").unwrap().ready().unwrap_err();
    assert!(err.contains("plugin bad is restarting"), "{err}");
    let g = node.registry().get("good").unwrap();
    assert_eq!(
        (g.state, g.pid, g.restarts),
        (State::Running, Some(good), 0)
    );
    assert_eq!(node.service("good").unwrap().ready(), Ok(()));
    let health = node.health_report();
    assert_eq!(health.get("good").map(String::as_str), Some(""));
    assert!(
        health.get("bad").is_some_and(|e| !e.is_empty()),
        "{health:?}"
    );
    node.shutdown();
}

/// A plugin whose health checks end OK without a reply message panicked
/// its supervisor's thread once (grpcio's receiver unwraps the message):
/// the plugin was shut down and never started again. Now each start fails
/// with an error that says what the plugin did, and the node keeps
/// starting it, with backoff, as any plugin that fails to start.
#[test]
fn a_plugin_answering_health_without_a_message_is_restarted_not_lost() {
    let (config, _sb) = test_job(
        "emptyhealth",
        &[("empty", "empty-health"), ("good", "serve")],
        &[],
    );
    let node = Node::start(&config).expect("node starts");
    let good = running_pid(&node, "good");
    assert!(
        wait_until(BOUND, || node
            .registry()
            .get("empty")
            .is_some_and(|s| s.restarts >= 3)),
        "the node keeps starting it: {:?}",
        node.registry().get("empty")
    );
    let empty = node.registry().get("empty").unwrap();
    let error = empty.last_error.unwrap_or_default();
    assert!(error.contains("without a reply message"), "{error}");
    let g = node.registry().get("good").unwrap();
    assert_eq!(
        (g.state, g.pid, g.restarts),
        (State::Running, Some(good), 0)
    );
    node.shutdown();
}

#[test]
fn in_process_and_out_of_process_answer_alike() {
    let (config, _sb) = test_job(
        "same",
        &[("inside", "in-process"), ("outside", "serve")],
        &[],
    );
    let node = Node::start(&config).expect("node starts");
    running_pid(&node, "outside");
    let (a, b) = (
        node.service("inside").unwrap(),
        node.service("outside").unwrap(),
    );
    assert_eq!(a.name(), b.name());
    assert_eq!(a.ready(), b.ready());
    assert_eq!(a.health_report(), b.health_report());
    let health = node.health_report();
    assert_eq!(health.get("inside.example"), health.get("outside.example"));
    assert_eq!(health.get("inside").map(String::as_str), Some(""));
    assert_eq!(health.get("outside").map(String::as_str), Some(""));
    assert_eq!(node.ready(), Ok(()));
    node.shutdown();
}

#[test]
fn a_hung_plugin_cannot_stall_the_health_report() {
    let (config, _sb) = test_job(
        "hung",
        &[("ok", "serve"), ("hung", "serve")],
        &[("health_interval", "30s")],
    );
    let node = Node::start(&config).expect("node starts");
    running_pid(&node, "ok");
    let hung = running_pid(&node, "hung");
    signal(hung, libc::SIGSTOP);
    let t = std::time::Instant::now();
    let health = node.health_report();
    let took = t.elapsed();
    signal(hung, libc::SIGCONT);
    assert!(
        took < Duration::from_secs(3),
        "bounded by the rpc deadline, took {took:?}"
    );
    assert_eq!(health.get("ok").map(String::as_str), Some(""));
    assert!(health["hung"].contains("DEADLINE_EXCEEDED"), "{health:?}");
    node.shutdown();
}

#[test]
fn resource_limits_apply_to_the_plugin_process() {
    let sandbox = Sandbox::new("limits");
    let envfile = sandbox.dir.join("l.env");
    std::fs::write(&envfile, "LOOPP_TEST_MODE=serve\n").unwrap();
    let text = r#"{"plugins":[{"name":"l","kind":"example","limits":{"open_files":200,"address_space_mb":8192}}],
        "http":{"listen":"off"}}"#;
    let (cmd, env) = (TEST_PLUGIN.to_string(), envfile.display().to_string());
    let config = NodeConfig::from_json("limits", text, &move |k| match k {
        "CL_L_CMD" => Some(cmd.clone()),
        "CL_L_ENV" => Some(env.clone()),
        _ => None,
    })
    .unwrap();
    let node = Node::start(&config).expect("node starts");
    let pid = running_pid(&node, "l");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = |what: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(what))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("Max open files"), "Max open files 200 200 files");
    assert_eq!(
        line("Max address space"),
        format!("Max address space {0} {0} bytes", 8192u64 << 20)
    );
    node.shutdown();
}

#[test]
fn fifty_plugins_start_all_die_all_come_back() {
    let names: Vec<String> = (0..50).map(|i| format!("p{i:02}")).collect();
    let plugins: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "serve")).collect();
    let (config, sandbox) = test_job(
        "fifty",
        &plugins,
        &[("health_interval", "2s"), ("health_timeout", "2s")],
    );
    let node = Node::start(&config).expect("node starts");
    let pids: Vec<u32> = names.iter().map(|n| running_pid(&node, n)).collect();
    for &pid in &pids {
        signal(pid, libc::SIGKILL);
    }
    for (n, &old) in names.iter().zip(&pids) {
        restarted_pid(&node, n, old);
    }
    assert_eq!(
        zombie_children(),
        Vec::<u32>::new(),
        "all 50 killed plugins were reaped"
    );
    assert_eq!(node.ready(), Ok(()));
    let took = node.shutdown();
    assert!(
        took < Duration::from_secs(5),
        "50 plugins stopped in parallel, took {took:?}"
    );
    for (n, &old) in names.iter().zip(&pids) {
        assert_gone(old);
        assert!(!pid_exists(old), "{n}");
    }
    assert!(
        wait_until(Duration::from_secs(5), || sandbox
            .leftovers()
            .iter()
            .all(|f| f.ends_with(".env"))),
        "sockets left: {:?}",
        sandbox.leftovers()
    );
}

/// Starts `loopp-node run` with `plugins` and waits for them all to run.
/// Returns the node process and the plugin pids.
fn start_node_process(
    name: &str,
    plugins: &[(&str, &str)],
) -> (std::process::Child, Vec<u32>, Sandbox) {
    let sandbox = Sandbox::new(name);
    let entries: Vec<String> = plugins
        .iter()
        .map(|(n, _)| format!(r#"{{"name":"{n}","kind":"example"}}"#))
        .collect();
    let jobfile = sandbox.dir.join("job.json");
    std::fs::write(
        &jobfile,
        format!(
            r#"{{"plugins":[{}],"supervision":{{"shutdown_grace":"2s"}},"http":{{"listen":"127.0.0.1:0"}}}}"#,
            entries.join(",")
        ),
    )
    .unwrap();
    let mut cmd = Command::new(node());
    cmd.args(["run", "--config"])
        .arg(&jobfile)
        .env("RUST_LOG", "info")
        .env("PLUGIN_UNIX_SOCKET_DIR", &sandbox.dir);
    for (n, mode) in plugins {
        let envfile = test_plugin_env(&sandbox.dir, n, mode);
        let prefix = loopp::node::config::env_prefix(n);
        cmd.env(format!("{prefix}_CMD"), TEST_PLUGIN)
            .env(format!("{prefix}_ENV"), &envfile);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The latest pid of each plugin, once every plugin has reported running.
    let mut pids = std::collections::BTreeMap::new();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + BOUND;
    while pids.len() < plugins.len() {
        let line = rx.recv_deadline(deadline).unwrap_or_else(|_| {
            panic!(
                "not every plugin reported running; node said:\n{}",
                seen.join("\n")
            )
        });
        if let Some((name, pid)) = running_line(&line) {
            pids.insert(name, pid);
        }
        seen.push(line);
    }
    (child, pids.into_values().collect(), sandbox)
}

#[test]
fn sigterm_stops_the_node_and_every_plugin_within_the_bound() {
    let (mut node, pids, sandbox) = start_node_process(
        "nodeterm",
        &[
            ("a", "serve"),
            ("b", "serve"),
            ("c", "serve"),
            ("deaf", "ignore-shutdown"),
        ],
    );
    signal(node.id(), libc::SIGTERM);
    let t = std::time::Instant::now();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let waiter = std::thread::spawn(move || {
        let status = node.wait().unwrap();
        let _ = tx.send(status);
    });
    let status = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the node exits within 5 s");
    waiter.join().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    for pid in pids {
        assert_gone(pid);
    }
    assert!(
        sandbox
            .leftovers()
            .iter()
            .all(|f| f.ends_with(".env") || f.ends_with(".json")),
        "{:?}",
        sandbox.leftovers()
    );
}

#[test]
fn sigkill_to_the_node_leaves_no_plugin_behind() {
    let (mut node, pids, _sandbox) = start_node_process(
        "nodekill",
        &[("a", "serve"), ("b", "serve"), ("c", "serve")],
    );
    node.kill().unwrap();
    node.wait().unwrap();
    for pid in pids {
        assert!(
            wait_until(Duration::from_secs(2), || !pid_exists(pid)),
            "plugin {pid} outlived the node by 2 s"
        );
    }
}

/// `loopp-node run` on the job `json`, without `unset` in its environment,
/// in a fresh sandbox, to its end within [`BOUND`].
fn run_job(name: &str, json: &str, unset: &str) -> std::process::Output {
    let sandbox = Sandbox::new(name);
    let jobfile = sandbox.dir.join("job.json");
    std::fs::write(&jobfile, json).unwrap();
    run_bounded(
        Command::new(node())
            .args(["run", "--config"])
            .arg(&jobfile)
            .env_remove(unset),
        BOUND,
    )
}

#[test]
fn configuration_errors_stop_the_node_before_anything_starts() {
    let out = run_job(
        "badconfig",
        r#"{"plugins":[{"name":"m","kind":"relayer"}],"supervision":{"rpc_timeout":"0s"}}"#,
        "CL_M_CMD",
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("supervision.rpc_timeout: \"0s\" must be more than zero"),
        "{stderr}"
    );
    assert!(
        stderr.contains("set CL_M_CMD to its LOOPP command"),
        "{stderr}"
    );
    assert!(!stderr.contains("running"), "nothing started: {stderr}");
}

/// A node whose HTTP port is taken stops at once, naming the address and
/// the job setting to change.
#[test]
fn a_taken_http_port_stops_the_node_naming_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = run_job(
        "takenport",
        &format!(
            r#"{{"plugins":[{{"name":"median","kind":"median"}}],"http":{{"listen":"{addr}"}}}}"#
        ),
        "CL_MEDIAN_CMD",
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        format!("cannot listen on {addr}"),
        "another program (or node) serves there".into(),
        "give a free port in the job's http.listen or with --http".into(),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in {stderr}");
    }
    drop(taken);
}

/// A pinned plugin (`sha256` in the job or `CL_<NAME>_SHA256`) starts only
/// when its executable hashes to the pin: a mismatch is refused with the
/// file, the expected and the actual hash, the plugin is not started, and
/// the others run.
#[test]
fn a_pinned_plugin_starts_only_with_its_hash() {
    use sha2::Digest;
    let sb = Sandbox::new("pinned");
    let actual: String = sha2::Sha256::digest(std::fs::read(TEST_PLUGIN).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let wrong = "ab".repeat(32);
    let job = format!(
        r#"{{"plugins":[{{"name":"good","kind":"example","sha256":"{actual}"}},
                        {{"name":"bad","kind":"example","sha256":"{wrong}"}},
                        {{"name":"env","kind":"example","sha256":"{wrong}"}}],
            "supervision":{{"backoff_initial":"50ms","backoff_max":"200ms"}},
            "http":{{"listen":"off"}}}}"#
    );
    let files: Vec<(String, String)> = ["good", "bad", "env"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                test_plugin_env(&sb.dir, n, "serve").display().to_string(),
            )
        })
        .collect();
    let actual_env = actual.clone();
    let config = loopp::node::config::NodeConfig::from_json("pinned", &job, &move |k| {
        let name = k.strip_prefix("CL_")?.to_ascii_lowercase();
        if let Some(n) = name.strip_suffix("_cmd") {
            return files
                .iter()
                .any(|(f, _)| f == n)
                .then(|| TEST_PLUGIN.to_string());
        }
        if let Some(n) = name.strip_suffix("_env") {
            return files.iter().find(|(f, _)| f == n).map(|(_, p)| p.clone());
        }
        // The environment's pin wins over the job's.
        (name == "env_sha256").then(|| actual_env.clone())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let node = Node::start(&config).expect("node starts");
    running_pid(&node, "good");
    running_pid(&node, "env");
    assert!(wait_until(Duration::from_secs(10), || node
        .registry()
        .get("bad")
        .and_then(|s| s.last_error)
        .is_some()));
    let bad = node.registry().get("bad").unwrap();
    assert_ne!(
        bad.state,
        State::Running,
        "a mismatched plugin never starts"
    );
    assert!(bad.pid.is_none());
    let why = bad.last_error.unwrap();
    for want in [TEST_PLUGIN, &actual, &wrong, "not started"] {
        assert!(why.contains(want), "missing {want:?} in {why}");
    }
    node.shutdown();
}

/// What a SIGKILLed process left (a socket directory whose owner is gone)
/// is removed when a node starts; a live process's directory is not. Both
/// with an owner file and, as a plugin in its first seconds leaves it,
/// with only the pid in the directory's name.
#[test]
fn a_starting_node_removes_socket_directories_of_dead_processes() {
    let sandbox = Sandbox::new("stale-dirs");
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stale = sandbox.dir.join("loopp-KILLED");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("owner"), format!("{dead} 1\n")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(stale.join("plugin.sock")).unwrap());
    let unowned = sandbox.dir.join(format!("loopp-{dead}-Xy12Zw"));
    std::fs::create_dir(&unowned).unwrap();
    drop(std::os::unix::net::UnixListener::bind(unowned.join("plugin.sock")).unwrap());
    let live = loopp::goplugin::sockdir::SocketDir::create_in(&sandbox.dir).unwrap();
    let live_unowned = sandbox
        .dir
        .join(format!("loopp-{}-Ab34Cd", std::process::id()));
    std::fs::create_dir(&live_unowned).unwrap();
    let jobfile = sandbox.dir.join("job.json");
    std::fs::write(
        &jobfile,
        r#"{"plugins":[{"name":"example","kind":"example"}],"http":{"listen":"off"}}"#,
    )
    .unwrap();
    let mut node = Command::new(node())
        .args(["run", "--config"])
        .arg(&jobfile)
        .env("RUST_LOG", "info")
        .env("PLUGIN_UNIX_SOCKET_DIR", &sandbox.dir)
        .env_remove("CL_EXAMPLE_CMD")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(node.stderr.take().unwrap());
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + BOUND;
    let said = std::iter::from_fn(|| rx.recv_deadline(deadline).ok())
        .find(|l| l.contains("removed 2 socket directories of processes that are gone"));
    // SAFETY: signalling the node this test started.
    unsafe { libc::kill(node.id() as libc::pid_t, libc::SIGTERM) };
    node.wait().unwrap();
    assert!(
        said.is_some(),
        "the node did not say it removed the stale directory"
    );
    assert!(!stale.exists(), "the dead process's directory is gone");
    assert!(!unowned.exists(), "so is the one named after it");
    assert!(live.dir().unwrap().exists(), "a live one stays");
    assert!(live_unowned.exists(), "as does one named after a live pid");
}
