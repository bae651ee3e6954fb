//! The relayer traits over gRPC, both directions.
//!
//! Plugin side: [`plugin_relayer_server`] serves any [`PluginRelayer`];
//! `NewRelayer` dials the host's keystore (if the host gave one), asks the
//! implementation for a relayer and serves it on a new broker id; the
//! relayer's `NewConfigProvider` / `NewPluginProvider` serve the provider's
//! services ([`config_provider_services`], [`median_provider_services`]) on
//! new broker ids the same way.
//!
//! Host side: [`PluginRelayerClient`] implements [`PluginRelayer`] through a
//! supervisor [`Link`] (whichever process is current), serving the keystore
//! on the host's broker for as long as the relayer client lives;
//! [`RelayerClient`] implements [`Relayer`] and returns providers made of
//! client adapters ([`median_provider_client`]). Serving such a provider
//! again (the node does, for the median plugin) is how a proxy is made.
//!
//! Every client call carries the timeout given at construction.

use std::sync::Arc;
use std::time::Duration;

use grpcio::{RpcContext, RpcStatusCode, UnarySink};
use protobuf::well_known_types::empty::Empty;
use protobuf::MessageField;

use super::provider::{self, ProviderClient};
use super::*;
use crate::goplugin::broker::{Broker, Lease, DEFAULT_DIAL_TIMEOUT};
use crate::goplugin::host::Link;
use crate::goplugin::rpc;
use crate::proto::relayer as pb;
use crate::proto::relayer_grpc as svc;
use crate::services::resource::{self, Remote};

/// How long a relayer's calls to the host's keystore may take.
pub const KEYSTORE_TIMEOUT: Duration = Duration::from_secs(1);

fn status(code: RpcStatusCode, e: impl std::fmt::Display) -> grpcio::RpcStatus {
    rpc::status(code, e.to_string())
}

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

/// The services of a config provider, to serve on one broker id.
pub fn config_provider_services(p: &ConfigProvider) -> Vec<grpcio::Service> {
    vec![
        provider::digester_server(p.digester.clone()),
        provider::tracker_server(p.tracker.clone()),
    ]
}

/// The services of a median provider, to serve on one broker id.
pub fn median_provider_services(p: &MedianProvider) -> Vec<grpcio::Service> {
    let mut services = config_provider_services(&p.config);
    services.extend([
        contract_transmitter_server(p.transmitter.clone()),
        crate::services::median::contract::server(p.contract.clone()),
        provider::report_codec_server(p.report_codec.clone()),
        provider::onchain_codec_server(p.onchain_codec.clone()),
    ]);
    services
}

/// The median provider served on `channel`, as client adapters named
/// `name` in errors and metrics, each call with `timeout`. With `remote`,
/// every adapter holds it: the provider is closed when the last one goes.
pub fn median_provider_client(
    name: &str,
    channel: grpcio::Channel,
    timeout: Duration,
    remote: Option<Arc<Remote>>,
) -> MedianProvider {
    let mut codec = ProviderClient::new(channel.clone(), timeout);
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
    }
}

/// Serves `relayer` as `loop.PluginRelayer` for a plugin whose broker is
/// `broker`.
pub fn plugin_relayer_server(broker: Broker, relayer: Arc<dyn PluginRelayer>) -> grpcio::Service {
    svc::create_plugin_relayer(PluginRelayerServer { broker, relayer })
}

#[derive(Clone)]
struct PluginRelayerServer {
    broker: Broker,
    relayer: Arc<dyn PluginRelayer>,
}

impl svc::PluginRelayer for PluginRelayerServer {
    fn new_relayer(
        &mut self,
        ctx: RpcContext,
        req: pb::NewRelayerRequest,
        sink: UnarySink<pb::NewRelayerReply>,
    ) {
        let this = self.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let keystore: Option<Arc<dyn Keystore>> = match req.keystoreID {
                0 => None,
                id => {
                    let ch = this.broker.dial(id, DEFAULT_DIAL_TIMEOUT).map_err(|e| {
                        status(
                            RpcStatusCode::UNAVAILABLE,
                            format!("keystore (broker id {id}): {e}"),
                        )
                    })?;
                    Some(Arc::new(crate::services::keystore::KeystoreClient::new(
                        ch,
                        KEYSTORE_TIMEOUT,
                    )))
                }
            };
            let relayer = this
                .relayer
                .new_relayer(&req.config, keystore)
                .map_err(|e| status(RpcStatusCode::INVALID_ARGUMENT, e))?;
            let id = resource::serve(
                &this.broker,
                "relayer",
                vec![svc::create_relayer(RelayerServer {
                    broker: this.broker.clone(),
                    relayer,
                })],
            )
            .map_err(|e| status(RpcStatusCode::UNAVAILABLE, e))?;
            Ok(pb::NewRelayerReply {
                relayerID: id,
                ..Default::default()
            })
        });
    }
}

