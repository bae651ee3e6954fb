//! The devchain's median contract, over the chain file: config (with its
//! digest), the config tracker's views, transmission with the contract's own
//! checks, and the median contract's latest transmission details.
//!
//! A transmission is accepted only if it is for the current config digest,
//! newer (epoch, round) than the latest, and its median is within the config's
//! bounds; it is durable (fsynced) before `transmit` returns.
//!
//! Reads of the latest config and transmission never wait for a write:
//! they answer from a copy published after each write completes (under the
//! chain's lock, so in order), as a chain shows a block once it is made.

use std::io;
use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::codec;
use super::store::{Chain, ContractConfig, Record, Transmission};

/// The devchain's config digest prefix (first two bytes of every digest).
pub const DIGEST_PREFIX: [u8; 2] = [0x0d, 0xec];

/// What an operator sets as the contract config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigInput {
    /// Oracle signing keys (hex).
    pub signers: Vec<String>,
    /// Oracle transmitter accounts.
    pub transmitters: Vec<String>,
    /// Faulty oracles tolerated.
    pub f: u8,
    /// Smallest valid median.
    pub min_answer: i128,
    /// Largest valid median.
    pub max_answer: i128,
}

/// The digest of a config: SHA-256 of its canonical JSON (with the config
/// count), the first two bytes replaced by [`DIGEST_PREFIX`]. Deterministic.
pub fn config_digest(input: &ConfigInput, count: u64) -> [u8; 32] {
    let canonical = serde_json::json!({
        "count": count,
        "signers": input.signers,
        "transmitters": input.transmitters,
        "f": input.f,
        "min": input.min_answer.to_string(),
        "max": input.max_answer.to_string(),
    });
    let mut d: [u8; 32] = Sha256::digest(canonical.to_string().as_bytes()).into();
    d[..2].copy_from_slice(&DIGEST_PREFIX);
    d
}

use crate::services::wire::hex;

/// Why a transmission was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No config set yet.
    NoConfig,
    /// For another config.
    WrongDigest {
        /// The report's.
        got: String,
        /// The contract's.
        current: String,
    },
    /// Not newer than the latest transmission.
    Stale {
        /// The report's (epoch, round).
        got: (u32, u8),
        /// The latest (epoch, round).
        latest: (u32, u8),
    },
    /// Median outside the config's bounds.
    OutOfBounds(i128),
    /// Not a devchain report.
    BadReport(String),
    /// The chain file could not be written.
    Io(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NoConfig => f.write_str("the contract has no config yet"),
            Refused::WrongDigest { got, current } => {
                write!(f, "report for config {got}, the contract's is {current}")
            }
            Refused::Stale { got, latest } => write!(
                f,
                "report for epoch {} round {} is not newer than the latest (epoch {} round {})",
                got.0, got.1, latest.0, latest.1
            ),
            Refused::OutOfBounds(m) => write!(f, "median {m} is outside the contract's bounds"),
            Refused::BadReport(e) => write!(f, "bad report: {e}"),
            Refused::Io(e) => write!(f, "chain file: {e}"),
        }
    }
}

/// The contract, shared by the relayer's provider services.
pub struct Contract {
    chain: Mutex<Chain>,
    /// The latest config and transmission as of the last completed write:
    /// what reads answer, without waiting for a write and its fsync.
    seen: Mutex<Seen>,
}

/// What reads see.
#[derive(Default)]
struct Seen {
    /// `(block it was set in, config)`.
    config: Option<(u64, ContractConfig)>,
    /// `(config digest, latest)` of the latest transmission.
    latest: Option<(String, crate::services::median::Latest)>,
}

impl Seen {
    fn of(chain: &Chain) -> Seen {
        Seen {
            config: chain.config().map(|c| (chain.config_block(), c.clone())),
            latest: chain.latest().map(|t| {
                (
                    t.digest.clone(),
                    crate::services::median::Latest {
                        epoch: t.epoch,
                        round: t.round,
                        answer: t.median,
                        timestamp: t.observations_timestamp,
                    },
                )
            }),
        }
    }
}

impl Contract {
    /// Opens the chain file at `path`.
    pub fn open(path: &Path) -> io::Result<Contract> {
        let chain = Chain::open(path)?;
        Ok(Contract {
            seen: Mutex::new(Seen::of(&chain)),
            chain: Mutex::new(chain),
        })
    }

