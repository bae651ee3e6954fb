//! The reference relayer, `devchain`: a local development chain kept in a
//! file. The crash-safe chain file ([`store`]), the median contract over it
//! ([`contract`]), its report format ([`codec`]), its implementations of the
//! provider traits ([`provider`]) and the relayer itself ([`relayer`]:
//! `PluginRelayer` and `Relayer`, in-process; `loopp-devchain` serves the
//! same objects through [`crate::services::relay::grpc`]).

pub mod codec;
pub mod contract;
pub mod provider;
pub mod relayer;
pub mod store;
