//! Metrics ports for plugins (`CL_PROMETHEUS_PORT`): each checked free on
//! 127.0.0.1 when allocated, unique among the node's plugins, kept for a
//! plugin across its restarts and released when it stops.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// The node's allocated ports.
#[derive(Default)]
pub struct Ports {
    taken: Mutex<BTreeSet<u16>>,
}

impl Ports {
    /// No ports allocated.
    pub fn new() -> Ports {
        Ports::default()
    }

    /// A port free on 127.0.0.1 now and not given to another plugin.
    pub fn allocate(&self) -> std::io::Result<u16> {
        let mut taken = self.taken.lock().unwrap();
        for _ in 0..100 {
            // The kernel picks a free ephemeral port; we release it for the plugin.
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            if taken.insert(port) {
                return Ok(port);
            }
        }
        Err(std::io::Error::other(
            "no free port for a plugin's metrics after 100 tries",
        ))
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
    fn unique_free_and_released() {
        let ports = Ports::new();
        let a: Vec<u16> = (0..20).map(|_| ports.allocate().unwrap()).collect();
        let set: BTreeSet<u16> = a.iter().copied().collect();
        assert_eq!(set.len(), 20);
        for p in &a {
            assert!(
                TcpListener::bind(("127.0.0.1", *p)).is_ok(),
                "port {p} is free to bind"
            );
            ports.release(*p);
        }
        assert!(ports.is_empty());
    }
}
