//! The kinds of plugin the node knows: each has a magic cookie (what its LOOPP
//! binary expects) and, when it has one, an in-process implementation used when
//! `CL_<NAME>_CMD` is unset.

use std::sync::Arc;

use crate::goplugin::handshake::Cookie;
use crate::services::service::{AlwaysReady, Service};

/// Builds a kind's in-process service.
pub type InProcess = fn() -> Arc<dyn Service>;

/// A kind of plugin.
#[derive(Clone, Debug)]
pub struct Kind {
    /// Its name in job files, e.g. `median`.
    pub name: &'static str,
    /// The cookie its LOOPP binaries check.
    pub cookie: Cookie,
    /// Its in-process implementation, if any.
    pub in_process: Option<InProcess>,
    /// For relayers: the networks (plugin names) the in-process
    /// implementation serves; None: any name.
    pub in_process_names: Option<&'static [&'static str]>,
}

impl Kind {
    /// The in-process implementation for a plugin called `name`, if any.
    pub fn in_process_for(&self, name: &str) -> Option<InProcess> {
        match self.in_process_names {
            Some(names) if !names.contains(&name) => None,
            _ => self.in_process,
        }
    }
}

/// Every kind, by name.
pub fn all() -> Vec<Kind> {
    vec![
        Kind {
            name: "example",
            cookie: Cookie::example(),
            in_process: Some(|| Arc::new(crate::example::ExampleService)),
            in_process_names: None,
        },
        Kind {
            name: "median",
            cookie: Cookie::median(),
            in_process: Some(|| Arc::new(AlwaysReady("median"))),
            in_process_names: None,
        },
        Kind {
            name: "relayer",
            cookie: Cookie::relayer(),
            in_process: Some(|| Arc::new(AlwaysReady("devchain"))),
            // The only relay network with an in-process implementation.
            in_process_names: Some(&["devchain"]),
        },
    ]
}

/// The kind called `name`.
pub fn lookup(name: &str) -> Option<Kind> {
    all().into_iter().find(|k| k.name == name)
}

/// The names of all kinds, for error messages.
pub fn names() -> String {
    all().iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}
