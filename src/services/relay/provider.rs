//! The provider sub-services a relayer hands out: `ReportCodec`,
//! `OnchainConfigCodec`, `ContractConfigTracker` and `OffchainConfigDigester`.
//! One trait each; gRPC servers ([`report_codec_server`], ...) serve any
//! implementation and [`ProviderClient`] implements all four over a channel,
//! each call with its deadline. Implementations live with their relayers
//! (the devchain's: `crate::devchain::provider`).

use crate::goplugin::call::{Ctx, Sink};
use std::sync::Arc;
use std::time::Duration;

use grpcio::RpcStatusCode;
use protobuf::MessageField;

use crate::goplugin::rpc::{self, ready, Reply};
use crate::proto::provider as pb;
use crate::proto::provider_grpc as svc;
use crate::services::median::Bounds;
use crate::services::wire::{from_big, to_big};

/// One oracle's parsed observation, as the median plugin hands it to the
/// relayer's [`ReportCodec`] (`loop.ParsedAttributedObservation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedObservation {
    /// When it was observed (seconds since the epoch).
    pub timestamp: u32,
    /// The value.
    pub value: i128,
    /// The juels-per-fee-coin value.
    pub juels_per_fee_coin: i128,
    /// The gas price, in the chain's smallest unit (0 where the feed has
    /// no gas price source).
    pub gas_price_subunits: i128,
    /// Observing oracle.
    pub observer: u8,
}

/// Reports: build, read the median back, size bound.
pub trait ReportCodec: Send + Sync {
    /// A report from parsed observations.
    fn build_report(&self, obs: &[ParsedObservation]) -> Result<Vec<u8>, String>;
    /// The median in a report.
    fn median_from_report(&self, report: &[u8]) -> Result<i128, String>;
    /// The longest report for `n` oracles.
    fn max_report_length(&self, n: usize) -> Result<usize, String>;

    /// Whether every call is computed from memory in microseconds, without
    /// I/O, a call, or waiting for a lock held across either: then its gRPC
    /// server answers on the completion-queue thread that received the
    /// call, not on a pool thread. No by default.
    fn answers_at_once(&self) -> bool {
        false
    }

    /// [`ReportCodec::build_report`] as a future that never blocks the
    /// thread polling it: a client sends its call; by default, the answer
    /// when the codec [answers at once](ReportCodec::answers_at_once), else
    /// None (call the blocking method).
    fn build_report_async(&self, obs: &[ParsedObservation]) -> Option<Reply<Vec<u8>>> {
        self.answers_at_once()
            .then(|| ready(self.build_report(obs)))
    }

    /// [`ReportCodec::median_from_report`] as a future, as
    /// [`ReportCodec::build_report_async`].
    fn median_from_report_async(&self, report: &[u8]) -> Option<Reply<i128>> {
        self.answers_at_once()
            .then(|| ready(self.median_from_report(report)))
    }
}

/// The contract's bounds, encoded as the chain stores them.
pub trait OnchainConfigCodec: Send + Sync {
    /// Bounds to bytes.
    fn encode(&self, bounds: Bounds) -> Result<Vec<u8>, String>;
    /// Bytes to bounds.
    fn decode(&self, encoded: &[u8]) -> Result<Bounds, String>;
}

/// A contract's config as the OCR protocol sees it (`loop.ContractConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContractConfig {
    /// Its digest.
    pub config_digest: Vec<u8>,
    /// How many configs the contract has had, this one included.
    pub config_count: u64,
    /// The oracles' onchain signing identities.
    pub signers: Vec<Vec<u8>>,
    /// The oracles' transmit accounts.
    pub transmitters: Vec<String>,
    /// Faulty oracles tolerated.
    pub f: u8,
    /// Encoded by the chain's [`OnchainConfigCodec`].
    pub onchain_config: Vec<u8>,
    /// Version of `offchain_config`'s format.
    pub offchain_config_version: u64,
    /// The reporting plugin's offchain config.
    pub offchain_config: Vec<u8>,
}

impl ContractConfig {
    /// To the wire message.
    pub fn to_wire(&self) -> pb::ContractConfig {
        pb::ContractConfig {
            configDigest: self.config_digest.clone(),
            configCount: self.config_count,
            signers: self.signers.clone(),
            transmitters: self.transmitters.clone(),
            F: u32::from(self.f),
            onchainConfig: self.onchain_config.clone(),
            offchainConfigVersion: self.offchain_config_version,
            offchainConfig: self.offchain_config.clone(),
            ..Default::default()
        }
    }