#[derive(Clone)]
struct RelayerServer {
    broker: Broker,
    relayer: Arc<dyn Relayer>,
}

impl RelayerServer {
    fn serve(&self, name: &str, services: Vec<grpcio::Service>) -> Result<u32, grpcio::RpcStatus> {
        resource::serve(&self.broker, name, services)
            .map_err(|e| status(RpcStatusCode::UNAVAILABLE, e))
    }
}

impl svc::Relayer for RelayerServer {
    fn new_config_provider(
        &mut self,
        ctx: RpcContext,
        req: pb::NewConfigProviderRequest,
        sink: UnarySink<pb::NewConfigProviderReply>,
    ) {
        let this = self.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let args = relay_args(req.relayArgs.get_or_default());
            let p = this
                .relayer
                .new_config_provider(&args)
                .map_err(|e| status(RpcStatusCode::INVALID_ARGUMENT, e))?;
            Ok(pb::NewConfigProviderReply {
                configProviderID: this.serve("config provider", config_provider_services(&p))?,
                ..Default::default()
            })
        });
    }

    fn new_plugin_provider(
        &mut self,
        ctx: RpcContext,
        req: pb::NewPluginProviderRequest,
        sink: UnarySink<pb::NewPluginProviderReply>,
    ) {
        let this = self.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let args = relay_args(req.relayArgs.get_or_default());
            let plugin = req.pluginArgs.get_or_default();
            let plugin = PluginArgs {
                transmitter_id: plugin.transmitterID.clone(),
                plugin_config: plugin.pluginConfig.clone(),
            };
            let p = this
                .relayer
                .new_plugin_provider(&args, &plugin)
                .map_err(|e| status(RpcStatusCode::INVALID_ARGUMENT, e))?;
            Ok(pb::NewPluginProviderReply {
                pluginProviderID: this.serve("median provider", median_provider_services(&p))?,
                ..Default::default()
            })
        });
    }

    fn get_chain_status(
        &mut self,
        ctx: RpcContext,
        _req: pb::GetChainStatusRequest,
        sink: UnarySink<pb::GetChainStatusReply>,
    ) {
        let r = self.relayer.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let c = r
                .chain_status()
                .map_err(|e| status(RpcStatusCode::UNAVAILABLE, e))?;
            Ok(pb::GetChainStatusReply {
                chain: MessageField::some(pb::ChainStatus {
                    id: c.id,
                    enabled: c.enabled,
                    config: c.config,
                    ..Default::default()
                }),
                ..Default::default()
            })
        });
    }

    fn list_node_statuses(
        &mut self,
        ctx: RpcContext,
        req: pb::ListNodeStatusesRequest,
        sink: UnarySink<pb::ListNodeStatusesReply>,
    ) {
        let r = self.relayer.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let page = r
                .list_node_statuses(req.page_size, &req.page_token)
                .map_err(|e| status(RpcStatusCode::INVALID_ARGUMENT, e))?;
            Ok(pb::ListNodeStatusesReply {
                nodes: page
                    .nodes
                    .into_iter()
                    .map(|n| pb::NodeStatus {
                        chainID: n.chain_id,
                        name: n.name,
                        config: n.config,
                        state: n.state,
                        ..Default::default()
                    })
                    .collect(),
                total: page.total,
                next_page_token: page.next_page_token,
                ..Default::default()
            })
        });
    }

    fn transact(&mut self, ctx: RpcContext, req: pb::TransactionRequest, sink: UnarySink<Empty>) {
        let r = self.relayer.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let amount = match req.amount.as_ref() {
                Some(b) => crate::services::wire::from_big(b)
                    .map_err(|e| status(RpcStatusCode::INVALID_ARGUMENT, e))?,
                None => 0,
            };
            r.transact(&Transaction {
                from: req.from,
                to: req.to,
                amount,
                balance_check: req.balanceCheck,
            })
            .map_err(|e| status(RpcStatusCode::FAILED_PRECONDITION, e))?;
            Ok(Empty::new())
        });
    }
}

