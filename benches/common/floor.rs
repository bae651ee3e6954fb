//! The floor under any RPC, for the benchmarks: one-byte round trips over a
//! unix socket pair between two threads (a write, the peer's blocking read
//! and write back, the read): the kernel and two thread wake-ups, with no
//! gRPC, HTTP/2 or protobuf. Both threads run on one CPU ([`pinned`]): on
//! two, each wake-up of an idle CPU costs several times more (measured 10
//! against 46-49 us of CPU a round trip on this VM), and which one the
//! scheduler picks varies from run to run. The floor is the least.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// One end of a socket pair whose other end a thread echoes; round trips
/// with [`Echo::round_trip`]. Dropping it ends the thread.
pub struct Echo {
    end: Option<UnixStream>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    pub fn new() -> Echo {
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        let thread = std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            while b.read_exact(&mut byte).is_ok() {
                if b.write_all(&byte).is_err() {
                    break;
                }
            }
        });
        Echo {
            end: Some(a),
            thread: Some(thread),
        }
    }

    /// One byte there and back.
    pub fn round_trip(&mut self) {
        let end = self.end.as_mut().expect("open until dropped");
        let mut byte = [1u8; 1];
        end.write_all(&byte).expect("write");
        end.read_exact(&mut byte).expect("read");
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        drop(self.end.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `f` with an [`Echo`] whose two threads are pinned to one CPU (the
/// first this process may use), on a thread of its own: nothing else in the
/// process, and no process it starts later, inherits the pinning.
pub fn pinned<R: Send>(f: impl FnOnce(&mut Echo) -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a cpu_set_t read and written in place for this thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                let size = std::mem::size_of::<libc::cpu_set_t>();
                if libc::sched_getaffinity(0, size, &mut set) == 0 {
                    if let Some(cpu) =
                        (0..libc::CPU_SETSIZE as usize).find(|c| libc::CPU_ISSET(*c, &set))
                    {
                        libc::CPU_ZERO(&mut set);
                        libc::CPU_SET(cpu, &mut set);
                        libc::sched_setaffinity(0, size, &set);
                    }
                }
            }
            f(&mut Echo::new())
        })
        .join()
        .expect("the floor's thread")
    })
}

/// CPU time (both ends) of one round trip over [`Echo`] (both threads on
/// one CPU), in microseconds: the floor under any RPC. The least of five
/// batches of `calls`: what else runs on the machine only adds to it.
pub fn cpu_us(calls: usize) -> f64 {
    let cpu_s = || cpu(libc::RUSAGE_SELF).as_secs_f64();
    pinned(|echo| {
        let mut least = f64::INFINITY;
        for _ in 0..5 {
            let c0 = cpu_s();
            for _ in 0..calls {
                echo.round_trip();
            }
            least = least.min((cpu_s() - c0) / calls as f64 * 1e6);
        }
        least
    })
}

/// CPU time (user + system) of `who`: `RUSAGE_SELF`, or `RUSAGE_CHILDREN`
/// (the reaped children, with the descendants they reaped).
pub fn cpu(who: libc::c_int) -> std::time::Duration {
    // SAFETY: getrusage fills the struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
