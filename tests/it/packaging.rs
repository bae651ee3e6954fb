//! Packaging: the systemd unit passes `systemd-analyze verify` (when systemd
//! is installed) with real binaries in its paths, and the node runs its
//! default job under the unit's sandboxing (emulated: no systemd as PID 1
//! here); `make install`, `install-service` and `uninstall` work under
//! DESTDIR; the container image builds with buildah and runs the default
//! job. And what the binary does to its own process: idle processes give
//! back the code only start-up ran, and threads share one malloc arena.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

const UNIT: &str = include_str!("../../contrib/loopp.service");

fn verify(unit: &Path) -> (bool, String) {
    let out = run_bounded(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(unit),
        Duration::from_secs(60),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_service_unit_verifies_with_this_builds_binaries() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("systemd-analyze is not installed: the unit is not verified here");
        return;
    }
    let sandbox = Sandbox::new("unit");
    let bin = Path::new(node()).parent().unwrap().display().to_string();
    let unit = sandbox.dir.join("loopp.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/", &format!("{bin}/"))).unwrap();
    let (ok, err) = verify(&unit);
    assert!(ok, "systemd-analyze verify refused the unit:\n{err}");
    // The check is real: a missing executable is refused.
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/", "/nonexistent/")).unwrap();
    let (ok, err) = verify(&unit);
    assert!(!ok && err.contains("/nonexistent/loopp-node"), "{err}");
}

