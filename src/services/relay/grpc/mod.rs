//! The relayer traits over gRPC, both directions.
//!
//! Plugin side: [`plugin_relayer_server`] serves any [`PluginRelayer`](super::PluginRelayer);
//! `NewRelayer` dials the host's keystore (if the host gave one), asks the
//! implementation for a relayer and serves it on a new broker id; the
//! relayer's `NewConfigProvider` / `NewPluginProvider` serve the provider's
//! services ([`config_provider_services`], [`median_provider_services`]) on
//! new broker ids the same way.
//!
//! Host side: [`PluginRelayerClient`] implements [`PluginRelayer`](super::PluginRelayer) through a
//! [`Link`](crate::goplugin::host::Link) (whichever process is current), serving the keystore
//! on the host's broker for as long as the relayer client lives;
//! [`RelayerClient`] implements [`Relayer`](super::Relayer) and returns providers made of
//! client adapters ([`median_provider_client`]). Serving such a provider
//! again (the node does, for the median plugin) is how a proxy is made.
//!
//! Every client call carries the timeout given at construction. Servers are
//! in `server.rs`, clients in `client.rs`; both are re-exported here.

use std::time::Duration;

use super::RelayArgs;
use crate::proto::relayer as pb;

mod client;
mod server;

pub use client::*;
pub use server::*;

/// How long a relayer's calls to the host's keystore may take.
pub const KEYSTORE_TIMEOUT: Duration = Duration::from_secs(1);
/// `loop.RelayArgs` from the wire.
fn relay_args(a: &pb::RelayArgs) -> RelayArgs {
    RelayArgs {
        external_job_id: a.externalJobID.clone(),
        job_id: a.jobID,
        contract_id: a.contractID.clone(),
        new: a.new,
        relay_config: a.relayConfig.clone(),
        provider_type: a.providerType.clone(),
    }
}

/// `loop.RelayArgs` to the wire.
fn relay_args_wire(a: &RelayArgs) -> pb::RelayArgs {
    pb::RelayArgs {
        externalJobID: a.external_job_id.clone(),
        jobID: a.job_id,
        contractID: a.contract_id.clone(),
        new: a.new,
        relayConfig: a.relay_config.clone(),
        providerType: a.provider_type.clone(),
        ..Default::default()
    }
}
