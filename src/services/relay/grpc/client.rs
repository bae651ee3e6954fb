//! The host side: [`PluginRelayerClient`], [`RelayerClient`] and
//! [`ContractTransmitterClient`] implement the relayer traits over gRPC, and
//! [`median_provider_client`] makes a provider of client adapters.

use std::sync::Arc;
use std::time::Duration;

use protobuf::MessageField;

use super::relay_args_wire;
use crate::goplugin::broker::{Broker, Lease};
use crate::goplugin::host::Link;
use crate::goplugin::rpc;
use crate::proto::relayer as pb;
use crate::proto::relayer_grpc as svc;
use crate::services::relay::provider::ProviderClient;
use crate::services::relay::*;
use crate::services::resource::Remote;

/// The median provider served on `channel`, as client adapters named
/// `name` in errors and metrics, each call with `timeout`. With `remote`,
/// every adapter holds it: the provider is closed when the last one goes.
pub fn median_provider_client(
    name: &str,
    channel: crate::goplugin::route::Conn,
    timeout: Duration,
    remote: Option<Arc<Remote>>,
) -> MedianProvider {
    let remote_at = channel.endpoint.clone();
    let mut codec = ProviderClient::new(channel.clone(), timeout).named(name);
    let mut transmitter = ContractTransmitterClient::new(name, channel.clone(), timeout);
    let mut contract =
        crate::services::median::contract::MedianContractClient::new(name, channel, timeout);
    if let Some(r) = remote {
        codec = codec.holding(r.clone());
        transmitter = transmitter.holding(r.clone());
        contract = contract.holding(r);
    }
    let codec = Arc::new(codec);
    MedianProvider {
        config: ConfigProvider {
            digester: codec.clone(),
            tracker: codec.clone(),
        },
        transmitter: Arc::new(transmitter),
        contract: Arc::new(contract),
        report_codec: codec.clone(),
        onchain_codec: codec,
        remote: remote_at,
    }
}
/// A relayer LOOPP's `loop.PluginRelayer`, as a [`PluginRelayer`]: each
/// `new_relayer` goes to the plugin's current process.
pub struct PluginRelayerClient {
    name: String,
    link: Link,
    timeout: Duration,
}

impl PluginRelayerClient {
    /// The relayer plugin `name` behind `link`; every call has `timeout`.
    pub fn new(name: &str, link: Link, timeout: Duration) -> PluginRelayerClient {
        PluginRelayerClient {
            name: name.to_string(),
            link,
            timeout,
        }
    }
}

impl PluginRelayer for PluginRelayerClient {
    fn new_relayer(
        &self,
        config: &str,
        keystore: Option<Arc<dyn Keystore>>,
        csa_keystore: Option<Arc<dyn Keystore>>,
    ) -> Result<Arc<dyn Relayer>, String> {
        const METHOD: &str = "/loop.PluginRelayer/NewRelayer";
        let channel = self.link.conn(&self.name).map_err(|e| e.to_string())?;
        let broker = self.link.broker(&self.name).map_err(|e| e.to_string())?;
        // What is served for the plugin runs in its lane (its bound).
        let _lane = broker.enter_lane();
        let mut lease = broker.lease();
        // Every id is served, as a Go host serves them: a Go relayer dials
        // all three and fails NewRelayer on a missing one (never send 0).
        let mut serve = |what: &str, service: crate::goplugin::route::Offer| {
            lease
                .serve(vec![service])
                .map_err(|e| format!("{}: serving the {what}: {e}", self.name))
        };
        let no_keys = || Arc::new(crate::services::keystore::NoKeys) as Arc<dyn Keystore>;
        let keystore_id = serve(
            "keystore",
            crate::services::keystore::keystore_server(keystore.unwrap_or_else(no_keys)),
        )?;
        let csa_id = serve(
            "CSA keystore",
            crate::services::keystore::keystore_server(csa_keystore.unwrap_or_else(no_keys)),
        )?;
        let registry_id = serve(
            "capabilities registry",
            crate::services::capabilities::empty_registry_server(),
        )?;
        let req = pb::NewRelayerRequest {
            config: config.to_string(),
            keystoreID: keystore_id,
            keystoreCSAID: csa_id,
            capabilityRegistryID: registry_id,
            ..Default::default()
        };
        let r = rpc::observed(&self.name, METHOD, || {
            svc::PluginRelayerClient::new(channel).new_relayer(&req, self.timeout)
        })?;
        let ch = broker.dial(r.relayerID, self.timeout).map_err(|e| {
            format!(
                "{}: the relayer (broker id {}): {e}",
                self.name, r.relayerID
            )
        })?;
        Ok(Arc::new(RelayerClient {
            name: self.name.clone(),
            broker,
            client: svc::RelayerClient::new(ch.clone()),
            timeout: self.timeout,
            _remote: Remote::new(&self.name, ch),
            _lease: lease,
        }))
    }
}

