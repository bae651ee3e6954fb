//! Finding a plugin's program as exec would, and saying why it cannot run.
//!
//! One lookup for the node's configuration check (`CL_<NAME>_CMD`, on the
//! node's `PATH`) and for every start (on the `PATH` the plugin gets): a
//! command with a `/` is that file; a bare name is the first executable
//! regular file of that name in a `PATH` directory (empty entries, which
//! exec would take as the current directory, are skipped). When there is
//! none, [`NotRunnable`] says which case it is: no such file, a directory,
//! a file without execute permission (with its mode), or a name on no
//! `PATH` directory (naming them), so the operator knows what to fix.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a command names nothing that can be run: the reason, and the
/// kind of I/O error it is (not found, permission denied, or neither).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotRunnable {
    kind: std::io::ErrorKind,
    reason: String,
}

impl fmt::Display for NotRunnable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for NotRunnable {}

impl NotRunnable {
    /// The same, with `more` added to the reason.
    fn and(mut self, more: String) -> NotRunnable {
        self.reason.push_str(&more);
        self
    }
}

impl From<NotRunnable> for std::io::Error {
    fn from(e: NotRunnable) -> std::io::Error {
        std::io::Error::new(e.kind, e.reason)
    }
}

/// `program` as exec would find it, `path` being the `PATH` it is looked
/// up on (`None`: not set).
pub fn find(program: &OsStr, path: Option<&OsStr>) -> Result<PathBuf, NotRunnable> {
    let named = Path::new(program);
    if program.as_encoded_bytes().contains(&b'/') {
        return runnable(named)
            .map(|()| named.to_path_buf())
            .map_err(|why| why.of(named));
    }
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return Err(NotRunnable {
            kind: std::io::ErrorKind::NotFound,
            reason: format!(
                "{} is not a path and PATH is empty or not set: give the program's path",
                named.display()
            ),
        });
    };
    let dirs: Vec<PathBuf> = std::env::split_paths(path)
        .filter(|d| !d.as_os_str().is_empty())
        .collect();
    let mut unusable = None;
    for dir in &dirs {
        let candidate = dir.join(named);
        match runnable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(Why::Missing) => {}
            Err(why) => {
                unusable.get_or_insert((candidate, why));
            }
        }
    }
    Err(match unusable {
        Some((candidate, why)) => why.of(&candidate).and(format!(
            ", and no other PATH directory has {}",
            named.display()
        )),
        None => NotRunnable {
            kind: std::io::ErrorKind::NotFound,
            reason: format!(
                "no {} in any PATH directory ({})",
                named.display(),
                std::env::join_paths(&dirs)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
        },
    })
}

/// What is wrong with a file as a program.
enum Why {
    Missing,
    Unreadable(std::io::Error),
    Directory,
    NotAFile,
    NotExecutable(u32),
}

impl Why {
    /// The error for `file`, which this is wrong with.
    fn of(&self, file: &Path) -> NotRunnable {
        use std::io::ErrorKind;
        let kind = match self {
            Why::Missing => ErrorKind::NotFound,
            Why::Unreadable(_) | Why::NotExecutable(_) => ErrorKind::PermissionDenied,
            Why::Directory | Why::NotAFile => ErrorKind::InvalidInput,
        };
        NotRunnable {
            kind,
            reason: format!("{} {self}", file.display()),
        }
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Missing => f.write_str("does not exist"),
            Why::Unreadable(e) => write!(f, "cannot be looked at: {e}"),
            Why::Directory => f.write_str("is a directory, not a program"),
            Why::NotAFile => f.write_str("is not a regular file"),
            Why::NotExecutable(mode) => write!(
                f,
                "is not executable (mode {:o}): make it executable (chmod +x) or name another file",
                mode & 0o7777
            ),
        }
    }
}

