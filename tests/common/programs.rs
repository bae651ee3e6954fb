//! The programs of the multi-call binary `loopp` under the names a host
//! starts them by (`loopp-median`, ...): `CL_<NAME>_CMD` takes a command,
//! not arguments, so tests run them through links, as an installed loopp
//! is run. Shared by the integration tests and the benchmarks.
//!
//! The links live in this build's tmp dir (`CARGO_TARGET_TMPDIR`, inside
//! the target dir, never /tmp), in a directory named after the binary they
//! point to, so builds of other profiles or targets keep their own. Each is
//! made under a temporary name and renamed into place: test processes that
//! race to make it all see a whole link.

// Each user (a test binary, a benchmark) needs only some of the programs.
#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// This build's `loopp` binary.
pub const LOOPP: &str = env!("CARGO_BIN_EXE_loopp");

/// The path of `loopp` invoked as `name` (e.g. `loopp-median`).
pub fn program(name: &str) -> &'static str {
    static MADE: OnceLock<Mutex<Vec<(String, &'static str)>>> = OnceLock::new();
    let mut made = MADE.get_or_init(Default::default).lock().unwrap();
    if let Some((_, path)) = made.iter().find(|(n, _)| n == name) {
        return path;
    }
    let mut h = DefaultHasher::new();
    LOOPP.hash(&mut h);
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("programs-{:016x}", h.finish()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(name);
    let fresh = std::fs::read_link(&link).is_ok_and(|to| to == std::path::Path::new(LOOPP));
    if !fresh {
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(LOOPP, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
    }
    let path: &'static str = Box::leak(link.to_str().unwrap().to_string().into_boxed_str());
    made.push((name.to_string(), path));
    path
}

/// `loopp-node`.
pub fn node() -> &'static str {
    program("loopp-node")
}

/// `loopp-median`.
pub fn median() -> &'static str {
    program("loopp-median")
}

/// `loopp-devchain`.
pub fn devchain() -> &'static str {
    program("loopp-devchain")
}

/// `loopp-example`.
pub fn example() -> &'static str {
    program("loopp-example")
}
