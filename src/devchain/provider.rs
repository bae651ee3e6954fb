//! The devchain's implementations of the provider traits and of the median
//! contract view
//! ([`crate::services::relay::provider`]): [`DevchainCodec`] for reports and onchain
//! config, and the [`Contract`] itself as config tracker and digester.
//!
//! Onchain config is the standard one (version 1, min and max as int192); a
//! contract config's signers cross the wire as the UTF-8 bytes of the
//! chain file's signer strings.

use super::codec;
use super::contract::{config_digest, ConfigInput, Contract, DIGEST_PREFIX};
use std::time::Duration;

use crate::services::median::plugin::{MedianContract, RoundRequested};
use crate::services::median::value::{decode_onchain_config, encode_onchain_config};
use crate::services::median::{Bounds, Latest};
use crate::services::relay::provider::{
    ConfigTracker, ContractConfig, Digester, OnchainConfigCodec, ParsedObservation, ReportCodec,
};

/// The devchain's codecs (see [`codec`]).
pub struct DevchainCodec;

impl ReportCodec for DevchainCodec {
    fn build_report(&self, obs: &[ParsedObservation]) -> Result<Vec<u8>, String> {
        codec::build_report(obs)
    }

    /// Pure computation on the message.
    fn answers_at_once(&self) -> bool {
        true
    }

    fn median_from_report(&self, report: &[u8]) -> Result<i128, String> {
        codec::median_from_report(report)
    }

    fn max_report_length(&self, n: usize) -> Result<usize, String> {
        Ok(codec::max_report_length(n))
    }
}

/// The standard onchain config (version 1, min, max as int192).
impl OnchainConfigCodec for DevchainCodec {
    fn encode(&self, b: Bounds) -> Result<Vec<u8>, String> {
        encode_onchain_config(b)
    }

    fn decode(&self, encoded: &[u8]) -> Result<Bounds, String> {
        decode_onchain_config(encoded)
    }
}

impl ConfigTracker for Contract {
    fn latest_config_details(&self) -> Result<(u64, Vec<u8>), String> {
        Ok(self
            .latest_config()
            .map(|(block, c)| (block, crate::services::wire::unhex(&c.digest)))
            .unwrap_or((0, vec![0; 32])))
    }

    fn latest_config(&self, changed_in_block: u64) -> Result<ContractConfig, String> {
        let (block, c) = Contract::latest_config(self)
            .ok_or("the devchain contract has no config yet: the feed sets it when it starts")?;
        if block != changed_in_block {
            return Err(format!(
                "no config was set in block {changed_in_block}: the latest config was set in \
                 block {block} (ask LatestConfigDetails first)"
            ));
        }
        Ok(ContractConfig {
            config_digest: crate::services::wire::unhex(&c.digest),
            config_count: c.count,
            signers: c.signers.iter().map(|s| s.as_bytes().to_vec()).collect(),
            transmitters: c.transmitters.clone(),
            f: c.f,
            onchain_config: DevchainCodec.encode(Bounds {
                min: c.min_answer,
                max: c.max_answer,
            })?,
            offchain_config_version: 0,
            offchain_config: Vec::new(),
        })
    }

    fn latest_block_height(&self) -> Result<u64, String> {
        Ok(Contract::latest_block_height(self))
    }
}

impl Digester for Contract {
    fn config_digest(&self, config: &ContractConfig) -> Result<Vec<u8>, String> {
        let bounds = DevchainCodec.decode(&config.onchain_config)?;
        let input = ConfigInput {
            signers: config
                .signers
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
            transmitters: config.transmitters.clone(),
            f: config.f,
            min_answer: bounds.min,
            max_answer: bounds.max,
        };
        Ok(config_digest(&input, config.config_count).to_vec())
    }

    fn config_digest_prefix(&self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(DIGEST_PREFIX))
    }
}

/// The contract as the median plugin reads it.
impl MedianContract for Contract {
    /// As an OCR2 aggregator answers: the current config's digest; the
    /// latest transmission's epoch and round when it was made under that
    /// config, else 0 and 0 (a new config starts over); the latest answer
    /// and its time either way. Before any config: none (a zero digest).
    fn latest_transmission_details(&self) -> Result<Option<(Vec<u8>, Latest)>, String> {
        Ok(self.with_seen(|config, latest| {
            let (_, config) = config?;
            let digest = crate::services::wire::unhex(&config.digest);
            let zero = Latest {
                epoch: 0,
                round: 0,
                answer: 0,
                timestamp: 0,
            };
            Some(match latest {
                Some((d, l)) if *d == config.digest => (digest, *l),
                Some((_, l)) => (
                    digest,
                    Latest {
                        epoch: 0,
                        round: 0,
                        ..*l
                    },
                ),
                None => (digest, zero),
            })
        }))
    }

    /// Reads what the last write published: never a wait for a write.
    fn answers_at_once(&self) -> bool {
        true
    }

    /// Nobody requests rounds on the devchain.
    fn latest_round_requested(
        &self,
        _lookback: Duration,
    ) -> Result<Option<RoundRequested>, String> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::services::relay::provider::{self, ProviderClient};

    #[test]
    fn provider_services_over_a_socket_match_in_process() {
        let dir = crate::testutil::fresh_dir("provider");
        let contract = Arc::new(Contract::open(&dir.join("chain.jsonl")).unwrap());
        let input = ConfigInput {
            signers: vec!["s".into()],
            transmitters: vec!["t".into()],
            f: 1,
            min_answer: -7,
            max_answer: i128::MAX,
        };
        let digest = contract.set_config(&input).unwrap();
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
        broker
            .serve(
                1,
                vec![
                    provider::report_codec_server(Arc::new(DevchainCodec)),
                    provider::onchain_codec_server(Arc::new(DevchainCodec)),
                    provider::tracker_server(contract.clone()),
                    provider::digester_server(contract.clone()),
                ],
            )
            .unwrap();
        let ch = broker.local_channel(1);
        let remote = ProviderClient::new(ch, Duration::from_secs(2));
        let obs = [ParsedObservation {
            timestamp: 9,
            value: 1 << 90,
            juels_per_fee_coin: -3,
            gas_price_subunits: 0,
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
        assert!(remote
            .decode(b"junk")
            .unwrap_err()
            .contains("onchain config"));
        // The tracker: details, then the config itself, the same both ways.
        assert_eq!(remote.latest_config_details(), Ok((1, digest.to_vec())));
        assert_eq!(remote.latest_block_height(), Ok(1));
        let config = remote.latest_config(1).unwrap();
        assert_eq!(
            Ok(config.clone()),
            ConfigTracker::latest_config(contract.as_ref(), 1)
        );
        assert_eq!(
            (config.config_count, config.f, config.signers.clone()),
            (1, 1, vec![b"s".to_vec()])
        );
        assert_eq!(DevchainCodec.decode(&config.onchain_config), Ok(bounds));
        let e = remote.latest_config(7).unwrap_err();
        assert!(e.contains("block 7") && e.contains("block 1"), "{e}");
        // The digester recomputes the tracked config's digest.
        assert_eq!(remote.config_digest(&config), Ok(digest.to_vec()));
        assert_eq!(remote.config_digest_prefix(), Ok(0x0dec));
        let mut other = config;
        other.config_count = 2;
        assert_ne!(remote.config_digest(&other), Ok(digest.to_vec()));
        broker.close();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
