//! How a plugin learns it must stop without an RPC: SIGTERM, and its host's
//! death (go-plugin's plugins are orphaned when the host is SIGKILLed; ours are
//! not).
//!
//! The parent is watched with a pidfd (`pidfd_open` + `poll`: no wake-ups while
//! the host lives); on kernels without pidfds, `getppid()` is polled every
//! [`PARENT_POLL`]. Either way the plugin learns of the death well within 2 s.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::Stop;

/// How often `getppid()` is checked when pidfds are not available.
pub const PARENT_POLL: Duration = Duration::from_millis(250);

static TERM_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigterm(_sig: libc::c_int) {
    let fd = TERM_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = 1u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a valid byte.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

/// Sends [`Stop::Terminated`] on SIGTERM (through a self-pipe, since a signal
/// handler can do almost nothing).
pub fn on_terminate(stop: Sender<Stop>) -> io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array for pipe2.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    TERM_PIPE.store(fds[1], Ordering::Relaxed);
    let read_fd = fds[0];
    std::thread::Builder::new()
        .name("sigterm".into())
        .spawn(move || {
            let mut b = 0u8;
            loop {
                // SAFETY: read into a valid one-byte buffer from our pipe.
                let n = unsafe { libc::read(read_fd, (&mut b as *mut u8).cast(), 1) };
                if n == 1 {
                    let _ = stop.send(Stop::Terminated);
                    return;
                }
                if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
        })?;
    // SAFETY: a zeroed sigaction with a valid handler and SA_RESTART is sound.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigterm as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends [`Stop::HostGone`] when the parent process exits.
pub fn watch_parent(stop: Sender<Stop>) {
    // SAFETY: getppid cannot fail.
    let ppid = unsafe { libc::getppid() };
    let spawned = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            // SAFETY: pidfd_open takes a pid and flags and returns an fd or -1.
            let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, ppid, 0) } as libc::c_int;
            // The parent may have died before pidfd_open: then we were re-parented.
            // SAFETY: as above.
            if unsafe { libc::getppid() } != ppid {
                let _ = stop.send(Stop::HostGone);
                return;
            }
            if pidfd >= 0 {
                let mut pfd = libc::pollfd {
                    fd: pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                loop {
                    // SAFETY: one valid pollfd; -1 waits without a timeout.
                    let r = unsafe { libc::poll(&mut pfd, 1, -1) };
                    if r > 0 {
                        break;
                    }
                    if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                        return poll_parent(ppid, stop);
                    }
                }
                // SAFETY: closing our own fd.
                unsafe { libc::close(pidfd) };
                let _ = stop.send(Stop::HostGone);
            } else {
                poll_parent(ppid, stop);
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot watch the host process: {e}");
    }
}

fn poll_parent(ppid: libc::pid_t, stop: Sender<Stop>) {
    // SAFETY: getppid cannot fail.
    while unsafe { libc::getppid() } == ppid {
        std::thread::sleep(PARENT_POLL);
    }
    let _ = stop.send(Stop::HostGone);
}
