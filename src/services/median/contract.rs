//! `loop.MedianContract` over gRPC: the median plugin's view of the
//! contract, served by the relayer's provider. Before the first transmission
//! the Go services answer zero values; here that is `None`, both ways.

use crate::goplugin::call::{Ctx, Sink};
use std::sync::Arc;
use std::time::Duration;

use grpcio::RpcStatusCode;
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::MessageField;

use super::plugin::MedianContract;
use super::plugin::RoundRequested;
use super::Latest;
use crate::goplugin::rpc::{self, Reply};
use crate::proto::median::{
    LatestRoundRequestedReply, LatestRoundRequestedRequest, LatestTransmissionDetailsReply,
    LatestTransmissionDetailsRequest,
};
use crate::proto::median_grpc;

/// Serves `contract` as `loop.MedianContract`.
pub fn server(contract: Arc<dyn MedianContract>) -> crate::goplugin::route::Offer {
    median_grpc::offer_median_contract(Server(contract))
}

#[derive(Clone)]
struct Server(Arc<dyn MedianContract>);

impl median_grpc::MedianContract for Server {
    fn latest_transmission_details(
        &mut self,
        ctx: Ctx,
        _req: LatestTransmissionDetailsRequest,
        sink: Sink<LatestTransmissionDetailsReply>,
    ) {
        let c = self.0.clone();
        let at_hand = c.answers_at_once();
        rpc::respond_at_hand_or_blocking(&ctx, sink, at_hand, move || {
            let latest = c
                .latest_transmission_details()
                .map_err(|e| rpc::status(RpcStatusCode::UNAVAILABLE, e))?;
            Ok(match latest {
                // What libocr's contracts answer before the first
                // transmission, and what Go's client accepts: a 32-byte
                // zero digest and zero values, never absent fields.
                None => LatestTransmissionDetailsReply {
                    configDigest: vec![0; 32],
                    latestAnswer: MessageField::some(crate::services::wire::to_big(0)),
                    latestTimestamp: MessageField::some(Timestamp::default()),
                    ..Default::default()
                },
                Some((digest, l)) => LatestTransmissionDetailsReply {
                    configDigest: digest,
                    epoch: l.epoch,
                    round: u32::from(l.round),
                    latestAnswer: MessageField::some(crate::services::wire::to_big(l.answer)),
                    latestTimestamp: MessageField::some(Timestamp {
                        seconds: i64::try_from(l.timestamp).unwrap_or(i64::MAX),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            })
        });
    }

    fn latest_round_requested(
        &mut self,
        ctx: Ctx,
        req: LatestRoundRequestedRequest,
        sink: Sink<LatestRoundRequestedReply>,
    ) {
        let c = self.0.clone();
        let at_hand = c.answers_at_once();
        rpc::respond_at_hand_or_blocking(&ctx, sink, at_hand, move || {
            let lookback = Duration::from_nanos(u64::try_from(req.lookback).map_err(|_| {
                rpc::status(
                    RpcStatusCode::INVALID_ARGUMENT,
                    format!("lookback {} ns is negative", req.lookback),
                )
            })?);
            let r = c
                .latest_round_requested(lookback)
                .map_err(|e| rpc::status(RpcStatusCode::UNAVAILABLE, e))?;
            Ok(match r {
                None => LatestRoundRequestedReply {
                    configDigest: vec![0; 32],
                    ..Default::default()
                },
                Some(r) => LatestRoundRequestedReply {
                    configDigest: r.config_digest,
                    epoch: r.epoch,
                    round: u32::from(r.round),
                    ..Default::default()
                },
            })
        });
    }
}

/// A [`MedianContract`] over gRPC, each call with `timeout`.
pub struct MedianContractClient {
    name: String,
    client: median_grpc::MedianContractClient,
    timeout: Duration,
    _remote: Option<Arc<crate::services::resource::Remote>>,
}

impl MedianContractClient {
    /// The contract view served on `channel`.
    pub fn new(
        name: &str,
        channel: crate::goplugin::route::Conn,
        timeout: Duration,
    ) -> MedianContractClient {
        MedianContractClient {
            name: name.to_string(),
            client: median_grpc::MedianContractClient::new(channel),
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

const DETAILS: &str = "/loop.MedianContract/LatestTransmissionDetails";
const REQUESTED: &str = "/loop.MedianContract/LatestRoundRequested";

/// The latest transmission in a reply: None when its digest is zero (no
/// config yet).
fn details_of(reply: LatestTransmissionDetailsReply) -> Result<Option<(Vec<u8>, Latest)>, String> {
    if reply.configDigest.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    let answer = match reply.latestAnswer.as_ref() {
        Some(b) => crate::services::wire::from_big(b)?,
        None => 0,
    };
    Ok(Some((
        reply.configDigest,
        Latest {
            epoch: reply.epoch,
            round: u8::try_from(reply.round)
                .map_err(|_| format!("round {} is not a uint8", reply.round))?,
            answer,
            timestamp: reply
                .latestTimestamp
                .as_ref()
                .map_or(0, |t| u64::try_from(t.seconds).unwrap_or(0)),
        },
    )))
}

fn requested_request(lookback: Duration) -> LatestRoundRequestedRequest {
    LatestRoundRequestedRequest {
        lookback: i64::try_from(lookback.as_nanos()).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

/// The requested round in a reply: None when its digest is zero.
fn requested_of(reply: LatestRoundRequestedReply) -> Result<Option<RoundRequested>, String> {
    if reply.configDigest.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    Ok(Some(RoundRequested {
        config_digest: reply.configDigest,
        epoch: reply.epoch,
        round: u8::try_from(reply.round)
            .map_err(|_| format!("round {} is not a uint8", reply.round))?,
    }))
}

impl MedianContract for MedianContractClient {
    fn latest_transmission_details(&self) -> Result<Option<(Vec<u8>, Latest)>, String> {
        details_of(rpc::observed(&self.name, DETAILS, || {
            self.client
                .latest_transmission_details(&LatestTransmissionDetailsRequest::new(), self.timeout)
        })?)
    }

    fn latest_round_requested(&self, lookback: Duration) -> Result<Option<RoundRequested>, String> {
        requested_of(rpc::observed(&self.name, REQUESTED, || {
            self.client
                .latest_round_requested(&requested_request(lookback), self.timeout)
        })?)
    }

    fn latest_transmission_details_async(&self) -> Option<Reply<super::plugin::Details>> {
        let reply = rpc::observed_async(&self.name, DETAILS, || {
            self.client.latest_transmission_details_async(
                &LatestTransmissionDetailsRequest::new(),
                self.timeout,
            )
        });
        Some(Box::pin(async move { details_of(reply.await?) }))
    }

    fn latest_round_requested_async(
        &self,
        lookback: Duration,
    ) -> Option<Reply<Option<RoundRequested>>> {
        let reply = rpc::observed_async(&self.name, REQUESTED, || {
            self.client
                .latest_round_requested_async(&requested_request(lookback), self.timeout)
        });
        Some(Box::pin(async move { requested_of(reply.await?) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devchain::codec;

    #[test]
    fn the_contract_view_crosses_a_socket_unchanged() {
        let dir = crate::testutil::fresh_dir("median-contract");
        let (c, digest) = crate::testutil::configured_contract(&dir, i128::MIN, i128::MAX);
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
        broker.serve(1, vec![server(c.clone())]).unwrap();
        let ch = broker.local_channel(1);
        let remote = MedianContractClient::new("devchain", ch, Duration::from_secs(2));
        assert_eq!(
            remote.latest_transmission_details(),
            Ok(Some((
                digest.to_vec(),
                Latest {
                    epoch: 0,
                    round: 0,
                    answer: 0,
                    timestamp: 0
                }
            ))),
            "nothing transmitted yet: the config's digest, epoch and round 0"
        );
        // A contract with no config at all answers zero values, as libocr's
        // contracts do and Go's client requires (a 32-byte digest, an
        // answer), and the client reads that as none.
        let bare =
            Arc::new(crate::devchain::contract::Contract::open(&dir.join("bare.jsonl")).unwrap());
        broker.serve(2, vec![server(bare)]).unwrap();
        let bare_client =
            MedianContractClient::new("devchain", broker.local_channel(2), Duration::from_secs(2));
        assert_eq!(bare_client.latest_transmission_details(), Ok(None));
        let raw = median_grpc::MedianContractClient::new(broker.local_channel(2))
            .latest_transmission_details(
                &LatestTransmissionDetailsRequest::new(),
                Duration::from_secs(2),
            )
            .unwrap();
        assert_eq!(raw.configDigest, vec![0; 32]);
        assert_eq!((raw.epoch, raw.round), (0, 0));
        assert_eq!(
            crate::services::wire::from_big(raw.latestAnswer.as_ref().expect("an answer")),
            Ok(0)
        );
        assert_eq!(raw.latestTimestamp.as_ref().map(|t| t.seconds), Some(0));
        let report = codec::build_report(&[crate::services::relay::provider::ParsedObservation {
            timestamp: 1_700_000_000,
            value: -(1i128 << 100),
            juels_per_fee_coin: 1,
            gas_price_subunits: 0,
            observer: 0,
        }])
        .unwrap();
        c.transmit(&digest, 4, 2, &report).unwrap();
        assert_eq!(
            remote.latest_transmission_details(),
            c.latest_transmission_details()
        );
        let (d, l) = remote.latest_transmission_details().unwrap().unwrap();
        assert_eq!(d, digest.to_vec());
        assert_eq!(
            (l.epoch, l.round, l.answer, l.timestamp),
            (4, 2, -(1i128 << 100), 1_700_000_000)
        );
        broker.close();
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Answers nothing; records the thread each call ran on.
    struct Where {
        at_once: bool,
        ran_on: crate::testutil::ThreadNames,
    }

    impl MedianContract for Where {
        fn latest_transmission_details(&self) -> Result<Option<(Vec<u8>, Latest)>, String> {
            self.ran_on.record();
            Ok(None)
        }

        fn latest_round_requested(&self, _: Duration) -> Result<Option<RoundRequested>, String> {
            self.ran_on.record();
            Ok(None)
        }

        fn answers_at_once(&self) -> bool {
            self.at_once
        }
    }

    /// A contract that answers at once is answered by the thread that
    /// received the call; any other on a pool thread.
    #[test]
    fn a_contract_that_answers_at_once_is_served_without_a_pool_thread() {
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
        for (id, at_once) in [(1, true), (2, false)] {
            let c = Arc::new(Where {
                at_once,
                ran_on: Default::default(),
            });
            broker.serve(id, vec![server(c.clone())]).unwrap();
            let client = MedianContractClient::new(
                "relay",
                broker.local_channel(id),
                Duration::from_secs(5),
            );
            assert_eq!(client.latest_transmission_details(), Ok(None));
            assert_eq!(client.latest_round_requested(Duration::ZERO), Ok(None));
            let ran_on = c.ran_on.seen();
            assert_eq!(ran_on.len(), 2, "{ran_on:?}");
            for name in &ran_on {
                assert_eq!(name.starts_with("loopp-pool"), !at_once, "{ran_on:?}");
            }
        }
        broker.close();
    }

    /// Answers a fixed request; records the lookback it was asked for.
    struct Requests(std::sync::Mutex<Vec<Duration>>, Option<RoundRequested>);

    impl MedianContract for Requests {
        fn latest_transmission_details(&self) -> Result<Option<(Vec<u8>, Latest)>, String> {
            Ok(None)
        }

        fn latest_round_requested(
            &self,
            lookback: Duration,
        ) -> Result<Option<RoundRequested>, String> {
            self.0.lock().unwrap().push(lookback);
            Ok(self.1.clone())
        }
    }

    #[test]
    fn latest_round_requested_crosses_a_socket_with_its_lookback() {
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
        let some = Arc::new(Requests(
            Default::default(),
            Some(RoundRequested {
                config_digest: vec![3; 32],
                epoch: 9,
                round: 255,
            }),
        ));
        let none = Arc::new(Requests(Default::default(), None));
        broker.serve(1, vec![server(some.clone())]).unwrap();
        broker.serve(2, vec![server(none.clone())]).unwrap();
        let t = Duration::from_secs(2);
        let a = MedianContractClient::new("relay", broker.local_channel(1), t);
        let b = MedianContractClient::new("relay", broker.local_channel(2), t);
        let lookback = Duration::from_nanos(1_500_000_001);
        assert_eq!(
            a.latest_round_requested(lookback),
            some.latest_round_requested(lookback)
        );
        assert_eq!(b.latest_round_requested(lookback), Ok(None));
        assert_eq!(some.0.lock().unwrap()[0], lookback);
        broker.close();
    }
}