#[test]
fn install_service_and_uninstall_work_under_destdir() {
    let sandbox = Sandbox::new("install");
    let root = env!("CARGO_MANIFEST_DIR");
    let make = |target: &str| {
        let out = run_bounded(
            Command::new("make")
                .arg("-s")
                .arg("-C")
                .arg(root)
                .arg(target)
                .arg("PREFIX=/opt/loopp")
                .arg(format!("DESTDIR={}", sandbox.dir.display()))
                // This build's binary, stripped into the sandbox: the test
                // neither builds nor writes into the build dir.
                .arg("NO_BUILD=1")
                .arg(format!("LOOPP_BIN={}", crate::programs::LOOPP))
                .arg(format!("DIST={}", sandbox.dir.join("dist").display())),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "make {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    make("install-service");
    let unit = sandbox
        .dir
        .join("opt/loopp/lib/systemd/system/loopp.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains("ExecStart=/opt/loopp/bin/loopp-node run"),
        "{text}"
    );
    assert!(!text.contains("/usr/local/bin"), "{text}");
    // What `make install` puts there (this build's loopp, stripped, and a
    // link per program), then uninstall takes it all away.
    make("install");
    let bin = sandbox.dir.join("opt/loopp/bin");
    let loopp = bin.join("loopp");
    let installed = std::fs::metadata(&loopp).expect("make install put no loopp");
    assert!(
        installed.len() < std::fs::metadata(crate::programs::LOOPP).unwrap().len(),
        "the installed loopp is not stripped"
    );
    for p in [
        "loopp-node",
        "loopp-median",
        "loopp-devchain",
        "loopp-example",
    ] {
        let link = std::fs::read_link(bin.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(link, Path::new("loopp"), "{p} links to {link:?}");
    }
    // The installed links are the programs: the node answers as itself.
    let out = run_bounded(
        Command::new(bin.join("loopp-node")).arg("--version"),
        Duration::from_secs(10),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("loopp-node {}", env!("CARGO_PKG_VERSION"))
    );
    make("uninstall");
    let left: Vec<_> = std::fs::read_dir(&bin).unwrap().flatten().collect();
    assert!(left.is_empty(), "left after uninstall: {left:?}");
    assert!(!unit.exists(), "the unit is left after uninstall");
}

/// buildah with its own storage in the sandbox (vfs: no overlay mounts),
/// so the test leaves no image or container behind.
fn buildah(sandbox: &Sandbox) -> (Command, String) {
    let flags = format!(
        "--storage-driver vfs --root {0}/storage --runroot {0}/run",
        sandbox.dir.display()
    );
    let mut cmd = Command::new("buildah");
    cmd.args(flags.split(' '))
        .env("TMPDIR", sandbox.dir.join("tmp"));
    (cmd, flags)
}

/// Runs `buildah ARGS` (see [`buildah`]) within `timeout`; its stdout,
/// trimmed, or a panic with its stderr.
fn buildah_ok(sandbox: &Sandbox, args: &[&str], timeout: Duration) -> String {
    let (mut cmd, _) = buildah(sandbox);
    let out = run_bounded(cmd.args(args), timeout);
    assert!(
        out.status.success(),
        "buildah {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Unmounts and removes every container and image of the sandbox's
/// storage, whatever the test got to (before the sandbox is removed).
fn buildah_clean(sandbox: &Sandbox) {
    for args in [
        &["umount", "--all"][..],
        &["rm", "--all"],
        &["rmi", "--all", "--force"],
    ] {
        let (mut cmd, _) = buildah(sandbox);
        let _ = run_bounded(cmd.args(args), Duration::from_secs(60));
    }
}

/// Reads `child`'s stderr (on a thread) until a line says a round was
/// transmitted (true) or `within` passes (false). Returns that, the lines
/// read, and the receiver of the lines that come after.
fn until_transmitted(
    child: &mut std::process::Child,
    within: Duration,
) -> (bool, Vec<String>, crossbeam_channel::Receiver<String>) {
    use std::io::BufRead;
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let stderr = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let deadline = std::time::Instant::now() + within;
    loop {
        match rx.recv_deadline(deadline) {
            Ok(line) => {
                let done = line.contains("transmitted median");
                log.push(line);
                if done {
                    return (true, log, rx);
                }
            }
            Err(_) => return (false, log, rx),
        }
    }
}

/// The processes descending from `root`, with their uid and name (the
/// node puts each plugin in a process group of its own, so the tree, not
/// the group, finds them).
fn descendants(root: u32) -> Vec<(u32, u32, String)> {
    let mut all = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let Some(ppid) = stat[close + 2..]
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())
            .unwrap_or(u32::MAX);
        all.push((pid, ppid, uid, comm));
    }
    let mut tree = vec![root];
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, ppid, _, _) in &all {
            if tree.contains(ppid) && !tree.contains(pid) {
                tree.push(*pid);
                grew = true;
            }
        }
    }
    all.into_iter()
        .filter(|(pid, ..)| *pid != root && tree.contains(pid))
        .map(|(pid, _, uid, comm)| (pid, uid, comm))
        .collect()
}

#[test]
fn the_container_image_runs_the_default_job_with_both_plugins_as_loopps() {
    use std::os::unix::process::CommandExt;

    assert!(
        Command::new("buildah").arg("--version").output().is_ok(),
        "buildah is not installed: `make test` installs it (apt-get install buildah)"
    );
    let sandbox = Sandbox::new("image");
    std::fs::create_dir_all(sandbox.dir.join("tmp")).unwrap();
    let stripped = sandbox.dir.join("loopp");
    let out = run_bounded(
        Command::new("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(crate::programs::LOOPP),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The image, as `make image` builds it.
    let image = "localhost/loopp-test:latest";
    let (_, flags) = buildah(&sandbox);
    let out = run_bounded(
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/image.sh"))
            .arg(&stripped)
            .arg(image)
            .env("BUILDAH_FLAGS", &flags)
            .env("TMPDIR", sandbox.dir.join("tmp")),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "scripts/image.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    buildah_ok(
        &sandbox,
        &["from", "--name", "loopp-test", image],
        Duration::from_secs(120),
    );

    // The image's own command and environment (CL_*_CMD, user, workdir),
    // only the HTTP address on this host's loopback (chroot isolation
    // shares the host's network).
    let port = crate::median::free_port();
    let (mut run, _) = buildah(&sandbox);
    run.args(["run", "--isolation", "chroot", "loopp-test", "--"])
        .args(["/usr/local/bin/loopp", "node", "run", "--http"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    let mut child = run.spawn().expect("buildah run");
    let pgid = child.id() as i32;
    let (transmitted, log, _rest) = until_transmitted(&mut child, Duration::from_secs(120));
    // While it runs: the node and both plugins are processes of their own,
    // none of them root, and the node answers on its HTTP port.
    let processes = descendants(child.id());
    let discovery = ureq::get(&format!("http://127.0.0.1:{port}/discovery"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    // SAFETY: signalling the process group this test started.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let stopped = wait_until(Duration::from_secs(30), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !stopped {
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
    }
    buildah_clean(&sandbox);

    let log = log.join("\n");
    assert!(transmitted, "no round transmitted within 120 s:\n{log}");
    let node_user: Vec<_> = processes
        .iter()
        .filter(|(_, _, comm)| comm.starts_with("loopp"))
        .collect();
    assert!(
        node_user.len() >= 3,
        "expected the node and two plugins in the container: {processes:?}"
    );
    assert!(
        node_user.iter().all(|(_, uid, _)| *uid == 65532),
        "the container's processes must run as 65532: {processes:?}"
    );
    for plugin in ["devchain", "median"] {
        assert!(
            discovery.contains(&format!("\"__meta_plugin_name\":\"{plugin}\"")),
            "{plugin} is not a LOOPP in /discovery: {discovery}"
        );
    }
    assert!(
        stopped,
        "the node did not stop on SIGTERM within 30 s:\n{log}"
    );
}

/// The settings of `contrib/loopp.service` this test applies: its
/// environment, working and state directories, command and limits.
struct Unit {
    env: Vec<(String, String)>,
    exec: String,
    nofile: String,
    memory_max: String,
    tasks_max: String,
}

fn unit_settings(text: &str) -> Unit {
    let mut u = Unit {
        env: Vec::new(),
        exec: String::new(),
        nofile: String::new(),
        memory_max: String::new(),
        tasks_max: String::new(),
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "Environment" => {
                let (name, value) = v.split_once('=').expect("Environment=NAME=VALUE");
                u.env.push((name.to_string(), value.to_string()));
            }
            "ExecStart" => u.exec = v.to_string(),
            "LimitNOFILE" => u.nofile = v.to_string(),
            "MemoryMax" => u.memory_max = v.to_string(),
            "TasksMax" => u.tasks_max = v.to_string(),
            _ => {}
        }
    }
    assert!(!u.exec.is_empty() && !u.nofile.is_empty(), "{text}");
    u
}

/// The node runs its default job under the service unit's sandboxing, as
/// far as it can be had without systemd as PID 1: an unprivileged user with
/// no groups and no capabilities (DynamicUser, CapabilityBoundingSet=),
/// no_new_privs (NoNewPrivileges), every file system read-only but the
/// state and runtime directories (ProtectSystem=strict), a private /tmp
/// (PrivateTmp), the unit's environment, command and open-file limit, and
/// its memory and task limits as cgroup (v1) limits where the cgroup file
/// system is writable. Not emulated: the seccomp-based settings
/// (RestrictAddressFamilies, SystemCallArchitectures) and Protect{Kernel*,
/// Clock, Hostname}. A round is transmitted, the chain file and keys are in
/// the state directory, and SIGTERM stops it within TimeoutStopSec.
#[test]
fn the_node_runs_its_default_job_under_the_service_units_sandboxing() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        println!("not root: cannot make mount namespaces or switch users; not run");
        return;
    }
    let unit = unit_settings(UNIT);
    let sandbox = Sandbox::new("unit-run");
    // Short names: the runtime dir holds the plugins' sockets.
    let state = sandbox.dir.join("s");
    let runtime = sandbox.dir.join("r");
    let programs = Path::new(node()).parent().unwrap().display().to_string();
    let uid = 61_000 + std::process::id() % 1000;
    for d in [&state, &runtime] {
        std::fs::create_dir_all(d).unwrap();
        std::os::unix::fs::chown(d, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    }
    let port = crate::median::free_port();
    let on_host = |v: &str| {
        v.replace("/usr/local/bin/", &format!("{programs}/"))
            .replace("/var/lib/loopp", &state.display().to_string())
            .replace("/run/loopp", &runtime.display().to_string())
    };
    let mut env: Vec<(String, String)> = unit
        .env
        .iter()
        .map(|(k, v)| (k.clone(), on_host(v)))
        .collect();
    // What /etc/loopp/loopp.env would set: the HTTP port of this test.
    env.retain(|(k, _)| k != "JOB_ARGS");
    env.push(("JOB_ARGS".into(), format!("--http 127.0.0.1:{port}")));
    env.push(("PATH".into(), "/usr/bin:/bin".into()));
    env.push(("RUST_LOG".into(), "info".into()));

    // cgroup v1 limits, when they can be had.
    let cgroups: Vec<(std::path::PathBuf, &str, String)> = [
        ("memory", "memory.limit_in_bytes", unit.memory_max.clone()),
        ("pids", "pids.max", unit.tasks_max.clone()),
    ]
    .into_iter()
    .filter_map(|(ctl, file, value)| {
        let dir = Path::new("/sys/fs/cgroup")
            .join(ctl)
            .join(format!("loopp-test-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        Some((dir, file, value))
    })
    .collect();
    let mut join = String::new();
    for (dir, file, value) in &cgroups {
        join.push_str(&format!(
            "echo {value} > {0}/{file} && echo $$ > {0}/cgroup.procs && ",
            dir.display()
        ));
    }
    println!(
        "cgroup limits applied: {:?}",
        cgroups.iter().map(|c| c.1).collect::<Vec<_>>()
    );

    // LimitNOFILE, within the hard limit this test may raise to (systemd
    // sets the unit's value; a test run without CAP_SYS_RESOURCE cannot).
    let hard = {
        // SAFETY: getrlimit fills the struct it is given.
        let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
        r.rlim_max
    };
    let nofile = match unit.nofile.parse::<u64>() {
        Ok(n) if n > hard => {
            println!("LimitNOFILE={n} lowered to this test's hard limit {hard}");
            hard.to_string()
        }
        _ => unit.nofile.clone(),
    };

    // In a mount namespace of its own: state and runtime dirs writable,
    // a fresh /tmp, then everything else read-only; the proof of the last
    // is that a write beside the state dir fails.
    let outside = sandbox.dir.join("outside");
    let script = format!(
        r#"set -e
mount --make-rprivate /
mount --bind {state} {state}
mount --bind {runtime} {runtime}
mount -t tmpfs -o mode=1777,size=16m tmpfs /tmp
mount -o remount,bind,ro /
{join}true
if touch {outside} 2>/dev/null; then
  echo "the sandbox is not read-only" >&2; exit 97
fi
cd {state}
exec setpriv --reuid={uid} --regid={uid} --clear-groups --no-new-privs \
  --inh-caps=-all --bounding-set=-all -- \
  prlimit --nofile={nofile} -- {exec}"#,
        state = state.display(),
        runtime = runtime.display(),
        outside = outside.display(),
        exec = on_host(&unit.exec),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--fork", "--", "sh", "-c", &script])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("unshare");
    let (transmitted, mut log, rx) = until_transmitted(&mut child, Duration::from_secs(60));
    let processes = descendants(child.id());
    let health = ureq::get(&format!("http://127.0.0.1:{port}/health"))
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    // systemd stops the main process with SIGTERM (KillMode=mixed): the
    // node is the exec'd end of the chain under unshare.
    let main = processes
        .iter()
        .find(|(_, _, comm)| comm == "loopp-node")
        .map(|p| p.0);
    if let Some(pid) = main {
        // SAFETY: signalling the node this test started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    let stopped = wait_until(Duration::from_secs(30), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !stopped {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        log.push(line);
    }
    for (dir, ..) in &cgroups {
        let _ = std::fs::remove_dir(dir);
    }
    let log = log.join("\n");
    assert!(transmitted, "no round transmitted within 60 s:\n{log}");
    assert_eq!(health, 200, "/health:\n{log}");
    let ours: Vec<_> = processes
        .iter()
        .filter(|(_, _, comm)| comm.starts_with("loopp"))
        .collect();
    assert!(ours.len() >= 3, "node and two plugins: {processes:?}");
    assert!(
        ours.iter().all(|(_, u, _)| *u == uid),
        "every process runs as {uid}: {processes:?}"
    );
    assert!(stopped, "SIGTERM did not stop the node within 30 s:\n{log}");
    assert!(status.success(), "exit {status:?}:\n{log}");
    let chain = state.join("loopp-data/devchain/demo-usd.jsonl");
    let meta =
        std::fs::metadata(&chain).unwrap_or_else(|e| panic!("{}: {e}\n{log}", chain.display()));
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        uid,
        "the chain file belongs to the service's user"
    );
    assert!(state.join("loopp-data/keystore.secret").is_file(), "{log}");
    assert!(!outside.exists());
    assert!(
        std::fs::read_dir(&runtime).unwrap().next().is_none(),
        "sockets left in the runtime dir"
    );
}

/// The Dockerfile's build stage, run: `make static` in a build container,
/// then the FROM scratch image with its binary and links. No registry is
/// reachable here, so the stage's image (`RUST_IMAGE`) is an empty one
/// whose toolchain is the host's, mounted read-only (Rust, cmake, g++,
/// lld); the crates come from the host's cargo cache, and the build dir
/// is kept between runs (beside this build's, outside the clone), so only
/// the first run compiles gRPC's C core. Runs alone (.config/nextest.toml).
#[test]
fn the_dockerfiles_build_stage_builds_the_static_binary() {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{home}/.cargo"));
    let rustup_home = std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{home}/.rustup"));
    let sandbox = Sandbox::new("imgbuild");
    for d in ["tmp", "build-tmp"] {
        std::fs::create_dir_all(sandbox.dir.join(d)).unwrap();
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-build-target");
    std::fs::create_dir_all(&target).unwrap();

    // The stand-in for the Rust image: no files, the rust image's variables.
    let builder = buildah_ok(&sandbox, &["from", "scratch"], Duration::from_secs(60));
    buildah_ok(
        &sandbox,
        &[
            "config",
            "--env",
            "PATH=/opt/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "CARGO_HOME=/opt/cargo",
            "--env",
            "RUSTUP_HOME=/opt/rustup",
            "--env",
            "HOME=/root",
            &builder,
        ],
        Duration::from_secs(60),
    );
    buildah_ok(
        &sandbox,
        &["commit", "--quiet", &builder, "localhost/host-rust"],
        Duration::from_secs(60),
    );

    let volume = |host: &str, inside: &str, mode: &str| format!("{host}:{inside}:{mode}");
    let (mut bud, _) = buildah(&sandbox);
    bud.args(["bud", "--isolation", "chroot", "--quiet"])
        .args(["--build-arg", "RUST_IMAGE=localhost/host-rust"]);
    for v in [
        volume("/usr", "/usr", "ro"),
        volume("/usr/bin", "/bin", "ro"),
        volume("/usr/sbin", "/sbin", "ro"),
        volume("/usr/lib", "/lib", "ro"),
        volume("/usr/lib64", "/lib64", "ro"),
        volume("/etc", "/etc", "ro"),
        volume(&rustup_home, "/opt/rustup", "ro"),
        volume(&cargo_home, "/opt/cargo", "rw"),
        volume(&target.display().to_string(), "/src/target", "rw"),
        volume(
            &sandbox.dir.join("build-tmp").display().to_string(),
            "/tmp",
            "rw",
        ),
    ] {
        // A toolchain without rustup (Debian's cargo in /usr) has no
        // rustup home to mount.
        let host = v.split(':').next().unwrap_or_default();
        if Path::new(host).exists() {
            bud.args(["--volume", &v]);
        }
    }
    bud.args(["-f", concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")])
        .args(["-t", "localhost/loopp-built"])
        .arg(env!("CARGO_MANIFEST_DIR"));
    let t = std::time::Instant::now();
    let out = run_bounded(&mut bud, Duration::from_secs(40 * 60));
    let took = t.elapsed();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("the Dockerfile's build stage took {took:.0?}");

    // The image it made: the stripped static binary within the budget, and
    // the links a host starts the plugins by.
    let (mut from, _) = buildah(&sandbox);
    let made = out.status.success().then(|| {
        run_bounded(
            from.args(["from", "--name", "loopp-built", "localhost/loopp-built"]),
            Duration::from_secs(120),
        )
    });
    let (mut mount, _) = buildah(&sandbox);
    let root = made
        .as_ref()
        .filter(|o| o.status.success())
        .map(|_| {
            run_bounded(
                mount.args(["mount", "loopp-built"]),
                Duration::from_secs(60),
            )
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let bin = Path::new(&root).join("usr/local/bin");
    let size = std::fs::metadata(bin.join("loopp")).map(|m| m.len()).ok();
    let links: Vec<String> = [
        "loopp-node",
        "loopp-median",
        "loopp-devchain",
        "loopp-example",
    ]
    .iter()
    .filter(|l| std::fs::read_link(bin.join(l)).is_ok_and(|t| t == Path::new("loopp")))
    .map(|l| l.to_string())
    .collect();
    let version = (!root.is_empty()).then(|| {
        Command::new(bin.join("loopp"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    });
    buildah_clean(&sandbox);

    assert!(
        out.status.success(),
        "buildah bud failed after {took:?}:\n{log}"
    );
    let size = size.unwrap_or_else(|| panic!("no /usr/local/bin/loopp in the image ({root})"));
    assert!(
        size <= 8_000_000,
        "the image's loopp is {size} bytes, over the 8 MB budget"
    );
    assert_eq!(links.len(), 4, "links to loopp in the image: {links:?}");
    let version = version.unwrap_or_default();
    assert!(
        version.starts_with("loopp "),
        "loopp --version said {version:?}"
    );
}

/// KiB of `pid`'s code (the executable mapping of the loopp binary) that is
/// mapped, and the mapping's size.
fn code_mapped_kib(pid: u32) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut code = false;
    let (mut rss, mut size) = (0, 0);
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let perms = words.next().unwrap_or("");
            code = perms == "r-xp" && line.ends_with("/loopp");
            continue;
        }
        let kib = || {
            words
                .clone()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match first {
            "Size:" if code => size += kib(),
            "Rss:" if code => rss += kib(),
            _ => {}
        }
    }
    (rss, size)
}

/// Idle, the node and its two LOOPPs give back the code only start-up ran
/// (`loopp::pages`), and the code they run again sits together at the
/// start of the binary's (the link's symbol order,
/// contrib/symbol-order.txt): each keeps under a third of the binary's code
/// mapped (about a sixth here; without both, about 70%). Giving it back
/// loses nothing: the plugins keep answering health checks, none restarts.
#[test]
fn idle_processes_give_back_the_code_only_start_up_ran() {
    let sandbox = Sandbox::new("idle-code");
    let job = sandbox.dir.join("job.json");
    std::fs::write(
        &job,
        format!(
            r#"{{"data_dir": {:?}, "http": {{"listen": "off"}},
              "plugins": [{{"name": "devchain", "kind": "relayer"}}, {{"name": "median", "kind": "median"}}]}}"#,
            sandbox.dir.join("data")
        ),
    )
    .unwrap();
    let mut node = crate::proc::NodeProcess::start(&job, &crate::proc::loopp_env(&sandbox.dir));
    let mut pids = vec![("node".to_string(), node.pid())];
    while pids.len() < 3 {
        let line = node.wait_line(Duration::from_secs(30), |l| running_line(l).is_some());
        pids.extend(running_line(&line));
    }
    let bound = loopp::pages::SETTLE + Duration::from_secs(20);
    for (name, pid) in &pids {
        let gave_back = wait_until(bound, || {
            let (rss, size) = code_mapped_kib(*pid);
            size > 0 && rss < size / 3
        });
        let (rss, size) = code_mapped_kib(*pid);
        assert!(
            gave_back,
            "{name} (pid {pid}) still maps {rss} of {size} KiB of code {bound:?} after start"
        );
    }
    // Idle on: health checks run on the code that is mapped again.
    std::thread::sleep(Duration::from_secs(3));
    for (name, pid) in &pids {
        assert!(crate::proc::alive(*pid), "{name} (pid {pid}) died");
    }
    while let Ok(line) = node.lines.try_recv() {
        node.seen.push(line);
    }
    let restarts: Vec<&String> = node
        .seen
        .iter()
        .filter(|l| l.contains("restarting"))
        .collect();
    assert!(restarts.is_empty(), "plugins restarted: {restarts:?}");
    node.stop();
}

/// glibc malloc arenas other than the main one in `pid`: each is a 64 MiB
/// aligned reservation, its used part read-write and the rest inaccessible
/// (anonymous mappings, as /proc/PID/maps lists them).
fn malloc_arenas(pid: u32) -> usize {
    const HEAP: u64 = 64 << 20;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let anon: Vec<(u64, u64, String)> = maps
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (range, perms) = (w.next()?, w.next()?);
            // Offset, device, inode, and no path.
            if w.nth(3).is_some() {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let hex = |s| u64::from_str_radix(s, 16).ok();
            Some((hex(a)?, hex(b)?, perms.to_string()))
        })
        .collect();
    anon.iter()
        .enumerate()
        .filter(|(i, (start, end, perms))| {
            perms == "rw-p"
                && start % HEAP == 0
                && (end - start == HEAP
                    || anon
                        .get(i + 1)
                        .is_some_and(|(s, e, p)| s == end && *e == start + HEAP && p == "---p"))
        })
        .count()
}

/// Every thread of a loopp process allocates from glibc's main arena
/// (`loopp::malloc`): a plugin that started its twenty-odd threads and
/// served calls on them holds no other arena. An operator's
/// MALLOC_ARENA_MAX is left to glibc, which then makes arenas as threads
/// need them (so the count above sees them).
#[test]
fn a_loopp_process_allocates_from_one_arena_unless_the_operator_sets_more() {
    use loopp::goplugin::handshake::Cookie;
    use loopp::goplugin::host::{Client, HostConfig};
    let sandbox = Sandbox::new("arenas");
    for (arena_max, more) in [("", false), ("4", true)] {
        let mut c = HostConfig::new(
            "example",
            crate::programs::program("loopp-example"),
            Cookie::example(),
        );
        c.socket_dir = Some(sandbox.dir.clone());
        c.start_timeout = Duration::from_secs(10);
        // Set (empty: not a setting) over whatever the test runs under.
        c.env = vec![
            ("MALLOC_ARENA_MAX".into(), arena_max.into()),
            ("GLIBC_TUNABLES".into(), "".into()),
        ];
        let mut client = Client::start(&c).expect("start");
        for _ in 0..50 {
            client.ping().expect("ping");
        }
        let arenas = malloc_arenas(client.pid());
        client.kill();
        if more {
            assert!(
                arenas >= 1,
                "with MALLOC_ARENA_MAX={arena_max} the plugin made no arena of its own: the count cannot see one"
            );
        } else {
            assert_eq!(
                arenas, 0,
                "the plugin made {arenas} malloc arenas besides the main one"
            );
        }
    }
}
