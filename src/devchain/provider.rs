//! The median provider's other sub-services: `ReportCodec`,
//! `OnchainConfigCodec`, `ContractConfigTracker` and `OffchainConfigDigester`.
//! One trait each; the devchain implements them in-process
//! ([`DevchainCodec`], [`Contract`]); gRPC servers and clients carry them
//! across processes with each call's deadline.

use std::sync::Arc;
use std::time::Duration;

use grpcio::{RpcContext, RpcStatusCode, UnarySink};
use protobuf::MessageField;

use super::codec::{self, ParsedObservation};
use super::contract::{config_digest, ConfigInput, Contract, DIGEST_PREFIX};
use crate::median::math::Bounds;
use crate::proto::provider as pb;
use crate::proto::provider_grpc as svc;
use crate::rpc;
use crate::wire::{from_big, to_big};

/// Reports: build, read the median back, size bound.
pub trait ReportCodec: Send + Sync {
    /// A report from parsed observations.
    fn build_report(&self, obs: &[ParsedObservation]) -> Result<Vec<u8>, String>;
    /// The median in a report.
    fn median_from_report(&self, report: &[u8]) -> Result<i128, String>;
    /// The longest report for `n` oracles.
    fn max_report_length(&self, n: usize) -> Result<usize, String>;
}

/// The contract's bounds, encoded as the chain stores them.
pub trait OnchainConfigCodec: Send + Sync {
    /// Bounds to bytes.
    fn encode(&self, bounds: Bounds) -> Result<Vec<u8>, String>;
    /// Bytes to bounds.
    fn decode(&self, encoded: &[u8]) -> Result<Bounds, String>;
}

/// The contract's config as the OCR protocol tracks it.
pub trait ConfigTracker: Send + Sync {
    /// `(block the config was set in, its digest)`.
    fn latest_config_details(&self) -> Result<(u64, Vec<u8>), String>;
    /// The chain's height.
    fn latest_block_height(&self) -> Result<u64, String>;
}

/// Config digests.
pub trait Digester: Send + Sync {
    /// The digest of `config` as the `count`-th config.
    fn config_digest(&self, config: &ConfigInput, count: u64) -> Result<Vec<u8>, String>;
    /// The chain's digest prefix.
    fn prefix(&self) -> u16;
}

/// The devchain's codecs (see [`codec`]); onchain config is
/// `{"min": "<i128>", "max": "<i128>"}`.
pub struct DevchainCodec;

impl ReportCodec for DevchainCodec {
    fn build_report(&self, obs: &[ParsedObservation]) -> Result<Vec<u8>, String> {
        codec::build_report(obs)
    }

    fn median_from_report(&self, report: &[u8]) -> Result<i128, String> {
        codec::median_from_report(report)
    }

    fn max_report_length(&self, n: usize) -> Result<usize, String> {
        Ok(codec::max_report_length(n))
    }
}

impl OnchainConfigCodec for DevchainCodec {
    fn encode(&self, b: Bounds) -> Result<Vec<u8>, String> {
        serde_json::to_vec(&serde_json::json!({"min": b.min.to_string(), "max": b.max.to_string()}))
            .map_err(|e| e.to_string())
    }

    fn decode(&self, encoded: &[u8]) -> Result<Bounds, String> {
        let v: serde_json::Value =
            serde_json::from_slice(encoded).map_err(|e| format!("onchain config: {e}"))?;
        let num = |k: &str| {
            v[k].as_str()
                .and_then(|s| s.parse::<i128>().ok())
                .ok_or_else(|| format!("onchain config: {k} is not an integer string"))
        };
        Ok(Bounds {
            min: num("min")?,
            max: num("max")?,
        })
    }
}

impl ConfigTracker for Contract {
    fn latest_config_details(&self) -> Result<(u64, Vec<u8>), String> {
        Ok(self
            .latest_config()
            .map(|(block, c)| (block, crate::wire::unhex(&c.digest)))
            .unwrap_or((0, vec![0; 32])))
    }

    fn latest_block_height(&self) -> Result<u64, String> {
        Ok(Contract::latest_block_height(self))
    }
}

impl Digester for Contract {
    fn config_digest(&self, config: &ConfigInput, count: u64) -> Result<Vec<u8>, String> {
        Ok(config_digest(config, count).to_vec())
    }

    fn prefix(&self) -> u16 {
        u16::from_be_bytes(DIGEST_PREFIX)
    }
}

