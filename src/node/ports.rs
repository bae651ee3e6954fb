//! Metrics ports for plugins (`CL_PROMETHEUS_PORT`): checked free on
//! 127.0.0.1 when allocated, unique among the node's plugins, kept for a
//! plugin across its restarts (unless something else took it meanwhile, then
//! it gets a new one) and released when it stops.
//!
//! Ports come from just below the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), which the kernel never hands
//! out for outgoing connections, so a plugin's port is not taken away by some
//! client socket between its restarts. The scan starts at a random point so
//! several nodes on one host rarely race for the same port.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::ops::RangeInclusive;
use std::sync::Mutex;

/// How many ports below the ephemeral range are used.
const SPAN: u16 = 12_000;

/// The node's allocated ports.
pub struct Ports {
    range: RangeInclusive<u16>,
    taken: Mutex<BTreeSet<u16>>,
}

impl Default for Ports {
    fn default() -> Self {
        Ports::new()
    }
}

/// The start of the kernel's ephemeral port range (32768 if unknown).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(32768)
}

/// Whether `port` can be bound on 127.0.0.1 right now.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl Ports {
    /// No ports allocated; the range below the ephemeral ports.
    pub fn new() -> Ports {
        let high = ephemeral_low().saturating_sub(1).max(2048);
        let low = high.saturating_sub(SPAN).max(1024);
        Ports::in_range(low..=high)
    }

    /// No ports allocated; ports from `range`.
    pub fn in_range(range: RangeInclusive<u16>) -> Ports {
        Ports {
            range,
            taken: Mutex::new(BTreeSet::new()),
        }
    }

    /// A port free on 127.0.0.1 now and not given to another plugin.
    pub fn allocate(&self) -> std::io::Result<u16> {
        let mut taken = self.taken.lock().unwrap();
        let (low, high) = (u32::from(*self.range.start()), u32::from(*self.range.end()));
        let span = high - low + 1;
        let r = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let start = (r % u64::from(span)) as u32;
        for i in 0..span {
            let port = (low + (start + i) % span) as u16;
            if !taken.contains(&port) && is_free(port) {
                taken.insert(port);
                return Ok(port);
            }
        }
        Err(std::io::Error::other(format!(
            "no free port for a plugin's metrics in {low}..={high}"
        )))
    }

    /// Gives `port` back.
    pub fn release(&self, port: u16) {
        self.taken.lock().unwrap().remove(&port);
    }

    /// How many are allocated.
    pub fn len(&self) -> usize {
        self.taken.lock().unwrap().len()
    }

    /// Whether none are allocated.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_free_below_the_ephemeral_range_and_released() {
        let ports = Ports::new();
        let low = ephemeral_low();
        let a: Vec<u16> = (0..20).map(|_| ports.allocate().unwrap()).collect();
        let set: BTreeSet<u16> = a.iter().copied().collect();
        assert_eq!(set.len(), 20);
        for p in &a {
            assert!(*p < low, "port {p} is below the ephemeral range");
            assert!(is_free(*p), "port {p} is free to bind");
            ports.release(*p);
        }
        assert!(ports.is_empty());
    }

    #[test]
    fn a_taken_port_is_skipped() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let ports = Ports::in_range(port..=port);
        assert!(ports.allocate().is_err(), "the only port is in use");
        drop(held);
        assert_eq!(ports.allocate().unwrap(), port);
    }
}
