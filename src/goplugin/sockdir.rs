//! Private socket directories: a fresh `loopp-XXXXXX` directory, mode 0700, for
//! one process's unix sockets, removed with everything in it when dropped.
//!
//! Where: `$PLUGIN_UNIX_SOCKET_DIR` (go-plugin's variable), else `$TMPDIR`, else
//! `/tmp`. Paths stay short because unix socket paths are limited to 107 bytes.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The prefix of every directory loopp creates; the host only ever removes a
/// plugin's directory when its name has this prefix.
pub const PREFIX: &str = "loopp-";

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

fn default_base() -> PathBuf {
    std::env::var_os("PLUGIN_UNIX_SOCKET_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// mkdtemp under `base`: a fresh `loopp-XXXXXX`, mode 0700.
fn make_dir(base: &Path) -> io::Result<PathBuf> {
    let template = base.join(format!("{PREFIX}XXXXXX"));
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

    /// A path for a socket named `name` inside the directory (created if lazy).
    pub fn path(&self, name: &str) -> io::Result<PathBuf> {
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
            // Only sockets live there; remove them, then the directory.
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_socket()) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}
