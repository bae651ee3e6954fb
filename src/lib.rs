//! loopp: a runtime for Local Out-Of-Process Plugins (LOOPPs).
//!
//! A host process runs parts of itself as plugin processes that speak the
//! hashicorp go-plugin gRPC wire protocol, so Go hosts run loopp plugins and
//! loopp hosts run Go plugins. Synchronous, on threads; grpcio underneath.
//!
//! The crate is layered; each layer imports only from the layers below it
//! (checked by the `layers` test, stated in `ARCHITECTURE.md`):
//!
//! 1. [`goplugin`]: the go-plugin protocol, both sides: [`goplugin::plugin::serve`]
//!    makes a process a plugin, [`goplugin::host::Client`] launches, pings and
//!    kills one, [`goplugin::broker::Broker`] carries sub-services across the
//!    process boundary.
//! 2. [`services`]: Chainlink's `loop.*` services as Rust traits, with their
//!    gRPC servers and clients and wire types.
//! 3. The implementations: [`median`] (the median product plugin),
//!    [`devchain`] (the reference relayer), [`sources`] (data sources),
//!    [`example`] (the SDK example).
//! 4. [`node`]: the node: configuration, supervision, registry, HTTP, feeds.
//!
//! [`proto`] (generated), [`stats`], [`pages`] (giving back start-up code)
//! and [`malloc`] (one allocator arena) sit below everything.
//!
//! See `ARCHITECTURE.md` for the map and `docs/PROTOCOL.md` for the protocol.

#![deny(missing_docs)]

pub mod devchain;
pub mod example;
pub mod goplugin;
pub mod malloc;
pub mod median;
pub mod node;
pub mod pages;
pub mod proto;
pub mod services;
pub mod sources;
pub mod stats;
#[cfg(test)]
mod testutil;

pub use goplugin::error::{Error, Result};