/// A remote `loop.Relayer`, as a [`Relayer`]. Holds the servers its plugin
/// relayer client started for it (the keystore) until dropped, then closes
/// the remote relayer.
pub struct RelayerClient {
    name: String,
    broker: Broker,
    client: svc::RelayerClient,
    timeout: Duration,
    _remote: Remote,
    _lease: Lease,
}

impl RelayerClient {
    fn dial(&self, what: &str, id: u32) -> Result<crate::goplugin::route::Conn, String> {
        self.broker
            .dial(id, self.timeout)
            .map_err(|e| format!("{}: the {what} (broker id {id}): {e}", self.name))
    }
}

impl Relayer for RelayerClient {
    fn new_config_provider(&self, args: &RelayArgs) -> Result<ConfigProvider, String> {
        let req = pb::NewConfigProviderRequest {
            relayArgs: MessageField::some(relay_args_wire(args)),
            ..Default::default()
        };
        let r = rpc::observed(&self.name, "/loop.Relayer/NewConfigProvider", || {
            self.client.new_config_provider(&req, self.timeout)
        })?;
        let ch = self.dial("config provider", r.configProviderID)?;
        let remote = Arc::new(Remote::new(&self.name, ch.clone()));
        let c = Arc::new(
            ProviderClient::new(ch, self.timeout)
                .named(&self.name)
                .holding(remote),
        );
        Ok(ConfigProvider {
            digester: c.clone(),
            tracker: c,
        })
    }

