//! The plugin's OS process, host side: spawn, read its stdout and stderr and
//! notice its exit on one thread, signal it, wait for it with a bound, reap it.
//!
//! Invariants:
//! - the child gets its own process group and `PR_SET_PDEATHSIG(SIGTERM)`, so it
//!   is told when the spawning thread (a supervisor, which outlives it) dies;
//! - its exit is noticed without reaping (a pidfd, or a waiter thread's
//!   `waitid(WNOWAIT)` on kernels without pidfds); then whatever is left in
//!   the child's process group is killed, the process marked exited, and only
//!   then reaped: signals are sent only while the pid is still ours;
//! - stdout and stderr are drained until EOF whatever the plugin writes, with
//!   bounded memory (see [`crate::goplugin::logline`]);
//! - one thread per plugin does all of that (two without pidfds).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitStatus;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::spawn::{self, Rlimit};
use crate::goplugin::handshake;
use crate::goplugin::logline::{Line, LineSplitter, Parser, Record};

/// Lines of stderr kept for error messages.
const TAIL_LINES: usize = 20;
/// Longest stderr line kept in the tail.
const TAIL_LINE_MAX: usize = 512;

/// What the stdout reader reports about the handshake line.
#[derive(Debug)]
pub enum FirstLine {
    /// The first line (cut to [`handshake::MAX_LINE`]).
    Line(String),
    /// Stdout closed before a line.
    Eof,
}

/// A running (or exited, not yet forgotten) plugin process.
pub struct Process {
    pid: libc::pid_t,
    name: String,
    state: Arc<(Mutex<Option<ExitStatus>>, Condvar)>,
    exited_rx: Receiver<()>,
    first_line: Receiver<FirstLine>,
    tail: Arc<Mutex<VecDeque<String>>>,
    stderr_done: Receiver<()>,
}

/// What to run.
pub struct Spawn<'a> {
    /// Plugin name, for logs.
    pub name: &'a str,
    /// Executable.
    pub program: &'a OsString,
    /// Arguments.
    pub args: &'a [OsString],
    /// Extra environment (added to the host's).
    pub env: &'a [(OsString, OsString)],
    /// Resource limits set in the child before exec.
    pub limits: &'a [Limit],
    /// The executable's pinned SHA-256: it is hashed and executed through
    /// one open file, so nothing can swap it in between.
    pub sha256: Option<[u8; 32]>,
}

/// Why a pinned executable was not started.
#[derive(Debug)]
pub enum PinError {
    /// Opening or reading it failed.
    Io(std::io::Error),
    /// Its hash is another: (expected, actual).
    Mismatch([u8; 32], [u8; 32]),
}

/// Opens `path` (the command as exec would find it with the plugin's `env`:
/// see [`resolve`]) and checks its SHA-256; returns the open file to exec.
fn open_pinned(
    path: &OsString,
    env: &[(OsString, OsString)],
    expected: [u8; 32],
) -> Result<std::fs::File, PinError> {
    use sha2::Digest;
    use std::io::Read;
    let resolved = resolve(path, env).map_err(|e| PinError::Io(e.into()))?;
    let mut file = std::fs::File::open(resolved).map_err(PinError::Io)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(PinError::Io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual: [u8; 32] = hasher.finalize().into();
    if actual != expected {
        return Err(PinError::Mismatch(expected, actual));
    }
    Ok(file)
}

/// `program` as exec would find it ([`super::program::find`]) on the `PATH`
/// the plugin gets: its own, if its environment sets one (as `Command`
/// looks it up), else the host's.
fn resolve(
    program: &OsString,
    env: &[(OsString, OsString)],
) -> Result<std::path::PathBuf, super::program::NotRunnable> {
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"));
    super::program::find(program, path.as_deref())
}

/// A resource limit for the plugin process (setrlimit in the child).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Address space (virtual memory), bytes: `RLIMIT_AS`.
    AddressSpace(u64),
    /// Open file descriptors: `RLIMIT_NOFILE`.
    OpenFiles(u64),
}