    /// From the wire message; F must fit a uint8.
    pub fn from_wire(c: &pb::ContractConfig) -> Result<ContractConfig, String> {
        Ok(ContractConfig {
            config_digest: c.configDigest.clone(),
            config_count: c.configCount,
            signers: c.signers.clone(),
            transmitters: c.transmitters.clone(),
            f: u8::try_from(c.F).map_err(|_| format!("F {} is not a uint8", c.F))?,
            onchain_config: c.onchainConfig.clone(),
            offchain_config_version: c.offchainConfigVersion,
            offchain_config: c.offchainConfig.clone(),
        })
    }
}

/// The contract's config as the OCR protocol tracks it.
pub trait ConfigTracker: Send + Sync {
    /// `(block the config was set in, its digest)`; before any config,
    /// `(0, 32 zero bytes)` as the Go services answer.
    fn latest_config_details(&self) -> Result<(u64, Vec<u8>), String>;
    /// The config set in block `changed_in_block` (as returned by
    /// [`ConfigTracker::latest_config_details`]).
    fn latest_config(&self, changed_in_block: u64) -> Result<ContractConfig, String>;
    /// The chain's height.
    fn latest_block_height(&self) -> Result<u64, String>;
}

/// Config digests.
pub trait Digester: Send + Sync {
    /// The digest of `config` (its `config_count` included).
    fn config_digest(&self, config: &ContractConfig) -> Result<Vec<u8>, String>;
    /// The chain's digest prefix.
    fn config_digest_prefix(&self) -> Result<u16, String>;
}

fn failed(e: String) -> grpcio::RpcStatus {
    rpc::status(RpcStatusCode::INVALID_ARGUMENT, e)
}

/// Serves a report codec.
pub fn report_codec_server(c: Arc<dyn ReportCodec>) -> crate::goplugin::route::Offer {
    svc::offer_report_codec(Server(c))
}

/// Serves an onchain config codec.
pub fn onchain_codec_server(c: Arc<dyn OnchainConfigCodec>) -> crate::goplugin::route::Offer {
    svc::offer_onchain_config_codec(Server(c))
}

/// Serves a config tracker.
pub fn tracker_server(c: Arc<dyn ConfigTracker>) -> crate::goplugin::route::Offer {
    svc::offer_contract_config_tracker(Server(c))
}

