//! loopp: a runtime for Local Out-Of-Process Plugins (LOOPPs).
//!
//! A host process runs parts of itself as plugin processes that speak the
//! hashicorp go-plugin gRPC wire protocol, so Go hosts run loopp plugins and
//! loopp hosts run Go plugins. Synchronous, on threads; grpcio underneath.
//!
//! - [`plugin::serve`] makes a process a plugin;
//! - [`host::Client`] launches, pings and kills one;
//! - [`broker::Broker`] carries sub-services across the process boundary;
//! - [`handshake`] and [`logline`] are the two text formats of the protocol.
//!
//! See `ARCHITECTURE.md` for the map and `docs/PROTOCOL.md` for the protocol.

#![deny(missing_docs)]

pub mod broker;
pub mod config;
pub mod datasource;
pub mod devchain;
pub mod dotenv;
pub mod error;
pub mod example;
pub mod feeds;
pub mod handshake;
pub mod host;
pub mod http;
pub mod keystore;
pub mod kinds;
pub mod logline;
pub mod median;
pub mod metrics;
pub mod node;
pub mod plugin;
pub mod pool;
pub mod ports;
pub mod proto;
pub mod registry;
pub mod relay;
pub mod resource;
pub mod rpc;
pub mod service;
pub mod signals;
pub mod sockdir;
pub mod stats;
pub mod supervisor;
#[cfg(test)]
mod testutil;
pub mod wire;

pub use error::{Error, Result};