fn runnable(p: &Path) -> Result<(), Why> {
    let meta = std::fs::metadata(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => Why::Missing,
        _ => Why::Unreadable(e),
    })?;
    if meta.is_dir() {
        Err(Why::Directory)
    } else if !meta.is_file() {
        Err(Why::NotAFile)
    } else if meta.permissions().mode() & 0o111 == 0 {
        Err(Why::NotExecutable(meta.permissions().mode()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn find_s(program: &str, path: Option<&OsStr>) -> Result<PathBuf, String> {
        find(OsStr::new(program), path).map_err(|e| e.to_string())
    }

    #[test]
    fn a_path_is_that_file_and_what_is_wrong_with_it_is_named() {
        let dir = crate::testutil::fresh_dir("program-test");
        let good = file(&dir, "good", 0o755);
        let plain = file(&dir, "plain", 0o644);
        let d = |p: &Path| p.display().to_string();
        assert_eq!(find_s(&d(&good), None), Ok(good.clone()));
        assert_eq!(
            find_s(&d(&plain), None),
            Err(format!(
                "{} is not executable (mode 644): make it executable (chmod +x) or name another file",
                d(&plain)
            ))
        );
        assert_eq!(
            find_s(&d(&dir), None),
            Err(format!("{} is a directory, not a program", d(&dir)))
        );
        let missing = dir.join("missing");
        assert_eq!(
            find_s(&d(&missing), None),
            Err(format!("{} does not exist", d(&missing)))
        );
        // Under a file: ENOTDIR, which is "does not exist" too.
        let under = good.join("x");
        assert_eq!(
            find_s(&d(&under), None),
            Err(format!("{} does not exist", d(&under)))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_io_error_kind_follows_the_reason() {
        use std::io::ErrorKind;
        let dir = crate::testutil::fresh_dir("program-test");
        let plain = file(&dir, "plain", 0o644);
        let kind = |p: &Path| std::io::Error::from(find(p.as_os_str(), None).unwrap_err()).kind();
        assert_eq!(kind(&dir.join("missing")), ErrorKind::NotFound);
        assert_eq!(kind(&plain), ErrorKind::PermissionDenied);
        assert_eq!(kind(&dir), ErrorKind::InvalidInput);
        let empty = std::env::join_paths([&dir]).unwrap();
        let on_path = |name: &str| {
            std::io::Error::from(find(OsStr::new(name), Some(&empty)).unwrap_err()).kind()
        };
        assert_eq!(on_path("missing"), ErrorKind::NotFound);
        assert_eq!(on_path("plain"), ErrorKind::PermissionDenied);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_name_is_the_first_executable_file_on_path() {
        let dir = crate::testutil::fresh_dir("program-test");
        let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
        for d in [&a, &b, &c] {
            std::fs::create_dir(d).unwrap();
        }
        file(&a, "plug", 0o644);
        std::fs::create_dir(b.join("plug")).unwrap();
        let found = file(&c, "plug", 0o700);
        let path = std::env::join_paths([&a, &b, &c]).unwrap();
        assert_eq!(find_s("plug", Some(&path)), Ok(found));
        // An empty entry is skipped, not taken as the current directory.
        let with_empty: OsString = format!(":{}", c.display()).into();
        assert_eq!(find_s("plug", Some(&with_empty)), Ok(c.join("plug")));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_name_on_no_path_directory_says_which_were_looked_at_or_what_was_found() {
        let dir = crate::testutil::fresh_dir("program-test");
        let (a, b) = (dir.join("a"), dir.join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).unwrap();
        }
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(
            find_s("plug", Some(&path)),
            Err(format!(
                "no plug in any PATH directory ({}:{})",
                a.display(),
                b.display()
            ))
        );
        let plain = file(&b, "plug", 0o600);
        assert_eq!(
            find_s("plug", Some(&path)),
            Err(format!(
                "{} is not executable (mode 600): make it executable (chmod +x) or name another file, and no other PATH directory has plug",
                plain.display()
            ))
        );
        assert_eq!(
            find_s("plug", None),
            Err("plug is not a path and PATH is empty or not set: give the program's path".into())
        );
        assert_eq!(
            find_s("plug", Some(OsStr::new(""))),
            Err("plug is not a path and PATH is empty or not set: give the program's path".into())
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