    /// Publishes what `chain` (locked by the caller) holds to readers.
    fn publish(&self, chain: &Chain) {
        *self.seen.lock().unwrap() = Seen::of(chain);
    }

    /// The latest config's digest and the latest transmission, read
    /// together without waiting for a write.
    pub(crate) fn with_seen<T>(
        &self,
        f: impl FnOnce(
            Option<&(u64, ContractConfig)>,
            Option<&(String, crate::services::median::Latest)>,
        ) -> T,
    ) -> T {
        let seen = self.seen.lock().unwrap();
        f(seen.config.as_ref(), seen.latest.as_ref())
    }

    /// Sets a new config; returns its digest.
    pub fn set_config(&self, input: &ConfigInput) -> io::Result<[u8; 32]> {
        let mut chain = self.chain.lock().unwrap();
        let count = chain.config().map_or(0, |c| c.count) + 1;
        let digest = config_digest(input, count);
        chain.append(Record::Config(ContractConfig {
            digest: hex(&digest),
            count,
            signers: input.signers.clone(),
            transmitters: input.transmitters.clone(),
            f: input.f,
            min_answer: input.min_answer,
            max_answer: input.max_answer,
        }))?;
        self.publish(&chain);
        Ok(digest)
    }

    /// Deploys `input`: sets it unless it is the latest config already (so
    /// deploying the same contract again, after a restart say, changes
    /// nothing). Returns whether a new config was set.
    pub fn deploy(&self, input: &ConfigInput) -> io::Result<bool> {
        let current = self.latest_config().filter(|(_, c)| {
            c.f == input.f
                && c.min_answer == input.min_answer
                && c.max_answer == input.max_answer
                && c.signers == input.signers
                && c.transmitters == input.transmitters
        });
        if current.is_some() {
            return Ok(false);
        }
        self.set_config(input)?;
        Ok(true)
    }

    /// `(block the config was set in, config)`, if any.
    pub fn latest_config(&self) -> Option<(u64, ContractConfig)> {
        self.with_seen(|config, _| config.cloned())
    }

    /// The current block height.
    pub fn latest_block_height(&self) -> u64 {
        self.chain.lock().unwrap().height()
    }

    /// The newest block: `(height, hash, time)`. The devchain has no clock:
    /// a block's time is the latest transmission's observation time (0
    /// before any).
    pub fn head(&self) -> (u64, [u8; 32], u64) {
        let chain = self.chain.lock().unwrap();
        let time = chain.latest().map_or(0, |t| t.observations_timestamp);
        (chain.height(), chain.head_hash(), time)
    }

    /// What the median plugin compares against: the latest transmission.
    pub fn latest_transmission(&self) -> Option<(String, crate::services::median::Latest)> {
        self.with_seen(|_, latest| latest.cloned())
    }

    /// How many transmissions the chain holds.
    pub fn transmitted(&self) -> u64 {
        self.chain.lock().unwrap().transmitted()
    }

    /// Every transmission so far, read back from the chain file.
    pub fn transmissions(&self) -> std::io::Result<Vec<Transmission>> {
        self.chain.lock().unwrap().transmissions()
    }