    fn new_plugin_provider(
        &self,
        args: &RelayArgs,
        plugin: &PluginArgs,
    ) -> Result<MedianProvider, String> {
        let req = pb::NewPluginProviderRequest {
            relayArgs: MessageField::some(relay_args_wire(args)),
            pluginArgs: MessageField::some(pb::PluginArgs {
                transmitterID: plugin.transmitter_id.clone(),
                pluginConfig: plugin.plugin_config.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = rpc::observed(&self.name, "/loop.Relayer/NewPluginProvider", || {
            self.client.new_plugin_provider(&req, self.timeout)
        })?;
        let ch = self.dial("plugin provider", r.pluginProviderID)?;
        let remote = Arc::new(Remote::new(&self.name, ch.clone()));
        Ok(median_provider_client(
            &self.name,
            ch,
            self.timeout,
            Some(remote),
        ))
    }

    fn chain_status(&self) -> Result<ChainStatus, String> {
        let r = rpc::observed(&self.name, "/loop.Relayer/GetChainStatus", || {
            self.client
                .get_chain_status(&pb::GetChainStatusRequest::new(), self.timeout)
        })?;
        let c = r.chain.get_or_default();
        Ok(ChainStatus {
            id: c.id.clone(),
            enabled: c.enabled,
            config: c.config.clone(),
        })
    }

    fn list_node_statuses(
        &self,
        page_size: i32,
        page_token: &str,
    ) -> Result<NodeStatusPage, String> {
        let req = pb::ListNodeStatusesRequest {
            page_size,
            page_token: page_token.to_string(),
            ..Default::default()
        };
        let r = rpc::observed(&self.name, "/loop.Relayer/ListNodeStatuses", || {
            self.client.list_node_statuses(&req, self.timeout)
        })?;
        Ok(NodeStatusPage {
            nodes: r
                .nodes
                .into_iter()
                .map(|n| NodeStatus {
                    chain_id: n.chainID,
                    name: n.name,
                    config: n.config,
                    state: n.state,
                })
                .collect(),
            total: r.total,
            next_page_token: r.next_page_token,
        })
    }

    fn transact(&self, tx: &Transaction) -> Result<(), String> {
        let req = pb::TransactionRequest {
            from: tx.from.clone(),
            to: tx.to.clone(),
            amount: MessageField::some(crate::services::wire::to_big(tx.amount)),
            balanceCheck: tx.balance_check,
            ..Default::default()
        };
        rpc::observed(&self.name, "/loop.Relayer/Transact", || {
            self.client.transact(&req, self.timeout)
        })
        .map(|_| ())
    }

    fn latest_head(&self) -> Result<Head, String> {
        let r = rpc::observed(&self.name, "/loop.Relayer/LatestHead", || {
            self.client
                .latest_head(&pb::LatestHeadRequest::new(), self.timeout)
        })?;
        Ok(head(r.head.get_or_default()))
    }

    fn finalized_head(&self) -> Result<Head, String> {
        let r = rpc::observed(&self.name, "/loop.Relayer/FinalizedHead", || {
            self.client
                .finalized_head(&pb::FinalizedHeadRequest::new(), self.timeout)
        })?;
        Ok(head(r.head.get_or_default()))
    }

    fn chain_info(&self) -> Result<ChainInfo, String> {
        let r = rpc::observed(&self.name, "/loop.Relayer/GetChainInfo", || {
            self.client
                .get_chain_info(&pb::GetChainInfoRequest::new(), self.timeout)
        })?;
        let c = r.chain_info.get_or_default();
        Ok(ChainInfo {
            family_name: c.family_name.clone(),
            chain_id: c.chain_id.clone(),
            network_name: c.network_name.clone(),
            network_name_full: c.network_name_full.clone(),
        })
    }

    fn replay(
        &self,
        from_block: &str,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        let req = pb::ReplayRequest {
            fromBlock: from_block.to_string(),
            args: MessageField::some(crate::services::wire::to_struct(args)),
            ..Default::default()
        };
        rpc::observed(&self.name, "/loop.Relayer/Replay", || {
            self.client.replay(&req, self.timeout)
        })
        .map(|_| ())
    }
}

fn head(h: &pb::Head) -> Head {
    Head {
        height: h.height.clone(),
        hash: h.hash.clone(),
        timestamp: h.timestamp,
    }
}

/// A remote `loop.ContractTransmitter`, as a [`ContractTransmitter`].
pub struct ContractTransmitterClient {
    name: String,
    client: svc::ContractTransmitterClient,
    timeout: Duration,
    _remote: Option<Arc<Remote>>,
}

impl ContractTransmitterClient {
    /// The transmitter on `channel`; each call has `timeout`.
    pub fn new(
        name: &str,
        channel: crate::goplugin::route::Conn,
        timeout: Duration,
    ) -> ContractTransmitterClient {
        ContractTransmitterClient {
            name: name.to_string(),
            client: svc::ContractTransmitterClient::new(channel),
            timeout,
            _remote: None,
        }
    }

    /// Keeps the remote object alive while this client lives (see
    /// [`crate::services::resource::Remote`]).
    pub fn holding(mut self, remote: std::sync::Arc<crate::services::resource::Remote>) -> Self {
        self._remote = Some(remote);
        self
    }
}

const TRANSMIT: &str = "/loop.ContractTransmitter/Transmit";

fn transmit_request(ts: &ReportTimestamp, report: &[u8]) -> pb::TransmitRequest {
    pb::TransmitRequest {
        reportContext: MessageField::some(pb::ReportContext {
            reportTimestamp: MessageField::some(ts.to_wire()),
            ..Default::default()
        }),
        report: report.to_vec(),
        ..Default::default()
    }
}

impl ContractTransmitter for ContractTransmitterClient {
    fn transmit(&self, ts: &ReportTimestamp, report: &[u8]) -> Result<(), String> {
        rpc::observed(&self.name, TRANSMIT, || {
            self.client
                .transmit(&transmit_request(ts, report), self.timeout)
        })
        .map(|_| ())
    }

    fn transmit_async(&self, ts: &ReportTimestamp, report: &[u8]) -> Option<rpc::Reply<()>> {
        let reply = rpc::observed_async(&self.name, TRANSMIT, || {
            self.client
                .transmit_async(&transmit_request(ts, report), self.timeout)
        });
        Some(Box::pin(async move { reply.await.map(|_| ()) }))
    }

    fn latest_config_digest_and_epoch(&self) -> Result<(Vec<u8>, u32), String> {
        let r = rpc::observed(
            &self.name,
            "/loop.ContractTransmitter/LatestConfigDigestAndEpoch",
            || {
                self.client.latest_config_digest_and_epoch(
                    &pb::LatestConfigDigestAndEpochRequest::new(),
                    self.timeout,
                )
            },
        )?;
        Ok((r.configDigest, r.epoch))
    }

    fn from_account(&self) -> Result<String, String> {
        rpc::observed(&self.name, "/loop.ContractTransmitter/FromAccount", || {
            self.client
                .from_account(&pb::FromAccountRequest::new(), self.timeout)
        })
        .map(|r| r.Account)
    }
}
