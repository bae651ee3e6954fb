//! The node's log output, written by a thread of its own. A thread that
//! logs (a completion-queue thread ending a round, a supervisor, the
//! registry) only hands a finished line to a bounded queue, so a stderr
//! whose reader stalls (a log shipper that stopped reading, a full pipe)
//! never stalls the node: lines past the queue's bound are dropped and
//! counted, and the count is written once stderr takes lines again.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Lines waiting for stderr, at most (about 1 MB of typical lines).
pub const QUEUE_LINES: usize = 8192;

/// A `Write` for `env_logger::Target::Pipe`: each record (env_logger
/// writes one, then flushes) becomes one queued line.
pub struct Queued {
    line: Vec<u8>,
    shared: Arc<Shared>,
}

struct Shared {
    tx: Sender<Vec<u8>>,
    dropped: AtomicU64,
}

/// Waits until what was logged so far is written (or `within` passes).
pub struct Drain {
    shared: Arc<Shared>,
}

/// Starts the writer thread on `out` (stderr, in the node); returns the
/// pipe for env_logger and a handle to drain the queue before exit.
pub fn start(out: impl Write + Send + 'static) -> (Queued, Drain) {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(QUEUE_LINES);
    let shared = Arc::new(Shared {
        tx,
        dropped: AtomicU64::new(0),
    });
    let writer = shared.clone();
    // Failing, the closure and its receiver are dropped: lines are then
    // written by the logging thread (`Queued::flush`).
    let spawned = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_all(rx, out, writer));
    if let Err(e) = spawned {
        eprintln!("loopp-node: cannot start the log writer thread ({e}); logging without it");
    }
    (
        Queued {
            line: Vec::new(),
            shared: shared.clone(),
        },
        Drain { shared },
    )
}

fn write_all(rx: Receiver<Vec<u8>>, mut out: impl Write, shared: Arc<Shared>) {
    for line in rx {
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "loopp-node: {dropped} log lines dropped: stderr took no lines for a while"
            );
        }
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
}

impl Write for Queued {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.line.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.line);
        match self.shared.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // No writer thread: write here.
            Err(TrySendError::Disconnected(line)) => {
                let _ = std::io::stderr().write_all(&line);
            }
        }
        Ok(())
    }
}

impl Drain {
    /// Waits until the queue is empty, at most `within`: lines logged
    /// just before the node exits still reach stderr, and a stderr that
    /// takes nothing does not hold the exit.
    pub fn wait(&self, within: Duration) {
        let until = Instant::now() + within;
        while !self.shared.tx.is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A stderr that takes nothing until it is let go, then records.
    struct Stalled {
        go: Receiver<()>,
        got: Arc<Mutex<Vec<u8>>>,
        open: bool,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !self.open {
                let _ = self.go.recv();
                self.open = true;
            }
            self.got.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// With stderr taking nothing, logging never waits: lines past the
    /// queue's bound are dropped; once stderr takes lines again, the
    /// queued ones and the count of the dropped ones reach it, in order.
    #[test]
    fn a_stalled_stderr_never_stalls_a_logging_thread() {
        let (go, wait) = crossbeam_channel::bounded(1);
        let got = Arc::new(Mutex::new(Vec::new()));
        let (mut pipe, drain) = start(Stalled {
            go: wait,
            got: got.clone(),
            open: false,
        });
        let total = QUEUE_LINES + 500;
        let t0 = Instant::now();
        for i in 0..total {
            writeln!(pipe, "line {i}").unwrap();
            pipe.flush().unwrap();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "logging waited for stderr"
        );
        go.send(()).unwrap();
        drain.wait(Duration::from_secs(10));
        // The writer may still be writing its last lines: at least
        // QUEUE_LINES lines and the notice reach stderr, then no more.
        let until = Instant::now() + Duration::from_secs(10);
        let count = || got.lock().unwrap().iter().filter(|b| **b == b'\n').count();
        loop {
            let before = count();
            std::thread::sleep(Duration::from_millis(20));
            if before > QUEUE_LINES && count() == before {
                break;
            }
            assert!(Instant::now() < until, "stderr never got the queued lines");
        }
        let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // The first lines logged, in order (the writer may have taken
        // line 0 off the queue before it filled), then none.
        let kept: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("line "))
            .collect();
        assert!(
            (QUEUE_LINES..=QUEUE_LINES + 1).contains(&kept.len()),
            "{}",
            kept.len()
        );
        for (i, l) in kept.iter().enumerate() {
            assert_eq!(*l, format!("line {i}"));
        }
        let dropped = total - kept.len();
        let notices: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains("log lines dropped"))
            .collect();
        assert_eq!(
            notices,
            [format!(
                "loopp-node: {dropped} log lines dropped: stderr took no lines for a while"
            )]
        );
    }
}
