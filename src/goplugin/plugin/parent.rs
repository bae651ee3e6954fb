//! How a plugin learns its host died (go-plugin's plugins are orphaned when
//! the host is SIGKILLed; ours are not).
//!
//! The parent is watched with a pidfd (`pidfd_open` + `poll`: no wake-ups while
//! the host lives); on kernels without pidfds, `getppid()` is polled every
//! [`PARENT_POLL`]. Either way the plugin learns of the death well within 2 s.

use std::io;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::Stop;

/// How often `getppid()` is checked when pidfds are not available.
pub const PARENT_POLL: Duration = Duration::from_millis(250);

/// The parent's pid, read at start: [`watch`] compares it with the parent
/// it finds, so a host that died before the watch began is noticed.
pub fn parent() -> libc::pid_t {
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() }
}

/// Sends [`Stop::HostGone`] when process `ppid` (see [`parent`]) is no
/// longer the parent: it exited, or had already.
pub fn watch(stop: Sender<Stop>, ppid: libc::pid_t) {
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
