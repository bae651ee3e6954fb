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
    let bin = Path::new(NODE).parent().unwrap().display().to_string();
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
                .arg(format!("DESTDIR={}", sandbox.dir.display())),
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
    // What `make install` puts there, then uninstall takes it all away.
    let bin = sandbox.dir.join("opt/loopp/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for b in [
        "loopp-node",
        "loopp-devchain",
        "loopp-median",
        "loopp-example",
    ] {
        std::fs::write(bin.join(b), "").unwrap();
    }
    make("uninstall");
    let left: Vec<_> = std::fs::read_dir(&bin).unwrap().flatten().collect();
    assert!(left.is_empty(), "left after uninstall: {left:?}");
    assert!(!unit.exists(), "the unit is left after uninstall");
}