fn failed(e: String) -> grpcio::RpcStatus {
    rpc::status(RpcStatusCode::INVALID_ARGUMENT, e)
}

/// Serves a report codec.
pub fn report_codec_server(c: Arc<dyn ReportCodec>) -> grpcio::Service {
    svc::create_report_codec(Server(c))
}

/// Serves an onchain config codec.
pub fn onchain_codec_server(c: Arc<dyn OnchainConfigCodec>) -> grpcio::Service {
    svc::create_onchain_config_codec(Server(c))
}

/// Serves a config tracker.
pub fn tracker_server(c: Arc<dyn ConfigTracker>) -> grpcio::Service {
    svc::create_contract_config_tracker(Server(c))
}

/// Serves a digester.
pub fn digester_server(c: Arc<dyn Digester>) -> grpcio::Service {
    svc::create_offchain_config_digester(Server(c))
}

struct Server<T: ?Sized>(Arc<T>);

// By hand: derive(Clone) would require T: Clone, which a trait object is not.
impl<T: ?Sized> Clone for Server<T> {
    fn clone(&self) -> Self {
        Server(self.0.clone())
    }
}

impl svc::ReportCodec for Server<dyn ReportCodec> {
    fn build_report(
        &mut self,
        ctx: RpcContext,
        req: pb::BuildReportRequest,
        sink: UnarySink<pb::BuildReportReply>,
    ) {
        let codec = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let parse = || -> Result<Vec<ParsedObservation>, String> {
                let mut obs = Vec::new();
                for o in &req.observations {
                    obs.push(ParsedObservation {
                        timestamp: o.timestamp,
                        value: from_big(o.value.as_ref().ok_or("observation without value")?)?,
                        juels_per_fee_coin: o
                            .julesPerFeeCoin
                            .as_ref()
                            .map(from_big)
                            .transpose()?
                            .unwrap_or(0),
                        observer: u8::try_from(o.observer)
                            .map_err(|_| format!("observer {} is not a uint8", o.observer))?,
                    });
                }
                Ok(obs)
            };
            let obs = parse().map_err(failed)?;
            codec
                .build_report(&obs)
                .map(|report| pb::BuildReportReply {
                    report,
                    ..Default::default()
                })
                .map_err(failed)
        });
    }

    fn median_from_report(
        &mut self,
        ctx: RpcContext,
        req: pb::MedianFromReportRequest,
        sink: UnarySink<pb::MedianFromReportReply>,
    ) {
        let this = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            this.median_from_report(&req.report)
                .map(|m| pb::MedianFromReportReply {
                    median: MessageField::some(to_big(m)),
                    ..Default::default()
                })
                .map_err(failed)
        });
    }

    fn max_report_length(
        &mut self,
        ctx: RpcContext,
        req: pb::MaxReportLengthRequest,
        sink: UnarySink<pb::MaxReportLengthReply>,
    ) {
        let this = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            usize::try_from(req.n)
                .map_err(|_| format!("n = {} is negative", req.n))
                .and_then(|n| this.max_report_length(n))
                .map(|max| pb::MaxReportLengthReply {
                    max: max as i64,
                    ..Default::default()
                })
                .map_err(failed)
        });
    }
}

impl svc::OnchainConfigCodec for Server<dyn OnchainConfigCodec> {
    fn encode(
        &mut self,
        ctx: RpcContext,
        req: pb::EncodeRequest,
        sink: UnarySink<pb::EncodeReply>,
    ) {
        let this = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            (|| {
                let c = req.onchainConfig.as_ref().ok_or("no onchainConfig")?;
                let b = Bounds {
                    min: from_big(c.min.as_ref().ok_or("no min")?)?,
                    max: from_big(c.max.as_ref().ok_or("no max")?)?,
                };
                this.encode(b)
            })()
            .map(|encoded| pb::EncodeReply {
                encoded,
                ..Default::default()
            })
            .map_err(failed)
        });
    }

    fn decode(
        &mut self,
        ctx: RpcContext,
        req: pb::DecodeRequest,
        sink: UnarySink<pb::DecodeReply>,
    ) {
        let this = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            this.decode(&req.encoded)
                .map(|b| pb::DecodeReply {
                    onchainConfig: MessageField::some(pb::OnchainConfig {
                        min: MessageField::some(to_big(b.min)),
                        max: MessageField::some(to_big(b.max)),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .map_err(failed)
        });
    }
}

impl svc::ContractConfigTracker for Server<dyn ConfigTracker> {
    fn latest_config_details(
        &mut self,
        ctx: RpcContext,
        _req: pb::LatestConfigDetailsRequest,
        sink: UnarySink<pb::LatestConfigDetailsReply>,
    ) {
        let this = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            this.latest_config_details()
                .map(|(block, digest)| pb::LatestConfigDetailsReply {
                    changedInBlock: block,
                    configDigest: digest,
                    ..Default::default()
                })
                .map_err(failed)
        });
    }

    fn latest_block_height(
        &mut self,
        ctx: RpcContext,
        _req: pb::LatestBlockHeightRequest,
        sink: UnarySink<pb::LatestBlockHeightReply>,
    ) {
        let this = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            this.latest_block_height()
                .map(|h| pb::LatestBlockHeightReply {
                    blockHeight: h,
                    ..Default::default()
                })
                .map_err(failed)
        });
    }
}

