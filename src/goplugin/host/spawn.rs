//! Starting a plugin process without copying the host.
//!
//! `std::process::Command` with a `pre_exec` step forks: the kernel copies
//! the host's page tables and every page either side then writes is copied
//! again. That grows with the host: here a fork-and-exec took 0.66 ms from
//! a 10 MB process and 8 ms from a 100 MB one (a node with many feeds),
//! against 0.12 ms for `posix_spawn`, which shares the host's memory until
//! the child execs. `posix_spawn` cannot take the steps a plugin needs
//! before exec (the parent-death signal, resource limits), so this does
//! what it and Go's `os/exec` do: `clone(CLONE_VM | CLONE_VFORK)` onto a
//! small stack of its own, with the calling thread suspended until the
//! child has exec'd or failed.
//!
//! The child shares the host's memory until exec, so it runs only
//! [`child_main`]: system calls on data prepared before the clone, no
//! allocation, no locks, no panics. Signals are blocked around the clone,
//! so no host signal handler runs in the child; the child sets every
//! caught signal (and SIGPIPE, which Rust's runtime ignores) back to its
//! default and starts the program with an empty signal mask, as `Command`
//! does.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

/// A resource limit the child sets before exec: the resource and its value
/// (soft and hard).
pub type Rlimit = (libc::__rlimit_resource_t, u64);

/// What to exec, and how.
pub struct Exec<'a> {
    /// The file to exec (a path: no `PATH` lookup here).
    pub path: &'a OsStr,
    /// `argv[0]`.
    pub arg0: &'a OsStr,
    /// The other arguments.
    pub args: &'a [OsString],
    /// Variables set on top of the host's environment.
    pub env: &'a [(OsString, OsString)],
    /// Limits set in the child.
    pub limits: &'a [Rlimit],
}

/// A started child: its pid and the read ends of its stdout and stderr
/// (stdin is `/dev/null`). The caller reaps it.
pub struct Started {
    pub pid: libc::pid_t,
    pub stdout: File,
    pub stderr: File,
}

/// The child's stack: enough for the few system calls it makes, with a
/// guard page below.
const STACK: usize = 64 * 1024;

/// Starts `s` in a new process group with `PR_SET_PDEATHSIG(SIGTERM)` (tied
/// to the calling thread) and `s.limits`. Returns once the program is
/// executing, or the error of the step that failed (the child is reaped
/// then).
pub fn spawn(s: &Exec<'_>) -> io::Result<Started> {
    // Everything the child reads is made here, before the clone.
    let path = c_string(s.path)?;
    let argv_owned = std::iter::once(s.arg0)
        .chain(s.args.iter().map(OsString::as_os_str))
        .map(c_string)
        .collect::<io::Result<Vec<_>>>()?;
    let env_owned = environment(s.env)?;
    let argv = pointers(&argv_owned);
    let envp = pointers(&env_owned);
    let stdin = above_stdio(File::open("/dev/null")?.into())?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let stack = Stack::new()?;
    let child = Child {
        path: path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        stdio: [stdin.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
        limits: s.limits.as_ptr(),
        limit_count: s.limits.len(),
        error: AtomicI32::new(0),
    };

    // SAFETY: sigset_t is plain data; sigfillset initializes it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigset pointers; blocking signals in this thread only.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: `child_main` only makes system calls on `child`, which lives
    // (with everything it points to) until the child has exec'd or exited:
    // CLONE_VFORK suspends this thread until then. The stack is ours alone.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &child as *const Child as *mut libc::c_void,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores this thread's own mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(clone_error);
    }
    // The child has exec'd (its copies of the write ends stay open there)
    // or failed: the host's copies go now, so EOF means the plugin closed.
    drop((stdin, out_w, err_w, stack));
    let error = child.error.load(Ordering::Acquire);
    if error != 0 {
        let _ = reap(pid);
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(Started {
        pid,
        stdout: File::from(out_r),
        stderr: File::from(err_r),
    })
}

/// What the child reads, all prepared by the parent.
struct Child {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Dup'ed onto fds 0, 1 and 2; all above 2.
    stdio: [RawFd; 3],
    limits: *const Rlimit,
    limit_count: usize,
    /// The errno of the step that failed; 0 while none has.
    error: AtomicI32,
}

/// The child, until exec. Runs in the host's memory on its own stack: only
/// system calls, nothing that allocates, locks or can panic.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Child`, alive until we exec or exit.
    let c = unsafe { &*(arg as *const Child) };
    // SAFETY: each call below is a system call wrapper on valid pointers
    // prepared by the parent (see `spawn`).
    unsafe {
        // No host handler may run here or survive into the program; the
        // signals the host ignores stay ignored, except SIGPIPE.
        for sig in 1..libc::SIGRTMAX() + 1 {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut current) != 0 {
                continue;
            }
            let caught =
                current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN;
            if caught || sig == libc::SIGPIPE {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &default, std::ptr::null_mut());
            }
        }
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
        let mut i = 0;
        while i < c.limit_count {
            let (resource, value) = *c.limits.add(i);
            let rl = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            if libc::setrlimit(resource, &rl) != 0 {
                fail(c);
            }
            i += 1;
        }
        let mut fd = 0;
        while fd < 3 {
            if libc::dup2(c.stdio[fd as usize], fd) < 0 {
                fail(c);
            }
            fd += 1;
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(c.path, c.argv, c.envp);
        fail(c)
    }
}

