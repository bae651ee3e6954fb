//! The Go test programs of `tests/go` for the benchmarks (`gohost`,
//! `goplugin`, `gomedian`, ...), built once per benchmark process by
//! `tests/go/build.sh` (offline, Debian's go-plugin and grpc-go) into this
//! build's tmp dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of Go test program `name`, built if needed.
pub fn go_program(name: &str) -> PathBuf {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/build.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg(&out)
            .status()
            .expect("run tests/go/build.sh");
        assert!(status.success(), "tests/go/build.sh failed");
        out
    })
    .join(name)
}