impl Process {
    /// Starts the plugin with stdin from /dev/null and stdout/stderr piped.
    /// A pinned executable is opened, hashed and executed through the same
    /// file (`/proc/self/fd/N`), or not started ([`PinError`]).
    pub fn spawn(s: Spawn<'_>) -> Result<Process, PinError> {
        let pinned = match s.sha256 {
            Some(expected) => Some(open_pinned(s.program, s.env, expected)?),
            None => None,
        };
        // A pinned file is executed through its open descriptor.
        let exec_path = match &pinned {
            Some(file) => OsString::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
            None => resolve(s.program, s.env)
                .map_err(|e| PinError::Io(e.into()))?
                .into_os_string(),
        };
        let limits: Vec<Rlimit> = s
            .limits
            .iter()
            .map(|limit| match *limit {
                Limit::AddressSpace(v) => (libc::RLIMIT_AS, v),
                Limit::OpenFiles(v) => (libc::RLIMIT_NOFILE, v),
            })
            .collect();
        let started = spawn::spawn(&spawn::Exec {
            path: &exec_path,
            arg0: s.program,
            args: s.args,
            env: s.env,
            limits: &limits,
        })
        .map_err(PinError::Io)?;
        drop(pinned);
        let (pid, stdout, stderr) = (started.pid, started.stdout, started.stderr);
        let state = Arc::new((Mutex::new(None), Condvar::new()));
        let (exited_tx, exited_rx) = crossbeam_channel::bounded::<()>(0);
        let (first_tx, first_line) = crossbeam_channel::bounded(1);
        let (stderr_done_tx, stderr_done) = crossbeam_channel::bounded::<()>(0);
        let tail = Arc::new(Mutex::new(VecDeque::new()));

        let name = s.name.to_string();
        // One thread per plugin reads its stdout and stderr and, through a
        // pidfd in the same poll, notices its exit. Without pidfds (Linux
        // before 5.3) a thread of its own waits for the exit.
        let exit = match crate::goplugin::fdwait::pidfd(pid) {
            Some(fd) => Some((fd, exited_tx)),
            None => {
                spawn_thread(&format!("{name}-wait"), {
                    let state = state.clone();
                    move || wait_child(pid, &state, exited_tx)
                });
                None
            }
        };
        let watch = Watch {
            name: name.clone(),
            pid,
            stdout: Some(stdout),
            stderr: Some(stderr),
            exit,
            state: state.clone(),
            first: Some(first_tx),
            tail: tail.clone(),
            stderr_done: Some(stderr_done_tx),
        };
        spawn_thread(&format!("{name}-io"), move || watch.run());
        Ok(Process {
            pid,
            name,
            state,
            exited_rx,
            first_line,
            tail,
            stderr_done,
        })
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Waits until `deadline` for the first stdout line; gives up early (None)
    /// when `cancel` becomes ready or disconnected.
    pub fn first_line(&self, deadline: Instant, cancel: &Receiver<()>) -> Option<FirstLine> {
        crossbeam_channel::select! {
            recv(self.first_line) -> l => l.ok(),
            recv(cancel) -> _ => None,
            recv(crossbeam_channel::at(deadline)) -> _ => None,
        }
    }

    /// A receiver that becomes disconnected when the process has exited (for
    /// `select!`); every clone sees it.
    pub fn exited(&self) -> Receiver<()> {
        self.exited_rx.clone()
    }

    /// The exit status, if it has exited.
    pub fn status(&self) -> Option<ExitStatus> {
        *self.state.0.lock().unwrap()
    }

    /// Waits up to `timeout` for the exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.state;
        let mut st = lock.lock().unwrap();
        loop {
            if let Some(s) = *st {
                return Some(s);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = cvar.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Sends `sig` to the process if it has not exited. Returns whether sent.
    pub fn signal(&self, sig: libc::c_int) -> bool {
        let st = self.state.0.lock().unwrap();
        if st.is_some() {
            return false;
        }
        // SAFETY: the pid is ours and not reaped (the waiter reaps only after
        // setting the status under this lock).
        unsafe { libc::kill(self.pid, sig) == 0 }
    }

    /// SIGKILL, then wait (bounded) for the reap.
    pub fn kill_now(&self) -> Option<ExitStatus> {
        self.signal(libc::SIGKILL);
        self.wait_timeout(Duration::from_secs(5))
    }

    /// The last lines the plugin wrote on stderr, after giving the reader up to
    /// `wait` to reach EOF (so a crash message is included).
    pub fn stderr_tail(&self, wait: Duration) -> String {
        let _ = self.stderr_done.recv_timeout(wait);
        let tail = self.tail.lock().unwrap();
        tail.iter().map(|l| format!("  {l}\n")).collect()
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status().is_none() {
            self.kill_now();
        }
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.to_string()).spawn(f) {
        log::error!("cannot spawn thread {name}: {e}");
    }
}

/// Waits for the exit (without a pidfd), then [`exited`].
fn wait_child(pid: libc::pid_t, state: &(Mutex<Option<ExitStatus>>, Condvar), exited: Sender<()>) {
    // Wait for the exit but leave the zombie, so the pid (and process group id)
    // cannot be reused while we still signal them.
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waiting on our own child with a valid siginfo pointer.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    self::exited(pid, state, exited);
}

/// The plugin has exited and is not reaped yet: whatever it left in its
/// process group goes with it (no orphans; the group id is still ours),
/// then it is reaped and marked exited.
fn exited(pid: libc::pid_t, state: &(Mutex<Option<ExitStatus>>, Condvar), exited: Sender<()>) {
    // SAFETY: signalling our child's group while the leader is an unreaped zombie.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let (lock, cvar) = state;
    let mut st = lock.lock().unwrap();
    *st = Some(spawn::reap(pid));
    drop(st);
    cvar.notify_all();
    drop(exited);
}

/// A plugin's output and exit, served by one thread ([`Watch::run`]).
struct Watch {
    name: String,
    pid: libc::pid_t,
    /// Open until EOF.
    stdout: Option<File>,
    stderr: Option<File>,
    /// The pidfd and the exit's sender, until the exit (None when a waiter
    /// thread watches it).
    exit: Option<(OwnedFd, Sender<()>)>,
    state: Arc<(Mutex<Option<ExitStatus>>, Condvar)>,
    /// The first stdout line's receiver, until it is sent.
    first: Option<Sender<FirstLine>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Dropped at stderr's EOF.
    stderr_done: Option<Sender<()>>,
}

impl Watch {
    /// Until both pipes are at EOF and the exit is handled: stdout's first
    /// line is the handshake, its other lines and stderr's are logged
    /// (stderr's parsed and kept in the tail), with bounded memory
    /// whatever the plugin writes.
    fn run(mut self) {
        let mut out_lines = LineSplitter::new(handshake::MAX_LINE);
        let mut err_lines = LineSplitter::new(crate::goplugin::logline::MAX_LINE);
        let mut parser = Parser::new();
        let stdout_target = format!("{}::stdout", self.name);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let fds = [
                self.stdout.as_ref().map(|f| f.as_raw_fd()),
                self.stderr.as_ref().map(|f| f.as_raw_fd()),
                self.exit.as_ref().map(|(fd, _)| fd.as_raw_fd()),
            ];
            if fds.iter().all(Option::is_none) {
                return;
            }
            let ready = match crate::goplugin::fdwait::readable(fds) {
                Ok(ready) => ready,
                Err(e) => {
                    log::error!("plugin {}: cannot poll its output: {e}", self.name);
                    // Its exit is still noticed and reaped.
                    if let Some((_pidfd, sender)) = self.exit.take() {
                        wait_child(self.pid, &self.state, sender);
                    }
                    return;
                }
            };
            if ready[0] {
                // Readable or hung up: a read does not block.
                match read_some(self.stdout.as_mut(), &mut buf) {
                    Some(data) => out_lines.feed(data, |l| self.stdout_line(&stdout_target, l)),
                    None => {
                        if let Some(l) = out_lines.finish() {
                            self.stdout_line(&stdout_target, l);
                        }
                        if let Some(first) = self.first.take() {
                            let _ = first.send(FirstLine::Eof);
                        }
                        self.stdout = None;
                    }
                }
            }
            if ready[1] {
                match read_some(self.stderr.as_mut(), &mut buf) {
                    Some(data) => err_lines.feed(data, |l| self.stderr_line(&mut parser, l)),
                    None => {
                        if let Some(l) = err_lines.finish() {
                            self.stderr_line(&mut parser, l);
                        }
                        self.stderr = None;
                        self.stderr_done = None;
                    }
                }
            }
            if ready[2] {
                if let Some((_pidfd, sender)) = self.exit.take() {
                    exited(self.pid, &self.state, sender);
                }
            }
        }
    }

    fn stdout_line(&mut self, target: &str, l: Line) {
        let text = String::from_utf8_lossy(&l.bytes).into_owned();
        match self.first.take() {
            Some(first) => {
                let _ = first.send(FirstLine::Line(text));
            }
            // After the handshake, stdout is the plugin's own output: log it.
            None => emit(
                target,
                &Record {
                    level: log::Level::Info,
                    message: text,
                    fields: Vec::new(),
                },
            ),
        }
    }

    fn stderr_line(&self, parser: &mut Parser, l: Line) {
        let rec = parser.parse(&l);
        emit(&self.name, &rec);
        let mut t = self.tail.lock().unwrap();
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        let mut text = rec.display_text();
        if text.len() > TAIL_LINE_MAX {
            let mut cut = TAIL_LINE_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        t.push_back(text);
    }
}

/// What one read of a ready pipe gave: None at EOF (or an error, which
/// ends the stream the same way).
fn read_some<'a>(file: Option<&mut File>, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    use std::io::Read;
    let file = file?;
    loop {
        match file.read(buf) {
            Ok(0) => return None,
            Ok(n) => return Some(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Sends a plugin's log record into the host's logger under `target`.
pub fn emit(target: &str, rec: &Record) {
    if rec.level > log::max_level() {
        return;
    }
    log::logger().log(
        &log::Record::builder()
            .level(rec.level)
            .target(target)
            .args(format_args!("{}", rec.display_text()))
            .build(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn spawn_named(program: &str, env: &[(OsString, OsString)]) -> Result<Process, PinError> {
        Process::spawn(Spawn {
            name: "t",
            program: &OsString::from(program),
            args: &[],
            env,
            limits: &[],
            sha256: None,
        })
    }

    fn threads_named(prefix: &str) -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|c| c.trim().to_string())
            .filter(|c| c.starts_with(prefix))
            .collect()
    }

    /// One thread per plugin reads both its streams and notices its exit:
    /// the handshake line, the stderr tail and the exit status all arrive.
    #[test]
    fn one_thread_serves_a_plugins_output_and_exit() {
        let args = [
            OsString::from("-c"),
            // stderr first: once "hello" is read, "oops" is in its pipe.
            OsString::from("echo oops >&2; echo hello; exec sleep 30"),
        ];
        let p = Process::spawn(Spawn {
            name: "solo",
            program: &OsString::from("/bin/sh"),
            args: &args,
            env: &[],
            limits: &[],
            sha256: None,
        })
        .unwrap_or_else(|_| panic!("spawn"));
        let (_keep, never) = crossbeam_channel::bounded::<()>(0);
        match p.first_line(Instant::now() + Duration::from_secs(10), &never) {
            Some(FirstLine::Line(l)) => assert_eq!(l, "hello"),
            other => panic!("{other:?}"),
        }
        assert_eq!(threads_named("solo-"), ["solo-io"]);
        assert!(p.signal(libc::SIGTERM));
        let status = p
            .wait_timeout(Duration::from_secs(10))
            .expect("exit noticed");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(p.stderr_tail(Duration::from_secs(10)).contains("oops"));
        assert!(
            wait_gone("solo-"),
            "the thread ends with the plugin's streams and exit"
        );
    }

    fn wait_gone(prefix: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if threads_named(prefix).is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_bare_name_is_looked_up_on_the_plugins_own_path() {
        let dir = crate::testutil::TempDir::new("resolve");
        let script = dir.0.join("loopp-resolve-test");
        std::fs::write(&script, "#!/bin/sh\necho found\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = [("PATH".into(), dir.0.clone().into_os_string())];
        let p = spawn_named("loopp-resolve-test", &env).unwrap_or_else(|_| panic!("not found"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let (_keep, never) = crossbeam_channel::bounded::<()>(0);
        match p.first_line(deadline, &never) {
            Some(FirstLine::Line(l)) => assert_eq!(l.trim(), "found"),
            other => panic!("{other:?}"),
        }
        assert!(p
            .wait_timeout(Duration::from_secs(10))
            .is_some_and(|s| s.success()));
        // Not on the host's own PATH.
        match spawn_named("loopp-resolve-test", &[]) {
            Err(PinError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
            _ => panic!("found without the plugin's PATH"),
        }
    }
}
