//! The reference relayer, `devchain`: a local development chain kept in a
//! file. Today this holds the crash-safe chain file ([`store`]), the median
//! contract over it ([`contract`]), its report format ([`codec`]) and the
//! relayer's gRPC services ([`relayer`]); the node-side wiring of the relayer
//! services (`loop.PluginRelayer`, `loop.Relayer`, the median provider) and
//! the `loopp-devchain` binary come next (see the open issue "Relayer and
//! median plugins end to end").

pub mod codec;
pub mod contract;
pub mod provider;
pub mod relayer;
pub mod store;
