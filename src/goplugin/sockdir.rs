//! Private socket directories: a fresh `loopp-XXXXXX` directory, mode 0700, for
//! one process's unix sockets, removed with everything in it when dropped.
//!
//! Where: `$PLUGIN_UNIX_SOCKET_DIR` (go-plugin's variable), else `$TMPDIR`, else
//! `/tmp`. Paths stay short because unix socket paths are limited to 107 bytes.
//!
//! A directory is named after the process that made it, `loopp-PID-XXXXXX`,
//! and holds an [`OWNER`] file naming that process (pid and start time), so a
//! directory whose process was SIGKILLed can be told from a live one and
//! removed ([`remove_stale`], run by the node at start). A plugin writes its
//! owner file only once its start has settled ([`SocketDir::create_unowned`]):
//! the file cost a start on ext4 90-140 µs before the handshake, and as much
//! right after it (docs/SCALE.md). Until then the pid in the name suffices: a
//! directory whose named process runs, or whose name has no pid, is never
//! removed, so only a reused pid is not told apart, and that errs towards
//! keeping a directory.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The prefix of every directory loopp creates; the host only ever removes a
/// plugin's directory when its name has this prefix.
pub const PREFIX: &str = "loopp-";

/// The file in each socket directory naming its process: `pid start-time`
/// (the start time from `/proc/PID/stat`, so a reused pid is not taken for
/// the owner).
pub const OWNER: &str = "owner";

/// `pid`'s start time (clock ticks after boot), if it runs.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is 0, starttime is 19.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// A private directory for sockets. Clones share it; the last drop removes it.
/// A lazy one is only created when a socket path is first asked for, so a
/// host that never serves on its broker leaves nothing behind even if killed.
#[derive(Clone, Debug)]
pub struct SocketDir {
    inner: Arc<Dir>,
}

#[derive(Debug)]
struct Dir {
    base: Option<PathBuf>,
    path: OnceLock<PathBuf>,
    creating: Mutex<()>,
}

/// The base the default socket directories are made under:
/// `$PLUGIN_UNIX_SOCKET_DIR`, else `$TMPDIR`, else `/tmp`.
pub fn default_base() -> PathBuf {
    std::env::var_os("PLUGIN_UNIX_SOCKET_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// The longest unix socket path the kernel takes (`sun_path` is 108 bytes
/// with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The longest pid Linux gives (`PID_MAX_LIMIT`, 4,194,304): 7 digits.
const PID_DIGITS: usize = 7;

/// The longest name of a socket in a directory ([`SocketDir::path`] refuses
/// longer ones): `id-4294967295`, `broker.sock`, `plugin.sock`. With the
/// directory's name it leaves a base of 71 bytes, as before pids were in
/// directories' names.
pub const MAX_NAME: usize = 14;

/// The longest socket path loopp makes under a base directory, past the
/// base: `/loopp-4194304-XXXXXX/` and a name of [`MAX_NAME`] bytes.
const LONGEST_UNDER_BASE: usize = 1 + PREFIX.len() + PID_DIGITS + 1 + 6 + 1 + MAX_NAME;

/// Checks that every socket loopp may make under `base` fits a unix socket
/// path; the error names the base, the limit and what to do.
pub fn check_base(base: &Path) -> io::Result<()> {
    let longest = base.as_os_str().len() + LONGEST_UNDER_BASE;
    if longest > MAX_SOCKET_PATH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the socket directory base {} is too long: sockets under it take up to {longest} \
                 bytes, and unix socket paths are limited to {MAX_SOCKET_PATH}; set \
                 PLUGIN_UNIX_SOCKET_DIR (or TMPDIR) to a directory of at most {} bytes",
                base.display(),
                MAX_SOCKET_PATH - LONGEST_UNDER_BASE
            ),
        ));
    }
    Ok(())
}

/// mkdtemp under `base`: a fresh `loopp-PID-XXXXXX`, mode 0700, no owner
/// file yet.
fn make_dir(base: &Path) -> io::Result<PathBuf> {
    check_base(base)?;
    let template = base.join(format!("{PREFIX}{}-XXXXXX", std::process::id()));
    let c = CString::new(template.into_os_string().into_vec())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in socket dir path"))?;
    let raw = c.into_raw();
    // SAFETY: `raw` is a NUL-terminated, writable buffer we own; mkdtemp
    // rewrites the XXXXXX in place and returns it or NULL.
    let res = unsafe { libc::mkdtemp(raw) };
    // SAFETY: takes back ownership of the buffer from into_raw above.
    let c = unsafe { CString::from_raw(raw) };
    if res.is_null() {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!(
                "cannot create a socket directory in {}: {err}",
                base.display()
            ),
        ));
    }
    Ok(PathBuf::from(std::ffi::OsString::from_vec(c.into_bytes())))
}

