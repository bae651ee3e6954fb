//! Layer 1, the go-plugin protocol, both sides. Nothing here knows Chainlink's
//! LOOP services, the node or any implementation: what a higher layer needs
//! to plug in is a type or trait owned here ([`host::Link`],
//! [`plugin::Closer`], the metrics registry in [`metrics`]).
//!
//! - [`handshake`] and [`logline`]: the protocol's two text formats;
//! - [`rpc`]: the only place that configures grpcio; [`unary`]: a unary
//!   call's reply that cannot panic its waiter, waited for by
//!   [`spinwait`] (a short spin, then park); [`broker`]: the
//!   GRPCBroker; [`pool`]: threads for blocking handlers;
//! - [`plugin`]: the plugin side ([`plugin::serve`]); [`host`]: the host
//!   side ([`host::Client`], [`host::Link`]);
//! - [`sockdir`], [`signals`], [`fdwait`], [`timer`]: OS plumbing;
//!   [`metrics`] and [`http`]: the process-wide metrics registry and the
//!   HTTP server that shows it;
//! - [`error`]: the library's error type.

pub mod broker;
pub mod call;
pub mod error;
pub mod fdwait;
pub mod framed;
pub mod handshake;
pub mod host;
pub mod http;
pub mod logline;
pub mod metrics;
pub mod plugin;
pub mod pool;
pub mod route;
pub mod rpc;
pub mod signals;
pub mod sockdir;
pub mod spinwait;
pub mod timer;
pub mod unary;
