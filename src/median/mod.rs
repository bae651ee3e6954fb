//! The median product plugin, in-process: OCR2's numerical median reporting
//! logic. The pure math ([`math`]), one oracle's reporting plugin
//! ([`plugin`]: `MedianPlugin`, its `FeedSettings`) and the product plugin's
//! entry points ([`factory`]: `Median`), and libocr's encodings ([`libocr`]:
//! the observation and offchain config).
//!
//! Layer 3: it implements traits of [`crate::services::median`] and knows no
//! relayer: reports are built with the provider's `ReportCodec`.

pub mod factory;
pub mod gosort;
pub mod libocr;
pub mod math;
pub mod plugin;
pub mod recent;