/// Writes `dir`'s owner file: this process's pid and start time.
fn write_owner(dir: &Path) -> io::Result<()> {
    let me = std::process::id();
    let owner = format!("{me} {}\n", start_time(me).unwrap_or(0));
    std::fs::write(dir.join(OWNER), owner).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot write {}: {e}", dir.join(OWNER).display()),
        )
    })
}

/// The pid in a directory name `loopp-PID-XXXXXX`, if it has one (names
/// of older versions, `loopp-XXXXXX`, do not).
fn named_pid(name: &str) -> Option<u32> {
    let (pid, rest) = name.strip_prefix(PREFIX)?.split_once('-')?;
    let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    (digits && rest.len() == 6)
        .then(|| pid.parse().ok())
        .flatten()
}

impl SocketDir {
    /// Creates a fresh directory now, under `$PLUGIN_UNIX_SOCKET_DIR`, else
    /// `$TMPDIR`, else `/tmp`.
    pub fn create() -> io::Result<SocketDir> {
        SocketDir::create_in(&default_base())
    }

    /// Creates a fresh directory now, under `base`.
    pub fn create_in(base: &Path) -> io::Result<SocketDir> {
        let dir = SocketDir::lazy(Some(base.to_path_buf()));
        dir.ensure()?;
        Ok(dir)
    }

    /// Creates a fresh directory now, under the default base, without its
    /// owner file: for a start, where every step before the handshake counts.
    /// Call [`SocketDir::own`] once started; until then the pid in the
    /// directory's name is what tells it from a stale one.
    pub fn create_unowned() -> io::Result<SocketDir> {
        SocketDir::create_unowned_in(&default_base())
    }

    fn create_unowned_in(base: &Path) -> io::Result<SocketDir> {
        let made = make_dir(base)?;
        let dir = SocketDir::lazy(Some(base.to_path_buf()));
        let _ = dir.inner.path.set(made);
        Ok(dir)
    }

    /// Writes the owner file of a directory made by
    /// [`SocketDir::create_unowned`] (a lazy one not made yet: nothing to do).
    pub fn own(&self) -> io::Result<()> {
        match self.inner.path.get() {
            Some(p) => write_owner(p),
            None => Ok(()),
        }
    }

    /// A directory under `base` (None: the default base) made on first use.
    pub fn lazy(base: Option<PathBuf>) -> SocketDir {
        SocketDir {
            inner: Arc::new(Dir {
                base,
                path: OnceLock::new(),
                creating: Mutex::new(()),
            }),
        }
    }

    fn ensure(&self) -> io::Result<&Path> {
        if let Some(p) = self.inner.path.get() {
            return Ok(p);
        }
        let _guard = self.inner.creating.lock().unwrap();
        if let Some(p) = self.inner.path.get() {
            return Ok(p);
        }
        let base = self.inner.base.clone().unwrap_or_else(default_base);
        let made = make_dir(&base)?;
        if let Err(e) = write_owner(&made) {
            let _ = std::fs::remove_dir(&made);
            return Err(e);
        }
        Ok(self.inner.path.get_or_init(|| made))
    }

    /// The directory, if it exists yet.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.path.get().map(PathBuf::as_path)
    }

    /// Removes the directory and its sockets now (the last drop would too).
    pub fn remove(&self) {
        if let Some(p) = self.inner.path.get() {
            let _ = std::fs::remove_dir_all(p);
        }
    }

    /// A path for a socket named `name` inside the directory (created if
    /// lazy). A name longer than [`MAX_NAME`] is refused: the base was
    /// checked for names up to that.
    pub fn path(&self, name: &str) -> io::Result<PathBuf> {
        if name.len() > MAX_NAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket name {name:?} is over {MAX_NAME} bytes (a bug in loopp)"),
            ));
        }
        Ok(self.ensure()?.join(name))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if let Some(p) = self.path.get() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Removes what a plugin that died without cleaning up left at its handshake
