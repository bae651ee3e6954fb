//! Packaging: the systemd unit passes `systemd-analyze verify` (when systemd
//! is installed) with real binaries in its paths, and `make install-service`
//! / `make uninstall` put it and take everything away under DESTDIR.

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
    use std::io::BufRead;
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
    let (mut from, _) = buildah(&sandbox);
    let out = run_bounded(
        from.args(["from", "--name", "loopp-test", image]),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let stderr = child.stderr.take().unwrap();
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
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let transmitted = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let done = line.contains("transmitted median");
                log.push(line);
                if done {
                    break true;
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(_) => break false,
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
    };
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
    let (mut rm, _) = buildah(&sandbox);
    let _ = run_bounded(rm.args(["rm", "--all"]), Duration::from_secs(60));
    let (mut rmi, _) = buildah(&sandbox);
    let _ = run_bounded(
        rmi.args(["rmi", "--all", "--force"]),
        Duration::from_secs(60),
    );

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
