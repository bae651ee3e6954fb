//! Another process's CPU time in nanoseconds, for the benchmarks: its CPU
//! clock (`clock_getcpuclockid`), which Linux lets any process read and
//! which counts every thread the process ever had, ended ones included.
//! `/proc/PID/stat` counts the same in clock ticks (10 ms here): over a
//! quiet 20 s, three idle processes spend a few ticks, and a tick more or
//! less moved "CPU per round at 1 feed" by half a millisecond.

use std::time::Duration;

/// CPU time (user + system) of process `pid` so far; `None` once it is gone.
pub fn of(pid: u32) -> Option<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: both calls only write the out-parameters given.
    unsafe {
        if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) != 0 {
            return None;
        }
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(clock, &mut ts) != 0 {
            return None;
        }
        Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
}