/// Records errno for the parent and exits the child.
///
/// SAFETY: only from `child_main`.
unsafe fn fail(c: &Child) -> ! {
    // SAFETY: errno of this task; `_exit` ends it without running anything
    // of the host's.
    unsafe {
        let errno = *libc::__errno_location();
        c.error.store(errno.max(1), Ordering::Release);
        libc::_exit(127)
    }
}

/// Reaps an exited child of ours (one that failed before exec, or one its
/// watch saw exit): its wait status.
pub(super) fn reap(pid: libc::pid_t) -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    loop {
        let mut status = 0;
        // SAFETY: reaping our own child, once.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return std::process::ExitStatus::from_raw(status);
        }
        if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return std::process::ExitStatus::from_raw(0);
        }
    }
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} contains a NUL byte", s),
        )
    })
}

/// A null-terminated array of pointers into `strings`.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The host's environment with `extra` set on top, as `KEY=VALUE` strings.
fn environment(extra: &[(OsString, OsString)]) -> io::Result<Vec<CString>> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, v) in extra {
        match vars.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => vars.push((k.clone(), v.clone())),
        }
    }
    vars.iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            c_string(OsStr::from_bytes(&kv))
        })
        .collect()
}

/// A close-on-exec pipe (read end, write end), both above fd 2.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = io::pipe()?;
    Ok((above_stdio(r.into())?, above_stdio(w.into())?))
}