impl svc::OffchainConfigDigester for Server<dyn Digester> {
    fn config_digest(
        &mut self,
        ctx: RpcContext,
        req: pb::ConfigDigestRequest,
        sink: UnarySink<pb::ConfigDigestReply>,
    ) {
        let this = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            (|| {
                let c = req.contractConfig.as_ref().ok_or("no contractConfig")?;
                let bounds = DevchainCodec.decode(&c.onchainConfig)?;
                let input = ConfigInput {
                    signers: c
                        .signers
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect(),
                    transmitters: c.transmitters.clone(),
                    f: u8::try_from(c.F).map_err(|_| format!("F {} is not a uint8", c.F))?,
                    min_answer: bounds.min,
                    max_answer: bounds.max,
                };
                this.config_digest(&input, c.configCount)
            })()
            .map(|d| pb::ConfigDigestReply {
                configDigest: d,
                ..Default::default()
            })
            .map_err(failed)
        });
    }

    fn config_digest_prefix(
        &mut self,
        ctx: RpcContext,
        _req: pb::ConfigDigestPrefixRequest,
        sink: UnarySink<pb::ConfigDigestPrefixReply>,
    ) {
        let this = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            Ok(pb::ConfigDigestPrefixReply {
                configDigestPrefix: u32::from(this.prefix()),
                ..Default::default()
            })
        });
    }
}

/// The provider's codecs and views over gRPC, each call with `timeout`.
#[derive(Clone)]
pub struct ProviderClient {
    channel: grpcio::Channel,
    timeout: Duration,
}

impl ProviderClient {
    /// The provider served on `channel`.
    pub fn new(channel: grpcio::Channel, timeout: Duration) -> ProviderClient {
        ProviderClient { channel, timeout }
    }
}

fn rpc_err(what: &str, e: grpcio::Error) -> String {
    format!("{what}: {}", crate::error::rpc_status_text(&e))
}

