//! Bad input on the host side: each ends in a clear error naming the cause,
//! with no process and no socket left behind.

use std::process::Command;
use std::time::Duration;

use loopp::goplugin::handshake::{Cookie, NOT_A_PLUGIN_MESSAGE};
use loopp::goplugin::host::Client;

use crate::util::*;

/// Starts `loopp-test-plugin MODE` (tagged so we can find stray processes),
/// expects a start error and checks nothing is left. Returns the message.
#[track_caller]
fn start_fails(mode: &str, tweak: impl FnOnce(&mut loopp::goplugin::host::HostConfig)) -> String {
    let sandbox = Sandbox::new(mode);
    let tag = format!("tag=failures-{mode}-{}", std::process::id());
    let mut config = test_plugin(mode, mode, &sandbox);
    config.args.push(tag.clone().into());
    tweak(&mut config);
    let err = match Client::start(&config) {
        Ok(c) => panic!(
            "plugin mode {mode} started (pid {}), expected an error",
            c.pid()
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        wait_until(Duration::from_secs(3), || processes_with_arg(&tag)
            .is_empty()),
        "mode {mode}: processes left: {:?}",
        processes_with_arg(&tag)
    );
    assert_eq!(
        sandbox.leftovers(),
        Vec::<String>::new(),
        "mode {mode}: files left"
    );
    err
}

/// Pids whose command line contains `arg`.
fn processes_with_arg(arg: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            if cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()) {
                pids.push(pid);
            }
        }
    }
    pids
}

#[track_caller]
fn assert_contains(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(haystack.contains(n), "expected {n:?} in:\n{haystack}");
    }
}

#[test]
fn run_directly_prints_go_plugins_message_and_exits_1() {
    let out = run_bounded(
        Command::new(TEST_PLUGIN)
            .arg("serve")
            .env_remove("LOOPP_EXAMPLE_PLUGIN"),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), NOT_A_PLUGIN_MESSAGE);
    assert!(out.stdout.is_empty(), "nothing on stdout");
}

#[test]
fn wrong_cookie() {
    let err = start_fails("serve", |c| {
        c.cookie = Cookie::new("LOOPP_EXAMPLE_PLUGIN", "wrong")
    });
    assert_contains(
        &err,
        &[
            "exited before we could connect",
            "exit status: 1",
            "This binary is a plugin",
        ],
    );
}

#[test]
fn text_on_stdout_before_the_handshake() {
    let err = start_fails("print-before-handshake", |_| {});
    assert_contains(
        &err,
        &[
            "bad handshake line \"starting up, version 1.2.3\"",
            "must print nothing on stdout before its handshake",
        ],
    );
}

#[test]
fn exit_before_the_handshake() {
    let err = start_fails("exit-before-handshake", |_| {});
    assert_contains(
        &err,
        &[
            "plugin exited before we could connect",
            "exit status: 3",
            "cannot read config /etc/loopp/test.toml",
        ],
    );
}

/// A plugin that dies after making its socket directory but before
/// printing its address: the host removes the directory (found by the
/// dead pid in its name: a plugin writes its owner file only once it
/// serves), as `start_fails` checks.
#[test]
fn exit_during_start_leaves_no_socket_directory() {
    let err = start_fails("exit-during-start", |_| {});
    assert_contains(
        &err,
        &["plugin exited before we could connect", "exit status: 3"],
    );
}

#[test]
fn no_handshake_times_out() {
    let err = start_fails("no-handshake", |c| {
        c.start_timeout = Duration::from_millis(500)
    });
    assert_contains(
        &err,
        &["no handshake within 500ms", "wrote nothing on stderr"],
    );
}

#[test]
fn core_version_other_than_1() {
    let err = start_fails("bad-core", |_| {});
    assert_contains(
        &err,
        &[
            "core protocol version \"2\" is not supported",
            "core version 1",
        ],
    );
}

#[test]
fn protocol_netrpc() {
    let err = start_fails("netrpc", |_| {});
    assert_contains(
        &err,
        &["protocol \"netrpc\" is not supported", "only \"grpc\""],
    );
}

#[test]
fn unknown_network() {
    let err = start_fails("unknown-network", |_| {});
    assert_contains(
        &err,
        &["network \"udp\" is not supported", "\"unix\" or \"tcp\""],
    );
}