/// Serves a digester.
pub fn digester_server(c: Arc<dyn Digester>) -> crate::goplugin::route::Offer {
    svc::offer_offchain_config_digester(Server(c))
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
        ctx: Ctx,
        req: pb::BuildReportRequest,
        sink: Sink<pb::BuildReportReply>,
    ) {
        let codec = self.0.clone();
        let at_hand = codec.answers_at_once();
        rpc::respond_at_hand_or_blocking(&ctx, sink, at_hand, move || {
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
                        gas_price_subunits: o
                            .gasPriceSubunits
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
        ctx: Ctx,
        req: pb::MedianFromReportRequest,
        sink: Sink<pb::MedianFromReportReply>,
    ) {
        let this = self.0.clone();
        let at_hand = this.answers_at_once();
        rpc::respond_at_hand_or_blocking(&ctx, sink, at_hand, move || {
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
        ctx: Ctx,
        req: pb::MaxReportLengthRequest,
        sink: Sink<pb::MaxReportLengthReply>,
    ) {
        let this = self.0.clone();
        let at_hand = this.answers_at_once();
        rpc::respond_at_hand_or_blocking(&ctx, sink, at_hand, move || {
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
    fn encode(&mut self, ctx: Ctx, req: pb::EncodeRequest, sink: Sink<pb::EncodeReply>) {
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

    fn decode(&mut self, ctx: Ctx, req: pb::DecodeRequest, sink: Sink<pb::DecodeReply>) {
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
        ctx: Ctx,
        _req: pb::LatestConfigDetailsRequest,
        sink: Sink<pb::LatestConfigDetailsReply>,
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

    fn latest_config(
        &mut self,
        ctx: Ctx,
        req: pb::LatestConfigRequest,
        sink: Sink<pb::LatestConfigReply>,
    ) {
        let this = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            this.latest_config(req.changedInBlock)
                .map(|c| pb::LatestConfigReply {
                    contractConfig: MessageField::some(c.to_wire()),
                    ..Default::default()
                })
                .map_err(|e| rpc::status(RpcStatusCode::FAILED_PRECONDITION, e))
        });
    }

    fn latest_block_height(
        &mut self,
        ctx: Ctx,
        _req: pb::LatestBlockHeightRequest,
        sink: Sink<pb::LatestBlockHeightReply>,
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
        ctx: Ctx,
        req: pb::ConfigDigestRequest,
        sink: Sink<pb::ConfigDigestReply>,
    ) {
        let this = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            req.contractConfig
                .as_ref()
                .ok_or_else(|| "no contractConfig".to_string())
                .and_then(ContractConfig::from_wire)
                .and_then(|c| this.config_digest(&c))
                .map(|d| pb::ConfigDigestReply {
                    configDigest: d,
                    ..Default::default()
                })
                .map_err(failed)
        });
    }

    fn config_digest_prefix(
        &mut self,
        ctx: Ctx,
        _req: pb::ConfigDigestPrefixRequest,
        sink: Sink<pb::ConfigDigestPrefixReply>,
    ) {
        let this = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            this.config_digest_prefix()
                .map(|p| pb::ConfigDigestPrefixReply {
                    configDigestPrefix: u32::from(p),
                    ..Default::default()
                })
                .map_err(|e| rpc::status(RpcStatusCode::UNAVAILABLE, e))
        });
    }
}

/// The provider's codecs and views over gRPC, each call with `timeout`.
#[derive(Clone)]
pub struct ProviderClient {
    channel: crate::goplugin::route::Conn,
    timeout: Duration,
    /// Who serves it, in errors and the `loopp_rpc_*` metrics.
    name: String,
    _remote: Option<Arc<crate::services::resource::Remote>>,
}

impl ProviderClient {
    /// The provider served on `channel`, named `provider`.
    pub fn new(channel: crate::goplugin::route::Conn, timeout: Duration) -> ProviderClient {
        ProviderClient {
            channel,
            timeout,
            name: "provider".into(),
            _remote: None,
        }
    }

    /// Names who serves it (the relayer plugin) in errors and metrics.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// One call of `method` on the channel, counted in the metrics.
    fn call<T>(
        &self,
        method: &'static str,
        f: impl FnOnce(crate::goplugin::route::Conn) -> grpcio::Result<T>,
    ) -> Result<T, String> {
        crate::goplugin::rpc::observed(&self.name, method, || f(self.channel.clone()))
    }

    /// Keeps the remote object alive while this client lives (see
    /// [`crate::services::resource::Remote`]).
    pub fn holding(mut self, remote: std::sync::Arc<crate::services::resource::Remote>) -> Self {
        self._remote = Some(remote);
        self
    }
}

const BUILD_REPORT: &str = "/loop.ReportCodec/BuildReport";
const MEDIAN_FROM_REPORT: &str = "/loop.ReportCodec/MedianFromReport";

fn build_request(obs: &[ParsedObservation]) -> pb::BuildReportRequest {
    pb::BuildReportRequest {
        observations: obs
            .iter()
            .map(|o| pb::ParsedAttributedObservation {
                timestamp: o.timestamp,
                value: MessageField::some(to_big(o.value)),
                julesPerFeeCoin: MessageField::some(to_big(o.juels_per_fee_coin)),
                gasPriceSubunits: MessageField::some(to_big(o.gas_price_subunits)),
                observer: u32::from(o.observer),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn median_request(report: &[u8]) -> pb::MedianFromReportRequest {
    pb::MedianFromReportRequest {
        report: report.to_vec(),
        ..Default::default()
    }
}

fn median_of(reply: &pb::MedianFromReportReply) -> Result<i128, String> {
    from_big(reply.median.as_ref().ok_or("no median")?)
}

impl ReportCodec for ProviderClient {
    fn build_report(&self, obs: &[ParsedObservation]) -> Result<Vec<u8>, String> {
        let req = build_request(obs);
        self.call(BUILD_REPORT, |c| {
            svc::ReportCodecClient::new(c).build_report(&req, self.timeout)
        })
        .map(|r| r.report)
    }

    fn median_from_report(&self, report: &[u8]) -> Result<i128, String> {
        let req = median_request(report);
        median_of(&self.call(MEDIAN_FROM_REPORT, |c| {
            svc::ReportCodecClient::new(c).median_from_report(&req, self.timeout)
        })?)
    }

    fn build_report_async(&self, obs: &[ParsedObservation]) -> Option<Reply<Vec<u8>>> {
        let reply = rpc::observed_async(&self.name, BUILD_REPORT, || {
            svc::ReportCodecClient::new(self.channel.clone())
                .build_report_async(&build_request(obs), self.timeout)
        });
        Some(Box::pin(async move { Ok(reply.await?.report) }))
    }

    fn median_from_report_async(&self, report: &[u8]) -> Option<Reply<i128>> {
        let reply = rpc::observed_async(&self.name, MEDIAN_FROM_REPORT, || {
            svc::ReportCodecClient::new(self.channel.clone())
                .median_from_report_async(&median_request(report), self.timeout)
        });
        Some(Box::pin(async move { median_of(&reply.await?) }))
    }

    fn max_report_length(&self, n: usize) -> Result<usize, String> {
        let req = pb::MaxReportLengthRequest {
            n: n as i64,
            ..Default::default()
        };
        self.call("/loop.ReportCodec/MaxReportLength", |c| {
            svc::ReportCodecClient::new(c).max_report_length(&req, self.timeout)
        })
        .map(|r| r.max.max(0) as usize)
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
        self.call("/loop.OnchainConfigCodec/Encode", |c| {
            svc::OnchainConfigCodecClient::new(c).encode(&req, self.timeout)
        })
        .map(|r| r.encoded)
    }

    fn decode(&self, encoded: &[u8]) -> Result<Bounds, String> {
        let req = pb::DecodeRequest {
            encoded: encoded.to_vec(),
            ..Default::default()
        };
        let r = self.call("/loop.OnchainConfigCodec/Decode", |c| {
            svc::OnchainConfigCodecClient::new(c).decode(&req, self.timeout)
        })?;
        let c = r.onchainConfig.as_ref().ok_or("no onchainConfig")?;
        Ok(Bounds {
            min: from_big(c.min.as_ref().ok_or("no min")?)?,
            max: from_big(c.max.as_ref().ok_or("no max")?)?,
        })
    }
}

impl ConfigTracker for ProviderClient {
    fn latest_config_details(&self) -> Result<(u64, Vec<u8>), String> {
        self.call("/loop.ContractConfigTracker/LatestConfigDetails", |c| {
            svc::ContractConfigTrackerClient::new(c)
                .latest_config_details(&pb::LatestConfigDetailsRequest::new(), self.timeout)
        })
        .map(|r| (r.changedInBlock, r.configDigest))
    }

    fn latest_config(&self, changed_in_block: u64) -> Result<ContractConfig, String> {
        let req = pb::LatestConfigRequest {
            changedInBlock: changed_in_block,
            ..Default::default()
        };
        let r = self.call("/loop.ContractConfigTracker/LatestConfig", |c| {
            svc::ContractConfigTrackerClient::new(c).latest_config(&req, self.timeout)
        })?;
        ContractConfig::from_wire(r.contractConfig.as_ref().ok_or("no contractConfig")?)
    }

    fn latest_block_height(&self) -> Result<u64, String> {
        self.call("/loop.ContractConfigTracker/LatestBlockHeight", |c| {
            svc::ContractConfigTrackerClient::new(c)
                .latest_block_height(&pb::LatestBlockHeightRequest::new(), self.timeout)
        })
        .map(|r| r.blockHeight)
    }
}

impl Digester for ProviderClient {
    fn config_digest(&self, config: &ContractConfig) -> Result<Vec<u8>, String> {
        let req = pb::ConfigDigestRequest {
            contractConfig: MessageField::some(config.to_wire()),
            ..Default::default()
        };
        self.call("/loop.OffchainConfigDigester/ConfigDigest", |c| {
            svc::OffchainConfigDigesterClient::new(c).config_digest(&req, self.timeout)
        })
        .map(|r| r.configDigest)
    }

    fn config_digest_prefix(&self) -> Result<u16, String> {
        let r = self.call("/loop.OffchainConfigDigester/ConfigDigestPrefix", |c| {
            svc::OffchainConfigDigesterClient::new(c)
                .config_digest_prefix(&pb::ConfigDigestPrefixRequest::new(), self.timeout)
        })?;
        u16::try_from(r.configDigestPrefix)
            .map_err(|_| format!("digest prefix {} is not a uint16", r.configDigestPrefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Keeps the observations it was asked to build a report from.
    struct Recording(Mutex<Vec<ParsedObservation>>);

    impl ReportCodec for Recording {
        fn build_report(&self, obs: &[ParsedObservation]) -> Result<Vec<u8>, String> {
            self.0.lock().unwrap().extend_from_slice(obs);
            Ok(b"report".to_vec())
        }

        fn median_from_report(&self, _report: &[u8]) -> Result<i128, String> {
            Ok(0)
        }

        fn max_report_length(&self, _n: usize) -> Result<usize, String> {
            Ok(6)
        }
    }

    /// Every field of `loop.ParsedAttributedObservation`, gasPriceSubunits
    /// (field 5) included, reaches the relayer's codec as sent.
    #[test]
    fn parsed_observations_cross_the_wire_whole() {
        let codec = Arc::new(Recording(Mutex::new(Vec::new())));
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
        broker
            .serve(1, vec![report_codec_server(codec.clone())])
            .unwrap();
        let remote = ProviderClient::new(broker.local_channel(1), Duration::from_secs(2));
        let sent = vec![
            ParsedObservation {
                timestamp: 1_700_000_000,
                value: -(1 << 100),
                juels_per_fee_coin: 1 << 99,
                gas_price_subunits: 123_456_789_000,
                observer: 255,
            },
            ParsedObservation {
                timestamp: 0,
                value: 0,
                juels_per_fee_coin: 0,
                gas_price_subunits: -(1 << 90),
                observer: 0,
            },
        ];
        assert_eq!(remote.build_report(&sent), Ok(b"report".to_vec()));
        assert_eq!(*codec.0.lock().unwrap(), sent);
        broker.close();
    }
}
