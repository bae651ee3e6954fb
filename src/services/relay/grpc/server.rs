//! The plugin side: `loop.PluginRelayer`, `loop.Relayer` and
//! `loop.ContractTransmitter` servers for any implementation, and the
//! provider services to serve on a broker id.

use crate::goplugin::call::{Ctx, Sink};
use std::sync::Arc;

use grpcio::RpcStatusCode;
use protobuf::well_known_types::empty::Empty;
use protobuf::MessageField;

use super::{relay_args, KEYSTORE_TIMEOUT};
use crate::goplugin::broker::{Broker, DEFAULT_DIAL_TIMEOUT};
use crate::goplugin::rpc;
use crate::proto::relayer as pb;
use crate::proto::relayer_grpc as svc;
use crate::services::relay::provider;
use crate::services::relay::*;
use crate::services::resource;

fn status(code: RpcStatusCode, e: impl std::fmt::Display) -> grpcio::RpcStatus {
    rpc::status(code, e.to_string())
}
/// The services of a config provider, to serve on one broker id.
pub fn config_provider_services(p: &ConfigProvider) -> Vec<crate::goplugin::route::Offer> {
    vec![
        provider::digester_server(p.digester.clone()),
        provider::tracker_server(p.tracker.clone()),
    ]
}

/// The services of a median provider, to serve on one broker id.
pub fn median_provider_services(p: &MedianProvider) -> Vec<crate::goplugin::route::Offer> {
    let mut services = config_provider_services(&p.config);
    services.extend([
        contract_transmitter_server(p.transmitter.clone()),
        crate::services::median::contract::server(p.contract.clone()),
        provider::report_codec_server(p.report_codec.clone()),
        provider::onchain_codec_server(p.onchain_codec.clone()),
    ]);
    services
}
/// Serves `relayer` as `loop.PluginRelayer` for a plugin whose broker is
/// `broker`.
pub fn plugin_relayer_server(
    broker: Broker,
    relayer: Arc<dyn PluginRelayer>,
) -> crate::goplugin::route::Offer {
    svc::offer_plugin_relayer(PluginRelayerServer { broker, relayer })
}

#[derive(Clone)]
struct PluginRelayerServer {
    broker: Broker,
    relayer: Arc<dyn PluginRelayer>,
}

impl svc::PluginRelayer for PluginRelayerServer {
    fn new_relayer(
        &mut self,
        ctx: Ctx,
        req: pb::NewRelayerRequest,
        sink: Sink<pb::NewRelayerReply>,
    ) {
        let this = self.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            // A host that sent no id (0) has no such service for us.
            let keystore_at = |what: &str, id: u32| -> Result<Option<Arc<dyn Keystore>>, _> {
                if id == 0 {
                    return Ok(None);
                }
                let ch = this.broker.dial(id, DEFAULT_DIAL_TIMEOUT).map_err(|e| {
                    status(
                        RpcStatusCode::UNAVAILABLE,
                        format!("{what} (broker id {id}): {e}"),
                    )
                })?;
                Ok(Some(
                    Arc::new(crate::services::keystore::KeystoreClient::new(
                        ch,
                        KEYSTORE_TIMEOUT,
                    )) as Arc<dyn Keystore>,
                ))
            };
            let keystore = keystore_at("keystore", req.keystoreID)?;
            let csa_keystore = keystore_at("CSA keystore", req.keystoreCSAID)?;
            let relayer = this
                .relayer
                .new_relayer(&req.config, keystore, csa_keystore)
                .map_err(|e| status(RpcStatusCode::INVALID_ARGUMENT, e))?;
            let id = resource::serve(
                &this.broker,
                "relayer",
                vec![svc::offer_relayer(RelayerServer {
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
    fn serve(
        &self,
        name: &str,
        services: Vec<crate::goplugin::route::Offer>,
    ) -> Result<u32, grpcio::RpcStatus> {
        resource::serve(&self.broker, name, services)
            .map_err(|e| status(RpcStatusCode::UNAVAILABLE, e))
    }
}

impl svc::Relayer for RelayerServer {
    fn new_config_provider(
        &mut self,
        ctx: Ctx,
        req: pb::NewConfigProviderRequest,
        sink: Sink<pb::NewConfigProviderReply>,
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
        ctx: Ctx,
        req: pb::NewPluginProviderRequest,
        sink: Sink<pb::NewPluginProviderReply>,
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
        ctx: Ctx,
        _req: pb::GetChainStatusRequest,
        sink: Sink<pb::GetChainStatusReply>,
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
        ctx: Ctx,
        req: pb::ListNodeStatusesRequest,
        sink: Sink<pb::ListNodeStatusesReply>,
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

    fn transact(&mut self, ctx: Ctx, req: pb::TransactionRequest, sink: Sink<Empty>) {
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

    fn latest_head(
        &mut self,
        ctx: Ctx,
        _req: pb::LatestHeadRequest,
        sink: Sink<pb::LatestHeadReply>,
    ) {
        let r = self.relayer.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let head = r
                .latest_head()
                .map_err(|e| status(RpcStatusCode::UNAVAILABLE, e))?;
            Ok(pb::LatestHeadReply {
                head: MessageField::some(head_wire(head)),
                ..Default::default()
            })
        });
    }

    fn finalized_head(
        &mut self,
        ctx: Ctx,
        _req: pb::FinalizedHeadRequest,
        sink: Sink<pb::FinalizedHeadReply>,
    ) {
        let r = self.relayer.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let head = r
                .finalized_head()
                .map_err(|e| status(RpcStatusCode::UNAVAILABLE, e))?;
            Ok(pb::FinalizedHeadReply {
                head: MessageField::some(head_wire(head)),
                ..Default::default()
            })
        });
    }

    fn get_chain_info(
        &mut self,
        ctx: Ctx,
        _req: pb::GetChainInfoRequest,
        sink: Sink<pb::GetChainInfoReply>,
    ) {
        let r = self.relayer.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let c = r
                .chain_info()
                .map_err(|e| status(RpcStatusCode::UNAVAILABLE, e))?;
            Ok(pb::GetChainInfoReply {
                chain_info: MessageField::some(pb::ChainInfo {
                    family_name: c.family_name,
                    chain_id: c.chain_id,
                    network_name: c.network_name,
                    network_name_full: c.network_name_full,
                    ..Default::default()
                }),
                ..Default::default()
            })
        });
    }

    fn replay(&mut self, ctx: Ctx, req: pb::ReplayRequest, sink: Sink<Empty>) {
        let r = self.relayer.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let args = match req.args.as_ref() {
                Some(s) => crate::services::wire::from_struct(s)
                    .map_err(|e| status(RpcStatusCode::INVALID_ARGUMENT, format!("args.{e}")))?,
                None => Default::default(),
            };
            r.replay(&req.fromBlock, &args)
                .map_err(|e| status(RpcStatusCode::INVALID_ARGUMENT, e))?;
            Ok(Empty::new())
        });
    }
}