/// Serves `t` as `loop.ContractTransmitter`.
pub fn contract_transmitter_server(t: Arc<dyn ContractTransmitter>) -> grpcio::Service {
    svc::create_contract_transmitter(TransmitterServer(t))
}

#[derive(Clone)]
struct TransmitterServer(Arc<dyn ContractTransmitter>);

impl svc::ContractTransmitter for TransmitterServer {
    fn transmit(
        &mut self,
        ctx: RpcContext,
        req: pb::TransmitRequest,
        sink: UnarySink<pb::TransmitReply>,
    ) {
        let t = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let ts = req
                .reportContext
                .as_ref()
                .and_then(|rc| rc.reportTimestamp.as_ref())
                .ok_or_else(|| {
                    status(
                        RpcStatusCode::INVALID_ARGUMENT,
                        "Transmit without reportContext.reportTimestamp",
                    )
                })?;
            let ts = ReportTimestamp::from_wire(ts)
                .map_err(|e| status(RpcStatusCode::INVALID_ARGUMENT, e))?;
            t.transmit(&ts, &req.report)
                .map_err(|e| status(RpcStatusCode::FAILED_PRECONDITION, e))?;
            Ok(pb::TransmitReply::new())
        });
    }

    fn latest_config_digest_and_epoch(
        &mut self,
        ctx: RpcContext,
        _req: pb::LatestConfigDigestAndEpochRequest,
        sink: UnarySink<pb::LatestConfigDigestAndEpochReply>,
    ) {
        let t = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let (digest, epoch) = t
                .latest_config_digest_and_epoch()
                .map_err(|e| status(RpcStatusCode::UNAVAILABLE, e))?;
            Ok(pb::LatestConfigDigestAndEpochReply {
                configDigest: digest,
                epoch,
                ..Default::default()
            })
        });
    }

    fn from_account(
        &mut self,
        ctx: RpcContext,
        _req: pb::FromAccountRequest,
        sink: UnarySink<pb::FromAccountReply>,
    ) {
        let t = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let account = t
                .from_account()
                .map_err(|e| status(RpcStatusCode::UNAVAILABLE, e))?;
            Ok(pb::FromAccountReply {
                Account: account,
                ..Default::default()
            })
        });
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
    ) -> Result<Arc<dyn Relayer>, String> {
        const METHOD: &str = "/loop.PluginRelayer/NewRelayer";
        let channel = self.link.channel(&self.name).map_err(|e| e.to_string())?;
        let broker = self.link.broker(&self.name).map_err(|e| e.to_string())?;
        let mut lease = broker.lease();
        let keystore_id = match keystore {
            Some(ks) => lease
                .serve(vec![crate::services::keystore::keystore_server(ks)])
                .map_err(|e| format!("{}: serving the keystore: {e}", self.name))?,
            None => 0,
        };
        let req = pb::NewRelayerRequest {
            config: config.to_string(),
            keystoreID: keystore_id,
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
    fn dial(&self, what: &str, id: u32) -> Result<grpcio::Channel, String> {
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
        let c = Arc::new(ProviderClient::new(ch, self.timeout).holding(remote));
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
        channel: grpcio::Channel,
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

impl ContractTransmitter for ContractTransmitterClient {
    fn transmit(&self, ts: &ReportTimestamp, report: &[u8]) -> Result<(), String> {
        let req = pb::TransmitRequest {
            reportContext: MessageField::some(pb::ReportContext {
                reportTimestamp: MessageField::some(ts.to_wire()),
                ..Default::default()
            }),
            report: report.to_vec(),
            ..Default::default()
        };
        rpc::observed(&self.name, "/loop.ContractTransmitter/Transmit", || {
            self.client.transmit(&req, self.timeout)
        })
        .map(|_| ())
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