#[test]
fn address_unreachable() {
    let err = start_fails("unreachable", |c| c.rpc_timeout = Duration::from_secs(1));
    assert_contains(
        &err,
        &[
            "does not answer at unix:/tmp/loopp-test-unreachable-",
            "UNAVAILABLE",
        ],
    );
}

#[test]
fn app_version_the_host_does_not_speak() {
    let err = start_fails("serve", |c| c.versions = vec![5]);
    assert_contains(&err, &["app protocol version 0", "this host speaks [5]"]);
}

#[test]
fn command_not_found() {
    let sandbox = Sandbox::new("notfound");
    let mut config = test_plugin("ghost", "serve", &sandbox);
    config.program = "/nonexistent/loopp-plugin".into();
    let err = Client::start(&config).err().expect("must fail").to_string();
    assert_contains(
        &err,
        &[
            "cannot start \"/nonexistent/loopp-plugin\"",
            "/nonexistent/loopp-plugin does not exist",
        ],
    );
}

/// Starts a plugin whose program is a file holding `text` with `mode`;
/// the start's error and the file's path.
fn start_file_fails(name: &str, text: &str, mode: u32) -> (String, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new(name);
    let program = sandbox.dir.join("loopp-plugin");
    std::fs::write(&program, text).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(mode)).unwrap();
    let mut config = test_plugin(name, "serve", &sandbox);
    config.program = program.clone().into();
    let err = Client::start(&config).err().expect("must fail").to_string();
    (err, program)
}

#[test]
fn command_not_executable() {
    let (err, program) = start_file_fails("plain", "#!/bin/sh\n", 0o640);
    assert_contains(
        &err,
        &[&format!(
            "{} is not executable (mode 640): make it executable (chmod +x)",
            program.display()
        )],
    );
    // The reason says what to do; no generic hint after it.
    assert!(!err.contains("check the command"), "{err}");
}

#[test]
fn command_the_kernel_cannot_run_gets_the_os_error_and_a_hint() {
    let (err, _) = start_file_fails("garbage", "neither a binary nor a script\n", 0o755);
    assert_contains(
        &err,
        &[
            "Exec format error",
            "(check the command is installed and executable)",
        ],
    );
}

#[test]
fn huge_and_invalid_stderr_lines_are_relayed_bounded() {
    capture_logs();
    let sandbox = Sandbox::new("noisy");
    let mut client = Client::start(&test_plugin("noisy", "noisy-stderr", &sandbox)).expect("start");
    client.ping().expect("still answers");
    let pid = client.pid();
    assert!(client.kill().graceful);
    assert_gone(pid);
    let logs = logs_for("noisy");
    let huge = logs
        .iter()
        .find(|r| r.message.starts_with("xxxx"))
        .expect("the 1 MiB line is relayed");
    assert!(
        huge.message.len() < 70 * 1024,
        "cut to the bound: {} bytes",
        huge.message.len()
    );
    assert!(
        huge.message.contains("truncated_bytes="),
        "{}",
        &huge.message[huge.message.len() - 40..]
    );
    assert!(logs
        .iter()
        .any(|r| r.message == "bad bytes \u{fffd}\u{fffd}\u{fffd} here"));
    let odd = logs
        .iter()
        .find(|r| r.message.starts_with("{\"not\""))
        .expect("non-string @message");
    assert_eq!(odd.level, log::Level::Warn);
}

#[test]
fn automtls_is_refused_by_name() {
    let err = start_fails("serve", |c| {
        c.env.push((
            "PLUGIN_CLIENT_CERT".into(),
            "-----BEGIN CERTIFICATE-----".into(),
        ))
    });
    assert_contains(
        &err,
        &[
            "exited before we could connect",
            "AutoMTLS (PLUGIN_CLIENT_CERT)",
            "disable AutoMTLS",
        ],
    );
}

#[test]
fn malformed_port_range_is_named() {
    let err = start_fails("serve", |c| {
        c.network = loopp::goplugin::handshake::Network::Tcp;
        c.env.push(("PLUGIN_MIN_PORT".into(), "ten".into()));
    });
    assert_contains(&err, &["PLUGIN_MIN_PORT=\"ten\" is not a TCP port"]);
}
