//! [`Link`]: the host's current connection to a plugin that may be between
//! processes. Whoever owns the process (the node's supervisor) publishes
//! each new connection and broker here; clients read it on every call, so after
//! a restart they use the new process and meanwhile fail fast with
//! [`Error::Restarting`].

use std::sync::{Arc, RwLock};

use crate::goplugin::broker::Broker;
use crate::goplugin::error::{Error, Result};
use crate::goplugin::route::Conn;

/// The current connection to a supervised plugin, shared with its clients.
#[derive(Clone, Default)]
pub struct Link {
    inner: Arc<RwLock<LinkState>>,
}

#[derive(Default)]
struct LinkState {
    live: Option<(Conn, Broker)>,
    why_not: String,
}

impl Link {
    /// The connection to the running process (its own services, framed
    /// when the plugin frames them), or [`Error::Restarting`] at once.
    pub fn conn(&self, plugin: &str) -> Result<Conn> {
        let st = self.inner.read().unwrap();
        match &st.live {
            Some((ch, _)) => Ok(ch.clone()),
            None => Err(Error::Restarting {
                plugin: plugin.to_string(),
                detail: st.why_not.clone(),
            }),
        }
    }

    /// The host's broker for the running process.
    pub fn broker(&self, plugin: &str) -> Result<Broker> {
        let st = self.inner.read().unwrap();
        match &st.live {
            Some((_, b)) => Ok(b.clone()),
            None => Err(Error::Restarting {
                plugin: plugin.to_string(),
                detail: st.why_not.clone(),
            }),
        }
    }

    /// A link that is always up, to one plugin process a caller started
    /// itself (tests, tools): client adapters take a link either way.
    pub fn connected(conn: impl Into<Conn>, broker: Broker) -> Link {
        let link = Link::default();
        link.set(Some((conn.into(), broker)), "");
        link
    }

    /// Publishes the running process's connection and broker, or `None`
    /// and why not (the supervisor, at each start and exit).
    pub fn set(&self, live: Option<(Conn, Broker)>, why_not: &str) {
        let mut st = self.inner.write().unwrap();
        st.live = live;
        st.why_not = why_not.to_string();
    }
}
