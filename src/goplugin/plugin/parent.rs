//! How a plugin learns its host died (go-plugin's plugins are orphaned when
//! the host is SIGKILLed; ours are not).
//!
//! The parent is watched with a pidfd (`pidfd_open` + `poll`: no wake-ups while
//! the host lives); on kernels without pidfds, `getppid()` is polled every
//! [`PARENT_POLL`]. Either way the plugin learns of the death well within 2 s.

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
            let pidfd = crate::goplugin::fdwait::pidfd(ppid);
            // The parent may have died before pidfd_open: then we were re-parented.
            // SAFETY: getppid cannot fail.
            if unsafe { libc::getppid() } != ppid {
                let _ = stop.send(Stop::HostGone);
                return;
            }
            match pidfd {
                Some(fd) => {
                    use std::os::fd::AsRawFd;
                    if crate::goplugin::fdwait::readable([Some(fd.as_raw_fd())]).is_err() {
                        return poll_parent(ppid, stop);
                    }
                    let _ = stop.send(Stop::HostGone);
                }
                None => poll_parent(ppid, stop),
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
