//! The median product plugin: OCR2's numerical median reporting logic.
//!
//! Today this holds the pure math ([`math`]), the round deadlines
//! ([`deadlines`]), the reporting plugin's logic in-process ([`plugin`]) and a
//! local round driver ([`rounds`]), and `loop.ReportingPlugin` and
//! `loop.MedianContract` over gRPC ([`reporting`], [`contract`]); the
//! remaining gRPC services
//! (`loop.PluginMedian`, `loop.ReportingPluginFactory`, `loop.ReportingPlugin`),
//! the `loopp-median` binary and the round driver come next (see the open
//! issue "Relayer and median plugins end to end").

pub mod contract;
pub mod deadlines;
pub mod factory;
pub mod math;
pub mod plugin;
pub mod reporting;
pub mod rounds;
