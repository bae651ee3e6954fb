//! The median product plugin: OCR2's numerical median reporting logic.
//!
//! The pure math ([`math`]), the round deadlines ([`deadlines`]), the
//! reporting plugin's logic ([`plugin`]), the product plugin's entry points
//! as traits with their in-process implementation ([`factory`]), and the
//! single-node round driver ([`rounds`]). Over gRPC: `loop.ReportingPlugin`
//! ([`reporting`]), `loop.MedianContract` ([`contract`]),
//! `loop.PluginMedian` and `loop.ReportingPluginFactory` ([`factory_grpc`]).

pub mod contract;
pub mod deadlines;
pub mod factory;
pub mod factory_grpc;
pub mod math;
pub mod plugin;
pub mod reporting;
pub mod rounds;
