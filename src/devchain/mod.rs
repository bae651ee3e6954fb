//! The reference relayer, `devchain`: a local development chain kept in a
//! file. Today this holds the crash-safe chain file ([`store`]); the relayer
//! services (`loop.PluginRelayer`, `loop.Relayer`, the median provider) and
//! the `loopp-devchain` binary come next (see the open issue "Relayer and
//! median plugins end to end").

pub mod store;
