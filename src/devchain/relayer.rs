//! The devchain relayer over gRPC: `loop.PluginRelayer` (NewRelayer from a
//! config naming the chain file), `loop.Relayer` (providers, chain and node
//! status as real views of the file) and a median provider serving
//! `loop.MedianContract` and `loop.ContractTransmitter` on one broker id.
//!
//! Relayer config: `{"chainFile": "/path/to/chain.jsonl"}` (JSON).

use std::sync::Arc;
use std::time::Duration;

use grpcio::{RpcContext, RpcStatusCode, UnarySink};
use protobuf::well_known_types::empty::Empty;
use protobuf::MessageField;
use serde::Deserialize;

use super::contract::Contract;
use crate::broker::Broker;
use crate::median::rounds::Transmitter;
use crate::proto::relayer::*;
use crate::proto::relayer_grpc;
use crate::rpc;
use crate::wire::ReportTimestamp;

/// The devchain's chain id.
pub const CHAIN_ID: &str = "devchain";
/// The account devchain transmissions come from.
pub const TRANSMITTER_ACCOUNT: &str = "devchain-transmitter";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RelayerConfig {
    chain_file: String,
}

/// Serves `loop.PluginRelayer` for a plugin whose broker is `broker`.
pub fn plugin_relayer(broker: Broker) -> grpcio::Service {
    relayer_grpc::create_plugin_relayer(PluginRelayerServer { broker })
}

#[derive(Clone)]
struct PluginRelayerServer {
    broker: Broker,
}

fn status(code: RpcStatusCode, e: impl std::fmt::Display) -> grpcio::RpcStatus {
    rpc::status(code, e.to_string())
}

impl relayer_grpc::PluginRelayer for PluginRelayerServer {
    fn new_relayer(
        &mut self,
        ctx: RpcContext,
        req: NewRelayerRequest,
        sink: UnarySink<NewRelayerReply>,
    ) {
        let broker = self.broker.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let cfg: RelayerConfig = serde_json::from_str(&req.config).map_err(|e| {
                status(
                    RpcStatusCode::INVALID_ARGUMENT,
                    format!("devchain relayer config: {e}; expected {{\"chainFile\": \"/path/chain.jsonl\"}}"),
                )
            })?;
            let contract = Contract::open(std::path::Path::new(&cfg.chain_file)).map_err(|e| {
                status(
                    RpcStatusCode::FAILED_PRECONDITION,
                    format!("{}: {e}", cfg.chain_file),
                )
            })?;
            let keystore: Option<Arc<dyn crate::keystore::Keystore>> = match req.keystoreID {
                0 => None,
                id => Some(Arc::new(crate::keystore::KeystoreClient::new(
                    broker
                        .dial(id, crate::broker::DEFAULT_DIAL_TIMEOUT)
                        .map_err(|e| {
                            status(
                                RpcStatusCode::UNAVAILABLE,
                                format!("keystore (broker id {id}): {e}"),
                            )
                        })?,
                    Duration::from_secs(1),
                ))),
            };
            let relayer = RelayerServer {
                broker: broker.clone(),
                contract: Arc::new(contract),
                keystore,
            };
            let id = broker.next_id();
            broker
                .serve(id, vec![relayer_grpc::create_relayer(relayer)])
                .map_err(|e| status(RpcStatusCode::UNAVAILABLE, e))?;
            Ok(NewRelayerReply {
                relayerID: id,
                ..Default::default()
            })
        });
    }
}

#[derive(Clone)]
struct RelayerServer {
    broker: Broker,
    contract: Arc<Contract>,
    keystore: Option<Arc<dyn crate::keystore::Keystore>>,
}

impl relayer_grpc::Relayer for RelayerServer {
    fn new_plugin_provider(
        &mut self,
        ctx: RpcContext,
        req: NewPluginProviderRequest,
        sink: UnarySink<NewPluginProviderReply>,
    ) {
        let (broker, contract, keystore) = (
            self.broker.clone(),
            self.contract.clone(),
            self.keystore.clone(),
        );
        rpc::respond_blocking(&ctx, sink, move || {
            let kind = req
                .relayArgs
                .as_ref()
                .map(|a| a.providerType.as_str())
                .unwrap_or("");
            if kind != "median" && !kind.is_empty() {
                return Err(status(
                    RpcStatusCode::INVALID_ARGUMENT,
                    format!("providerType {kind:?}: the devchain relayer provides \"median\""),
                ));
            }
            let id = broker.next_id();
            broker
                .serve(id, {
                    let mut services = super::provider::services(contract.clone());
                    services.push(relayer_grpc::create_contract_transmitter(
                        TransmitterServer(contract, keystore),
                    ));
                    services
                })
                .map_err(|e| status(RpcStatusCode::UNAVAILABLE, e))?;
            Ok(NewPluginProviderReply {
                pluginProviderID: id,
                ..Default::default()
            })
        });
    }

