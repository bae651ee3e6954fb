//! Waiting on a few file descriptors at once: one thread serves several
//! pipes (a plugin's captured stdout and stderr; a host's view of a
//! plugin's output and its pidfd), and on a process's exit (a pidfd).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A pidfd for process `pid` (readable once it exits), if the kernel has
/// them (Linux 5.3 and later). `pid` must not be reaped meanwhile by anyone
/// else: a child of ours not yet reaped, or our parent.
pub fn pidfd(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns an fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a fresh descriptor (close-on-exec, as pidfds are), ours alone.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits, without a timeout, until one of `fds` (None: not watched) is
/// readable or hung up, and says which are. Retries when interrupted.
pub fn readable<const N: usize>(fds: [Option<RawFd>; N]) -> io::Result<[bool; N]> {
    let mut polled = fds.map(|fd| libc::pollfd {
        // A negative descriptor is skipped by poll.
        fd: fd.unwrap_or(-1),
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        // SAFETY: N valid pollfds; -1 waits without a timeout.
        let r = unsafe { libc::poll(polled.as_mut_ptr(), N as libc::nfds_t, -1) };
        if r >= 0 {
            return Ok(polled.map(|p| p.revents != 0));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn says_which_pipe_has_data_or_hung_up() {
        let (r1, mut w1) = std::io::pipe().unwrap();
        let (r2, w2) = std::io::pipe().unwrap();
        w1.write_all(b"x").unwrap();
        let fds = [Some(r1.as_raw_fd()), None, Some(r2.as_raw_fd())];
        assert_eq!(readable(fds).unwrap(), [true, false, false]);
        drop(w2);
        assert_eq!(readable(fds).unwrap(), [true, false, true]);
    }
}
