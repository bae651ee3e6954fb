//! Signals as channel messages: a self-pipe written by an async-signal-safe
//! handler and read by one thread that forwards each signal number. Used by
//! plugins (SIGTERM) and by the node (SIGINT, SIGTERM).

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
static SUBSCRIBERS: Mutex<Vec<Sender<libc::c_int>>> = Mutex::new(Vec::new());

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is one valid byte.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

fn start_reader() -> io::Result<()> {
    if PIPE_WRITE.load(Ordering::Relaxed) >= 0 {
        return Ok(());
    }
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array for pipe2.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let read_fd = fds[0];
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut b = 0u8;
            loop {
                // SAFETY: read into a valid one-byte buffer from our pipe.
                let n = unsafe { libc::read(read_fd, (&mut b as *mut u8).cast(), 1) };
                if n == 1 {
                    SUBSCRIBERS
                        .lock()
                        .unwrap()
                        .retain(|s| s.send(libc::c_int::from(b)).is_ok());
                } else if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                } else {
                    return;
                }
            }
        })?;
    PIPE_WRITE.store(fds[1], Ordering::Relaxed);
    Ok(())
}

/// Delivers each of `signals` as a message on the returned channel from now
/// on (replacing their default action).
pub fn notify(signals: &[libc::c_int]) -> io::Result<Receiver<libc::c_int>> {
    let mut subs = SUBSCRIBERS.lock().unwrap();
    start_reader()?;
    let (tx, rx) = crossbeam_channel::unbounded();
    subs.push(tx);
    for &sig in signals {
        // SAFETY: a zeroed sigaction with a valid handler and SA_RESTART is sound.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(rx)
}
