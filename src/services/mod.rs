//! Layer 2, Chainlink's LOOP services (package `loop` of chainlink-common):
//! each service a Rust trait, its gRPC server (serves any implementation)
//! and its gRPC client (implements the same trait), and the wire types they
//! share. Imports only [`crate::goplugin`] and [`crate::proto`]: no
//! implementation, no node.
//!
//! - [`service`]: `loop.Service` (Name, Close, Ready, HealthReport);
//! - [`resource`]: objects served on broker ids, closed with their client;
//! - [`relay`]: PluginRelayer, Relayer, the providers and their sub-services;
//! - [`median`]: PluginMedian, ReportingPluginFactory, ReportingPlugin,
//!   MedianContract, and the per-call deadlines;
//! - [`datasource`], [`keystore`], [`capabilities`]: what the node serves
//!   to plugins (DataSource; Keystore and ErrorLog; an empty
//!   CapabilitiesRegistry);
//! - [`wire`]: BigInt, ReportTimestamp and hex conversions.

pub mod capabilities;
pub mod datasource;
pub mod keystore;
pub mod median;
pub mod relay;
pub mod resource;
pub mod service;
pub mod wire;