/// `fd`, moved above 2 if it is one of 0-2 (a host started with a standard
/// stream closed): the child dups these onto 0-2, and a dup onto itself
/// would leave it close-on-exec.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: duplicating a descriptor we own.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl just opened it.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// The child's stack: an anonymous mapping with a guard page at its low
/// end, unmapped on drop.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        let guard = 4096;
        let len = STACK + guard;
        // SAFETY: a fresh private anonymous mapping.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of our own mapping.
        if unsafe { libc::mprotect(base, guard, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer (stacks grow down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, page aligned.
        unsafe { (self.base as *mut u8).add(self.len) as *mut libc::c_void }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used (the child has exec'd or
        // exited before `spawn` drops it).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::{Duration, Instant};

    fn run(
        path: &str,
        arg0: &str,
        args: &[&str],
        env: &[(&str, &str)],
        limits: &[Rlimit],
    ) -> Started {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let env: Vec<(OsString, OsString)> =
            env.iter().map(|(k, v)| (k.into(), v.into())).collect();
        spawn(&Exec {
            path: OsStr::new(path),
            arg0: OsStr::new(arg0),
            args: &args,
            env: &env,
            limits,
        })
        .expect("spawn")
    }

    /// Its stdout, then its wait status.
    fn output(mut s: Started) -> (String, i32) {
        let mut out = String::new();
        s.stdout.read_to_string(&mut out).unwrap();
        let mut status = 0;
        // SAFETY: reaping the child we started.
        assert_eq!(unsafe { libc::waitpid(s.pid, &mut status, 0) }, s.pid);
        (out, status)
    }

    fn status_mask(status: &str, field: &str) -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("{field} in {status}"));
        u64::from_str_radix(line[field.len()..].trim(), 16).unwrap()
    }

    extern "C" fn ignore_signal(_: libc::c_int) {}

    #[test]
    fn the_program_starts_with_default_signals_and_no_mask() {
        // The host catches SIGUSR2 and blocks SIGUSR1 in this thread; Rust
        // ignores SIGPIPE. None of it reaches the program.
        // SAFETY: a handler that does nothing; masks of this thread only.
        unsafe {
            libc::signal(
                libc::SIGUSR2,
                ignore_signal as *const () as libc::sighandler_t,
            );
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let (status, code) = output(run("/bin/cat", "cat", &["/proc/self/status"], &[], &[]));
        assert_eq!(code, 0);
        assert_eq!(status_mask(&status, "SigBlk:"), 0, "{status}");
        assert_eq!(status_mask(&status, "SigCgt:"), 0, "{status}");
        let pipe = 1u64 << (libc::SIGPIPE - 1);
        assert_eq!(status_mask(&status, "SigIgn:") & pipe, 0, "{status}");
    }

    #[test]
    fn arguments_environment_and_stdin_are_the_ones_asked_for() {
        let (cmdline, _) = output(run("/bin/cat", "first", &["/proc/self/cmdline"], &[], &[]));
        assert_eq!(cmdline, "first\0/proc/self/cmdline\0");
        let (env, _) = output(run(
            "/usr/bin/env",
            "env",
            &[],
            &[("LOOPP_SPAWN_TEST", "a b"), ("PATH", "/nowhere")],
            &[],
        ));
        let lines: Vec<&str> = env.lines().collect();
        assert!(lines.contains(&"LOOPP_SPAWN_TEST=a b"), "{env}");
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("PATH=")).count(),
            1,
            "{env}"
        );
        assert!(lines.contains(&"PATH=/nowhere"), "{env}");
        assert!(
            lines.iter().any(|l| l.starts_with("HOME=")),
            "the host's own: {env}"
        );
        let (stdin, _) = output(run(
            "/bin/readlink",
            "readlink",
            &["/proc/self/fd/0"],
            &[],
            &[],
        ));
        assert_eq!(stdin.trim(), "/dev/null");
    }

    /// A host started with its stdin closed (some supervisors do that):
    /// the next descriptor opened is 0, and dup'ing it onto itself would
    /// leave it close-on-exec. The program still gets /dev/null.
    #[test]
    fn a_host_without_stdin_still_gives_the_program_its_stdio() {
        // SAFETY: this test process gives up its own stdin (nextest runs
        // each test in a process of its own).
        unsafe { libc::close(0) };
        let (out, code) = output(run(
            "/bin/sh",
            "sh",
            &["-c", "readlink /proc/self/fd/0; echo err >&2"],
            &[],
            &[],
        ));
        assert_eq!(code, 0);
        assert_eq!(out.trim(), "/dev/null");
    }

    #[test]
    fn limits_and_a_process_group_of_its_own() {
        let started = run(
            "/bin/sleep",
            "sleep",
            &["30"],
            &[],
            &[(libc::RLIMIT_NOFILE, 77)],
        );
        let pid = started.pid;
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>()[3..5],
            ["77", "77"]
        );
        // SAFETY: asking for our child's process group.
        assert_eq!(unsafe { libc::getpgid(pid) }, pid);
        // SAFETY: our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let (_, status) = output(started);
        assert!(libc::WIFSIGNALED(status));
    }

    #[test]
    fn the_program_is_told_when_the_spawning_thread_ends() {
        let started = std::thread::spawn(|| run("/bin/sleep", "sleep", &["30"], &[], &[]))
            .join()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = 0;
        loop {
            // SAFETY: polling our own child.
            let r = unsafe { libc::waitpid(started.pid, &mut status, libc::WNOHANG) };
            if r == started.pid {
                break;
            }
            if Instant::now() > deadline {
                // SAFETY: our child; do not leave it behind.
                unsafe { libc::kill(started.pid, libc::SIGKILL) };
                panic!("sleep did not get SIGTERM when its spawning thread ended");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGTERM);
    }

    #[test]
    fn a_step_that_fails_is_the_error_and_starts_nothing() {
        let missing = spawn(&Exec {
            path: OsStr::new("/nonexistent/loopp-plugin"),
            arg0: OsStr::new("plugin"),
            args: &[],
            env: &[],
            limits: &[],
        })
        .err()
        .expect("no such program");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        // More open files than the kernel allows (fs.nr_open): setrlimit
        // fails in the child, before exec.
        let too_many = spawn(&Exec {
            path: OsStr::new("/bin/true"),
            arg0: OsStr::new("true"),
            args: &[],
            env: &[],
            limits: &[(libc::RLIMIT_NOFILE, u64::MAX)],
        })
        .err()
        .expect("limit refused");
        assert_eq!(too_many.raw_os_error(), Some(libc::EPERM), "{too_many}");
        // Both children were reaped by `spawn`.
        // SAFETY: asking about any child of this test process.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(r, -1);
        assert_eq!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::ECHILD)
        );
        let nul = spawn(&Exec {
            path: OsStr::new("/bin/true"),
            arg0: OsStr::new("tr\0ue"),
            args: &[],
            env: &[],
            limits: &[],
        })
        .err()
        .expect("a NUL byte");
        assert_eq!(nul.kind(), io::ErrorKind::InvalidInput);
    }
}