    fn get_chain_status(
        &mut self,
        ctx: RpcContext,
        _req: GetChainStatusRequest,
        sink: UnarySink<GetChainStatusReply>,
    ) {
        let c = &self.contract;
        let config = serde_json::json!({
            "height": c.latest_block_height(),
            "transmissions": c.transmissions().len(),
            "configDigest": c.latest_config().map(|(_, cfg)| cfg.digest),
        });
        rpc::respond(
            &ctx,
            sink,
            Ok(GetChainStatusReply {
                chain: MessageField::some(ChainStatus {
                    id: CHAIN_ID.into(),
                    enabled: true,
                    config: config.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
    }

    fn list_node_statuses(
        &mut self,
        ctx: RpcContext,
        _req: ListNodeStatusesRequest,
        sink: UnarySink<ListNodeStatusesReply>,
    ) {
        let node = NodeStatus {
            chainID: CHAIN_ID.into(),
            name: "chain-file".into(),
            config: serde_json::json!({"height": self.contract.latest_block_height()}).to_string(),
            state: "alive".into(),
            ..Default::default()
        };
        rpc::respond(
            &ctx,
            sink,
            Ok(ListNodeStatusesReply {
                nodes: vec![node],
                total: 1,
                ..Default::default()
            }),
        );
    }

    fn transact(&mut self, ctx: RpcContext, _req: TransactionRequest, sink: UnarySink<Empty>) {
        rpc::respond(
            &ctx,
            sink,
            Err(status(
                RpcStatusCode::FAILED_PRECONDITION,
                "the devchain has no accounts to transact from",
            )),
        );
    }
}

/// The median provider's transmitter; its account comes from the node's
/// keystore when the relayer was given one.
#[derive(Clone)]
struct TransmitterServer(Arc<Contract>, Option<Arc<dyn crate::keystore::Keystore>>);

impl relayer_grpc::ContractTransmitter for TransmitterServer {
    fn transmit(&mut self, ctx: RpcContext, req: TransmitRequest, sink: UnarySink<TransmitReply>) {
        let c = self.0.clone();
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
            c.transmit(&ts.config_digest, ts.epoch, ts.round, &req.report)
                .map_err(|e| status(RpcStatusCode::FAILED_PRECONDITION, e))?;
            Ok(TransmitReply::new())
        });
    }

    fn latest_config_digest_and_epoch(
        &mut self,
        ctx: RpcContext,
        _req: LatestConfigDigestAndEpochRequest,
        sink: UnarySink<LatestConfigDigestAndEpochReply>,
    ) {
        let digest = self
            .0
            .latest_config()
            .map(|(_, c)| crate::wire::unhex(&c.digest))
            .unwrap_or_default();
        let epoch = self.0.latest_transmission().map_or(0, |(_, l)| l.epoch);
        rpc::respond(
            &ctx,
            sink,
            Ok(LatestConfigDigestAndEpochReply {
                configDigest: digest,
                epoch,
                ..Default::default()
            }),
        );
    }

    fn from_account(
        &mut self,
        ctx: RpcContext,
        _req: FromAccountRequest,
        sink: UnarySink<FromAccountReply>,
    ) {
        let ks = self.1.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let account = match ks {
                Some(ks) => ks
                    .accounts()
                    .map_err(|e| status(RpcStatusCode::UNAVAILABLE, e))?
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| TRANSMITTER_ACCOUNT.into()),
                None => TRANSMITTER_ACCOUNT.into(),
            };
            Ok(FromAccountReply {
                Account: account,
                ..Default::default()
            })
        });
    }
}

/// The relayer's ContractTransmitter over gRPC, as a [`Transmitter`].
pub struct ContractTransmitterClient {
    name: String,
    client: relayer_grpc::ContractTransmitterClient,
    timeout: Duration,
}

impl ContractTransmitterClient {
    /// The transmitter on `channel`; each Transmit has `timeout`.
    pub fn new(
        name: &str,
        channel: grpcio::Channel,
        timeout: Duration,
    ) -> ContractTransmitterClient {
        ContractTransmitterClient {
            name: name.to_string(),
            client: relayer_grpc::ContractTransmitterClient::new(channel),
            timeout,
        }
    }
}

impl Transmitter for ContractTransmitterClient {
    fn transmit(&self, ts: &ReportTimestamp, report: &[u8]) -> Result<(), String> {
        const METHOD: &str = "/loop.ContractTransmitter/Transmit";
        let req = TransmitRequest {
            reportContext: MessageField::some(ReportContext {
                reportTimestamp: MessageField::some(ts.to_wire()),
                ..Default::default()
            }),
            report: report.to_vec(),
            ..Default::default()
        };
        let t0 = std::time::Instant::now();
        let r = self.client.transmit(&req, self.timeout);
        crate::metrics::client_observe(
            &self.name,
            METHOD,
            crate::metrics::code_of(&r),
            t0.elapsed(),
        );
        r.map(|_| ())
            .map_err(|e| crate::error::Error::rpc(&self.name, METHOD, &e).to_string())
    }
}