impl ReportCodec for ProviderClient {
    fn build_report(&self, obs: &[ParsedObservation]) -> Result<Vec<u8>, String> {
        let req = pb::BuildReportRequest {
            observations: obs
                .iter()
                .map(|o| pb::ParsedAttributedObservation {
                    timestamp: o.timestamp,
                    value: MessageField::some(to_big(o.value)),
                    julesPerFeeCoin: MessageField::some(to_big(o.juels_per_fee_coin)),
                    observer: u32::from(o.observer),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        svc::ReportCodecClient::new(self.channel.clone())
            .build_report(&req, self.timeout)
            .map(|r| r.report)
            .map_err(|e| rpc_err("ReportCodec/BuildReport", e))
    }

    fn median_from_report(&self, report: &[u8]) -> Result<i128, String> {
        let req = pb::MedianFromReportRequest {
            report: report.to_vec(),
            ..Default::default()
        };
        let r = svc::ReportCodecClient::new(self.channel.clone())
            .median_from_report(&req, self.timeout)
            .map_err(|e| rpc_err("ReportCodec/MedianFromReport", e))?;
        from_big(r.median.as_ref().ok_or("no median")?)
    }

    fn max_report_length(&self, n: usize) -> Result<usize, String> {
        let req = pb::MaxReportLengthRequest {
            n: n as i64,
            ..Default::default()
        };
        svc::ReportCodecClient::new(self.channel.clone())
            .max_report_length(&req, self.timeout)
            .map(|r| r.max.max(0) as usize)
            .map_err(|e| rpc_err("ReportCodec/MaxReportLength", e))
    }
}

impl OnchainConfigCodec for ProviderClient {
    fn encode(&self, b: Bounds) -> Result<Vec<u8>, String> {
        let req = pb::EncodeRequest {
            onchainConfig: MessageField::some(pb::OnchainConfig {
                min: MessageField::some(to_big(b.min)),
                max: MessageField::some(to_big(b.max)),
                ..Default::default()
            }),
            ..Default::default()
        };
        svc::OnchainConfigCodecClient::new(self.channel.clone())
            .encode(&req, self.timeout)
            .map(|r| r.encoded)
            .map_err(|e| rpc_err("OnchainConfigCodec/Encode", e))
    }

    fn decode(&self, encoded: &[u8]) -> Result<Bounds, String> {
        let req = pb::DecodeRequest {
            encoded: encoded.to_vec(),
            ..Default::default()
        };
        let r = svc::OnchainConfigCodecClient::new(self.channel.clone())
            .decode(&req, self.timeout)
            .map_err(|e| rpc_err("OnchainConfigCodec/Decode", e))?;
        let c = r.onchainConfig.as_ref().ok_or("no onchainConfig")?;
        Ok(Bounds {
            min: from_big(c.min.as_ref().ok_or("no min")?)?,
            max: from_big(c.max.as_ref().ok_or("no max")?)?,
        })
    }
}

impl ConfigTracker for ProviderClient {
    fn latest_config_details(&self) -> Result<(u64, Vec<u8>), String> {
        svc::ContractConfigTrackerClient::new(self.channel.clone())
            .latest_config_details(&pb::LatestConfigDetailsRequest::new(), self.timeout)
            .map(|r| (r.changedInBlock, r.configDigest))
            .map_err(|e| rpc_err("ContractConfigTracker/LatestConfigDetails", e))
    }

    fn latest_block_height(&self) -> Result<u64, String> {
        svc::ContractConfigTrackerClient::new(self.channel.clone())
            .latest_block_height(&pb::LatestBlockHeightRequest::new(), self.timeout)
            .map(|r| r.blockHeight)
            .map_err(|e| rpc_err("ContractConfigTracker/LatestBlockHeight", e))
    }
}

/// Every provider service for a devchain contract, to serve on one broker id.
pub fn services(contract: Arc<Contract>) -> Vec<grpcio::Service> {
    vec![
        crate::median::contract::server(contract.clone()),
        report_codec_server(Arc::new(DevchainCodec)),
        onchain_codec_server(Arc::new(DevchainCodec)),
        tracker_server(contract.clone()),
        digester_server(contract),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_services_over_a_socket_match_in_process() {
        let dir = std::env::temp_dir().join(format!("loopp-provider-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let contract = Arc::new(Contract::open(&dir.join("chain.jsonl")).unwrap());
        let input = ConfigInput {
            signers: vec!["s".into()],
            transmitters: vec!["t".into()],
            f: 1,
            min_answer: -7,
            max_answer: i128::MAX,
        };
        let digest = contract.set_config(&input).unwrap();
        let broker = crate::broker::Broker::new(crate::sockdir::SocketDir::create().unwrap());
        broker.serve(1, services(contract.clone())).unwrap();
        let ch = broker.local_channel(1);
        let remote = ProviderClient::new(ch, Duration::from_secs(2));
        let obs = [ParsedObservation {
            timestamp: 9,
            value: 1 << 90,
            juels_per_fee_coin: -3,
            observer: 2,
        }];
        let report = remote.build_report(&obs).unwrap();
        assert_eq!(report, DevchainCodec.build_report(&obs).unwrap());
        assert_eq!(remote.median_from_report(&report), Ok(1 << 90));
        assert_eq!(
            remote.max_report_length(4),
            DevchainCodec.max_report_length(4)
        );
        let bounds = Bounds {
            min: -7,
            max: i128::MAX,
        };
        let enc = remote.encode(bounds).unwrap();
        assert_eq!(remote.decode(&enc), Ok(bounds));
        assert_eq!(remote.latest_config_details(), Ok((1, digest.to_vec())));
        assert_eq!(remote.latest_block_height(), Ok(1));
        assert!(remote
            .decode(b"junk")
            .unwrap_err()
            .contains("onchain config"));
        broker.close();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
