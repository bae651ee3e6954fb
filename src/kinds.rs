//! The kinds of plugin the node knows: each has a magic cookie (what its LOOPP
//! binary expects) and, when it has one, an in-process implementation used when
//! `CL_<NAME>_CMD` is unset.

use std::sync::Arc;

use crate::handshake::Cookie;
use crate::service::Service;

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
}

/// Every kind, by name.
pub fn all() -> Vec<Kind> {
    vec![
        Kind {
            name: "example",
            cookie: Cookie::example(),
            in_process: Some(|| Arc::new(crate::example::ExampleService)),
        },
        Kind {
            name: "median",
            cookie: Cookie::median(),
            in_process: None,
        },
        Kind {
            name: "relayer",
            cookie: Cookie::relayer(),
            in_process: None,
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