    /// Accepts a report for `(digest, epoch, round)` after the contract's
    /// checks, durably.
    pub fn transmit(
        &self,
        digest: &[u8],
        epoch: u32,
        round: u8,
        report: &[u8],
    ) -> Result<(), Refused> {
        let mut chain = self.chain.lock().unwrap();
        let config = chain.config().cloned().ok_or(Refused::NoConfig)?;
        let got = hex(digest);
        if got != config.digest {
            return Err(Refused::WrongDigest {
                got,
                current: config.digest,
            });
        }
        if let Some(l) = chain.latest().filter(|l| l.digest == config.digest) {
            if (epoch, round) <= (l.epoch, l.round) {
                return Err(Refused::Stale {
                    got: (epoch, round),
                    latest: (l.epoch, l.round),
                });
            }
        }
        let r = codec::decode(report).map_err(Refused::BadReport)?;
        if !(config.min_answer..=config.max_answer).contains(&r.median) {
            return Err(Refused::OutOfBounds(r.median));
        }
        chain
            .append(Record::Transmission(Transmission {
                digest: config.digest,
                epoch,
                round,
                median: r.median,
                observations_timestamp: u64::from(r.observations_timestamp),
                juels_per_fee_coin: r.juels_per_fee_coin,
            }))
            .map_err(|e| Refused::Io(e.to_string()))?;
        self.publish(&chain);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ConfigInput {
        ConfigInput {
            signers: vec!["s0".into(), "s1".into(), "s2".into(), "s3".into()],
            transmitters: vec!["t0".into(), "t1".into(), "t2".into(), "t3".into()],
            f: 1,
            min_answer: 0,
            max_answer: 1_000_000,
        }
    }

    fn report(median: i128) -> Vec<u8> {
        codec::build_report(&[crate::services::relay::provider::ParsedObservation {
            timestamp: 1000,
            value: median,
            juels_per_fee_coin: 1,
            gas_price_subunits: 0,
            observer: 0,
        }])
        .unwrap()
    }

    #[test]
    fn digests_are_deterministic_prefixed_and_change_with_the_config() {
        let a = config_digest(&input(), 1);
        assert_eq!(a, config_digest(&input(), 1));
        assert_eq!(a[..2], DIGEST_PREFIX);
        assert_ne!(a, config_digest(&input(), 2));
        let mut other = input();
        other.f = 2;
        assert_ne!(a, config_digest(&other, 1));
    }

    #[test]
    fn transmit_checks_digest_freshness_and_bounds_and_persists() {
        let dir = crate::testutil::fresh_dir("contract");
        let path = dir.join("chain.jsonl");
        let c = Contract::open(&path).unwrap();
        assert_eq!(
            c.transmit(&[0; 32], 1, 1, &report(5)),
            Err(Refused::NoConfig)
        );
        let digest = c.set_config(&input()).unwrap();
        assert_eq!(c.latest_config().unwrap().0, 1, "set in block 1");
        assert!(matches!(
            c.transmit(&[1; 32], 1, 1, &report(5)),
            Err(Refused::WrongDigest { .. })
        ));
        assert_eq!(c.transmit(&digest, 1, 1, &report(5)), Ok(()));
        assert_eq!(
            c.transmit(&digest, 1, 1, &report(6)),
            Err(Refused::Stale {
                got: (1, 1),
                latest: (1, 1)
            })
        );
        assert_eq!(
            c.transmit(&digest, 1, 2, &report(2_000_000)),
            Err(Refused::OutOfBounds(2_000_000))
        );
        assert!(matches!(
            c.transmit(&digest, 1, 2, b"junk"),
            Err(Refused::BadReport(_))
        ));
        assert_eq!(c.transmit(&digest, 2, 0, &report(7)), Ok(()));
        drop(c);
        let c = Contract::open(&path).unwrap();
        let (d, latest) = c.latest_transmission().unwrap();
        assert_eq!(d, hex(&digest));
        assert_eq!((latest.epoch, latest.round, latest.answer), (2, 0, 7));
        assert_eq!(c.transmissions().unwrap().len(), 2);
        assert_eq!(c.latest_block_height(), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A read answers while a write holds the chain (as one does through
    /// its fsync), with what the last completed write published.
    #[test]
    fn reads_never_wait_for_a_write() {
        use crate::services::median::plugin::MedianContract;
        let dir = crate::testutil::fresh_dir("contract-reads");
        let c = std::sync::Arc::new(Contract::open(&dir.join("chain.jsonl")).unwrap());
        let digest = c.set_config(&input()).unwrap();
        assert_eq!(c.transmit(&digest, 1, 0, &report(5)), Ok(()));
        let (held_tx, held_rx) = crossbeam_channel::bounded::<()>(0);
        let (read_tx, read_rx) = crossbeam_channel::bounded::<()>(1);
        let writer = {
            let c = c.clone();
            std::thread::spawn(move || {
                let _chain = c.chain.lock().unwrap();
                held_tx.send(()).unwrap();
                // Held until the read is done, or 5 s: a read that waited
                // for the chain would only end after that.
                read_rx
                    .recv_timeout(std::time::Duration::from_secs(5))
                    .is_ok()
            })
        };
        held_rx.recv().unwrap();
        let latest = c.latest_transmission_details().unwrap().unwrap();
        read_tx.send(()).unwrap();
        assert!(writer.join().unwrap(), "the read waited for the writer");
        assert_eq!(latest.0, digest.to_vec());
        assert_eq!((latest.1.epoch, latest.1.answer), (1, 5));
        assert!(c.answers_at_once());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
