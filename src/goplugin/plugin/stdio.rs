//! Plugin-side stdio capture, for `plugin.GRPCStdio` and for a clean handshake.
//!
//! At the start of [`crate::goplugin::plugin::serve`], file descriptors 1 and 2 are
//! replaced by pipes, so nothing the plugin writes can reach the real stdout
//! before the handshake line. One reader thread (both pipes, one poll) delivers
//! what arrives:
//! - to the host's `StreamStdio` subscriber, when there is one;
//! - otherwise stderr goes to the real stderr (the host logs it), and stdout goes
//!   to the real stdout after the handshake (buffered up to [`PRE_HANDSHAKE_MAX`]
//!   until then).
//!
//! The JSON logger and the handshake write to the saved real descriptors, never
//! through the pipes, so logs do not depend on the reader thread.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::proto::grpc_stdio::{stdio_data::Channel, StdioData};

/// Bytes of stdout kept from before the handshake; more is dropped and counted.
pub const PRE_HANDSHAKE_MAX: usize = 64 * 1024;

/// Chunks queued for a slow subscriber before falling back to the real fds.
const SUBSCRIBER_QUEUE: usize = 1024;

/// The capture; cheap to clone.
#[derive(Clone)]
pub struct Stdio {
    hub: Arc<Mutex<Hub>>,
}

struct Hub {
    handshake_done: bool,
    pending_stdout: Vec<u8>,
    dropped_stdout: usize,
    subscriber: Option<Sender<StdioData>>,
    real_stdout: File,
    real_stderr: File,
}

fn cvt(r: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if r < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(r)
    }
}

/// Duplicates `fd` (close-on-exec) into an owned File.
fn dup_file(fd: libc::c_int) -> io::Result<File> {
    // SAFETY: fcntl F_DUPFD_CLOEXEC on a valid fd returns a new fd we own.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) }, "dup")?;
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { File::from_raw_fd(new) })
}

/// Replaces `target_fd` with the write end of a new pipe and returns the read end.
fn redirect(target_fd: libc::c_int) -> io::Result<File> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid 2-element array for pipe2 to fill.
    cvt(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        "pipe",
    )?;
    // SAFETY: pipe2 succeeded, so both fds are fresh and ours.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    use std::os::fd::AsRawFd;
    // SAFETY: dup2 onto a standard descriptor; `write` stays valid meanwhile.
    cvt(unsafe { libc::dup2(write.as_raw_fd(), target_fd) }, "dup2")?;
    Ok(File::from(read))
}

impl Stdio {
    /// Saves the real stdout and stderr, puts pipes in their place and starts
    /// the reader thread. Returns the capture and a handle on the real stderr
    /// (for the logger).
    pub fn capture() -> io::Result<(Stdio, File)> {
        let real_stdout = dup_file(1)?;
        let real_stderr = dup_file(2)?;
        let log_stderr = real_stderr.try_clone()?;
        // Flush what Rust buffered for the old stdout before swapping it.
        let _ = io::stdout().flush();
        let out_read = redirect(1)?;
        let err_read = redirect(2)?;
        let stdio = Stdio {
            hub: Arc::new(Mutex::new(Hub {
                handshake_done: false,
                pending_stdout: Vec::new(),
                dropped_stdout: 0,
                subscriber: None,
                real_stdout,
                real_stderr,
            })),
        };
        let s = stdio.clone();
        std::thread::Builder::new()
            .name("stdio".into())
            .spawn(move || s.pump([(out_read, Channel::STDOUT), (err_read, Channel::STDERR)]))?;
        Ok((stdio, log_stderr))
    }

    /// One thread for both pipes: delivers what either has, until both
    /// are at EOF.
    fn pump(&self, pipes: [(File, Channel); 2]) {
        use std::os::fd::AsRawFd;
        let mut open = pipes.map(Some);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let fds = open
                .each_ref()
                .map(|p| p.as_ref().map(|(f, _)| f.as_raw_fd()));
            if fds.iter().all(Option::is_none) {
                return;
            }
            let Ok(ready) = crate::goplugin::fdwait::readable(fds) else {
                return;
            };
            for (slot, ready) in open.iter_mut().zip(ready) {
                if !ready {
                    continue;
                }
                let Some((read, channel)) = slot.as_mut() else {
                    continue;
                };
                // Readable or hung up: a read does not block.
                match read.read(&mut buf) {
                    Ok(0) => *slot = None,
                    Ok(n) => self.deliver(*channel, &buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => *slot = None,
                }
            }
        }
    }

    fn deliver(&self, channel: Channel, data: &[u8]) {
        let mut hub = self.hub.lock().unwrap();
        if let Some(sub) = &hub.subscriber {
            let msg = StdioData {
                channel: channel.into(),
                data: data.to_vec(),
                ..Default::default()
            };
            match sub.try_send(msg) {
                Ok(()) => return,
                Err(TrySendError::Disconnected(_)) => hub.subscriber = None,
                Err(TrySendError::Full(_)) => {}
            }
        }
        match channel {
            Channel::STDOUT if !hub.handshake_done => {
                let room = PRE_HANDSHAKE_MAX.saturating_sub(hub.pending_stdout.len());
                let keep = data.len().min(room);
                hub.pending_stdout.extend_from_slice(&data[..keep]);
                hub.dropped_stdout += data.len() - keep;
            }
            Channel::STDOUT => {
                let _ = hub.real_stdout.write_all(data);
            }
            _ => {
                let _ = hub.real_stderr.write_all(data);
            }
        }
    }

    /// Prints the handshake line on the real stdout, then releases what the
    /// plugin wrote to stdout before it.
    pub fn print_handshake(&self, line: &str) -> io::Result<()> {
        let mut hub = self.hub.lock().unwrap();
        let mut text = String::with_capacity(line.len() + 1);
        text.push_str(line);
        text.push('\n');
        hub.real_stdout.write_all(text.as_bytes())?;
        hub.real_stdout.flush()?;
        hub.handshake_done = true;
        let pending = std::mem::take(&mut hub.pending_stdout);
        if !pending.is_empty() {
            let _ = hub.real_stdout.write_all(&pending);
        }
        if hub.dropped_stdout > 0 {
            log::warn!(dropped_bytes = hub.dropped_stdout; "stdout written before the handshake exceeded the buffer");
        }
        Ok(())
    }

    /// Makes a new subscriber the recipient of all further output (replacing any
    /// previous one, as go-plugin allows one stream at a time).
    pub fn subscribe(&self) -> Receiver<StdioData> {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_QUEUE);
        self.hub.lock().unwrap().subscriber = Some(tx);
        rx
    }
}