/// address: the socket file, and its directory when loopp made it (named
/// `loopp-*`). Never touches anything that is not a socket or a loopp directory.
pub fn remove_leftovers(address: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(address) {
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(address);
        }
    }
    if let Some(dir) = address.parent() {
        let ours = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(PREFIX));
        if ours {
            clear(dir);
        }
    }
}

/// Removes the socket at `path` if nothing listens on it any more (a
/// connection is refused): what a plugin that is gone announced on its
/// broker. A socket something still serves (an address handed on from
/// another process) and anything that is not a socket stay; so do
/// directories.
pub fn remove_if_dead(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return;
    }
    let refused = std::os::unix::net::UnixStream::connect(path)
        .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused);
    if refused {
        let _ = std::fs::remove_file(path);
    }
}

/// Removes a loopp directory's sockets and owner file, then the directory
/// (which stays if anything else is in it).
fn clear(dir: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let owner_file = e.file_name() == OWNER;
            if owner_file || e.file_type().is_ok_and(|t| t.is_socket()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Removes the socket directories under `base` whose process is gone: its
/// owner file names a pid that no longer runs, or runs another process; or,
/// without an owner file (a plugin that died starting), the pid in its name
/// no longer runs. Leaves directories with neither (being made, older
/// versions' being made, or not loopp's) and anything not named `loopp-*`.
/// Returns how many it removed.
pub fn remove_stale(base: &Path) -> usize {
    remove_stale_where(base, |_| true)
}

/// [`remove_stale`] for the directories process `pid` made: what a plugin
/// that died before its handshake (so before telling its address) left.
/// Call it once the process is reaped.
pub fn remove_stale_of(base: &Path, pid: u32) -> usize {
    remove_stale_where(base, |owner| owner == u64::from(pid))
}

fn remove_stale_where(base: &Path, owned_by: impl Fn(u64) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let ours = name.to_str().is_some_and(|n| n.starts_with(PREFIX));
        if !ours || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let gone = match std::fs::read_to_string(e.path().join(OWNER)) {
            Ok(owner) => {
                let mut fields = owner.split_whitespace().map(|f| f.parse::<u64>().ok());
                let (Some(Some(pid)), Some(Some(started))) = (fields.next(), fields.next()) else {
                    continue;
                };
                owned_by(pid)
                    && u32::try_from(pid)
                        .ok()
                        .and_then(start_time)
                        .is_none_or(|t| t != started)
            }
            // No owner file (yet): the named process, if gone.
            Err(_) => name
                .to_str()
                .and_then(named_pid)
                .is_some_and(|pid| owned_by(u64::from(pid)) && start_time(pid).is_none()),
        };
        if gone {
            clear(&e.path());
            if !e.path().exists() {
                removed += 1;
            }
        }
    }
    removed
}

/// [`remove_stale`] under the default base (`$PLUGIN_UNIX_SOCKET_DIR`, else
/// `$TMPDIR`, else `/tmp`).
pub fn remove_stale_in_default() -> usize {
    remove_stale(&default_base())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_too_deep_for_socket_paths_is_refused_before_anything_is_made() {
        assert!(check_base(Path::new("/tmp")).is_ok());
        let fits = format!("/{}", "a".repeat(MAX_SOCKET_PATH - LONGEST_UNDER_BASE - 1));
        assert!(check_base(Path::new(&fits)).is_ok());
        let deep = format!("{fits}b");
        let err = check_base(Path::new(&deep)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("limited to 107"), "{err}");
        // mkdtemp is not even tried.
        let err = SocketDir::create_in(Path::new(&deep)).unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
    }

    #[test]
    fn stale_directories_go_and_live_ones_stay() {
        let base = crate::testutil::TempDir::new("sockdir-stale");
        let live = SocketDir::create_in(&base.0).unwrap();
        let live_path = live.dir().unwrap().to_path_buf();
        // A process that ran and is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        let dead_start = start_time(dead).unwrap_or(1);
        child.wait().unwrap();
        let stale = base.0.join("loopp-STALE1");
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join(OWNER), format!("{dead} {dead_start}\n")).unwrap();
        let sock = std::os::unix::net::UnixListener::bind(stale.join("plugin.sock")).unwrap();
        drop(sock);
        // A reused pid: ours, with another start time.
        let reused = base.0.join("loopp-REUSED");
        std::fs::create_dir(&reused).unwrap();
        std::fs::write(reused.join(OWNER), format!("{} 1\n", std::process::id())).unwrap();
        // Not loopp's, or no owner: left alone.
        let other = base.0.join("other-dir");
        std::fs::create_dir(&other).unwrap();
        let unowned = base.0.join("loopp-NOOWNR");
        std::fs::create_dir(&unowned).unwrap();

        // Named after a process, without an owner file: what a plugin
        // leaves in its first seconds. Of the gone process: stale; of a
        // running one (ours): kept.
        let named_dead = base.0.join(format!("{PREFIX}{dead}-AbCdEf"));
        std::fs::create_dir(&named_dead).unwrap();
        let named_live = base
            .0
            .join(format!("{PREFIX}{}-GhIjKl", std::process::id()));
        std::fs::create_dir(&named_live).unwrap();

        assert_eq!(remove_stale(&base.0), 3);
        assert!(!stale.exists() && !reused.exists() && !named_dead.exists());
        assert!(live_path.exists() && other.exists() && unowned.exists());
        assert!(named_live.exists());
        drop(live);
        assert!(!live_path.exists(), "a SocketDir still removes itself");
    }

    #[test]
    fn a_directory_is_named_after_its_process_and_owned_once_told() {
        let base = crate::testutil::TempDir::new("sockdir-owned");
        let dir = SocketDir::create_unowned_in(&base.0).unwrap();
        let path = dir.dir().unwrap().to_path_buf();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        assert!(path.starts_with(&base.0), "{}", path.display());
        assert_eq!(named_pid(&name), Some(std::process::id()), "{name}");
        assert!(!path.join(OWNER).exists(), "no owner file before own()");
        // A sweep for this pid leaves it: the process runs.
        assert_eq!(remove_stale_of(&base.0, std::process::id()), 0);
        dir.own().unwrap();
        let owner = std::fs::read_to_string(path.join(OWNER)).unwrap();
        let me = std::process::id();
        assert_eq!(owner, format!("{me} {}\n", start_time(me).unwrap()));
        assert_eq!(remove_stale_of(&base.0, me), 0);
        // A directory made by `create_in` has its owner file at once.
        let at_once = SocketDir::create_in(&base.0).unwrap();
        assert!(at_once.dir().unwrap().join(OWNER).exists());
    }

    #[test]
    fn every_socket_fits_under_the_deepest_base_allowed() {
        let deepest = format!("/{}", "d".repeat(MAX_SOCKET_PATH - LONGEST_UNDER_BASE - 1));
        assert_eq!(deepest.len(), 71, "the base budget stays what it was");
        let longest = Path::new(&deepest)
            .join(format!("{PREFIX}4194304-XXXXXX"))
            .join("n".repeat(MAX_NAME));
        assert_eq!(longest.as_os_str().len(), MAX_SOCKET_PATH);
        assert!(format!("id-{}", u32::MAX).len() <= MAX_NAME);
        for name in ["plugin.sock", "broker.sock"] {
            assert!(name.len() <= MAX_NAME, "{name}");
        }
        let base = crate::testutil::TempDir::new("sockdir-names");
        let dir = SocketDir::create_in(&base.0).unwrap();
        assert!(dir.path(&format!("id-{}", u32::MAX)).is_ok());
        let err = dir.path("a-name-too-long").unwrap_err();
        assert!(err.to_string().contains("over 14 bytes"), "{err}");
    }

    #[test]
    fn only_a_socket_nothing_listens_on_is_removed_as_dead() {
        let base = crate::testutil::TempDir::new("sockdir-dead");
        let dead = base.0.join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let live = base.0.join("live.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let file = base.0.join("plain");
        std::fs::write(&file, "x").unwrap();
        for p in [&dead, &live, &file, &base.0.join("missing")] {
            remove_if_dead(p);
        }
        assert!(!dead.exists(), "a socket nobody serves goes");
        assert!(live.exists(), "a served one stays");
        assert!(file.exists(), "a file that is not a socket stays");
    }

    #[test]
    fn only_names_with_a_pid_and_a_six_character_suffix_name_a_process() {
        assert_eq!(named_pid("loopp-1234-AbCdEf"), Some(1234));
        assert_eq!(named_pid("loopp-4194304-a1b2c3"), Some(4_194_304));
        for not in [
            "loopp-AbCdEf",
            "loopp--AbCdEf",
            "loopp-12a4-AbCdEf",
            "loopp-1234-AbCdE",
            "loopp-1234",
            "other-1234-AbCdEf",
            "loopp-99999999999-AbCdEf",
        ] {
            assert_eq!(named_pid(not), None, "{not}");
        }
    }
}