fn head_wire(h: Head) -> pb::Head {
    pb::Head {
        height: h.height,
        hash: h.hash,
        timestamp: h.timestamp,
        ..Default::default()
    }
}

/// Serves `t` as `loop.ContractTransmitter`.
pub fn contract_transmitter_server(
    t: Arc<dyn ContractTransmitter>,
) -> crate::goplugin::route::Offer {
    svc::offer_contract_transmitter(TransmitterServer(t))
}

#[derive(Clone)]
struct TransmitterServer(Arc<dyn ContractTransmitter>);

impl svc::ContractTransmitter for TransmitterServer {
    fn transmit(&mut self, ctx: Ctx, req: pb::TransmitRequest, sink: Sink<pb::TransmitReply>) {
        let ts = req
            .reportContext
            .as_ref()
            .and_then(|rc| rc.reportTimestamp.as_ref())
            .ok_or_else(|| {
                status(
                    RpcStatusCode::INVALID_ARGUMENT,
                    "Transmit without reportContext.reportTimestamp",
                )
            })
            .and_then(|ts| {
                ReportTimestamp::from_wire(ts)
                    .map_err(|e| status(RpcStatusCode::INVALID_ARGUMENT, e))
            });
        let ts = match ts {
            Ok(ts) => ts,
            Err(e) => return rpc::respond(&ctx, sink, Err(e)),
        };
        let answer = |r: Result<(), String>| {
            r.map(|()| pb::TransmitReply::new())
                .map_err(|e| status(RpcStatusCode::FAILED_PRECONDITION, e))
        };
        // An implementation that writes on threads of its own answers with
        // a future here, on the completion-queue thread.
        if let Some(place) = rpc::async_place() {
            if let Some(sent) = self.0.transmit_async(&ts, &req.report) {
                return rpc::respond_async(&ctx, sink, place, async move { answer(sent.await) });
            }
        }
        let t = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || answer(t.transmit(&ts, &req.report)));
    }

    fn latest_config_digest_and_epoch(
        &mut self,
        ctx: Ctx,
        _req: pb::LatestConfigDigestAndEpochRequest,
        sink: Sink<pb::LatestConfigDigestAndEpochReply>,
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
        ctx: Ctx,
        _req: pb::FromAccountRequest,
        sink: Sink<pb::FromAccountReply>,
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
