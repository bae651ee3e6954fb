//! The devchain relayer, in-process: [`Devchain`] is its [`PluginRelayer`],
//! [`DevchainRelayer`] its [`Relayer`] (providers over one [`Contract`],
//! chain and node status as real views of the chain file), and the
//! [`Contract`] is its own [`ContractTransmitter`]. The same objects serve
//! a `loopp-devchain` LOOPP through [`crate::services::relay::grpc`].
//!
//! Relayer config (JSON): `{"chainFile": "/path/to/chain.jsonl"}`, and
//! optionally the contract to deploy on that chain:
//! `"deploy": {"signers": [..], "transmitters": [..], "f": 1,
//! "minAnswer": "<i128>", "maxAnswer": "<i128>"}`. Deploying sets that
//! config unless it is the latest already; the relayer is the only writer of
//! its chain files (the file's directory is made when missing).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use serde::Deserialize;

use super::contract::{ConfigInput, Contract};
use super::provider::DevchainCodec;
use crate::services::keystore::Keystore;
use crate::services::relay::{
    ChainInfo, ChainStatus, ConfigProvider, ContractTransmitter, Head, MedianProvider, NodeStatus,
    NodeStatusPage, PluginArgs, PluginRelayer, RelayArgs, Relayer, Transaction,
};
use crate::services::wire::ReportTimestamp;

/// The devchain's chain id.
pub const CHAIN_ID: &str = "devchain";
/// The account transmissions come from when the relayer has no keystore.
pub const TRANSMITTER_ACCOUNT: &str = "devchain-transmitter";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RelayerConfig {
    chain_file: PathBuf,
    #[serde(default)]
    deploy: Option<Deploy>,
}

/// The contract config to deploy (see the module docs).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Deploy {
    signers: Vec<String>,
    transmitters: Vec<String>,
    f: u8,
    min_answer: String,
    max_answer: String,
}

impl Deploy {
    fn input(&self) -> Result<ConfigInput, String> {
        let num = |what: &str, v: &str| {
            v.trim().parse::<i128>().map_err(|_| {
                format!("devchain relayer config: deploy.{what} {v:?} is not an integer string")
            })
        };
        Ok(ConfigInput {
            signers: self.signers.clone(),
            transmitters: self.transmitters.clone(),
            f: self.f,
            min_answer: num("minAnswer", &self.min_answer)?,
            max_answer: num("maxAnswer", &self.max_answer)?,
        })
    }
}

/// The devchain relayer plugin. Relayers on the same chain file share one
/// [`Contract`] (one writer per file per process).
#[derive(Default)]
pub struct Devchain {
    open: Mutex<HashMap<PathBuf, Weak<Contract>>>,
}

impl Devchain {
    /// A devchain relayer plugin with no chain open yet.
    pub fn new() -> Devchain {
        Devchain::default()
    }

    fn contract(&self, path: &Path) -> Result<Arc<Contract>, String> {
        let mut open = self.open.lock().unwrap();
        open.retain(|_, c| c.strong_count() > 0);
        if let Some(c) = open.get(path).and_then(Weak::upgrade) {
            return Ok(c);
        }
        let named = |e: std::io::Error| format!("devchain: {}: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(named)?;
        }
        let c = Arc::new(Contract::open(path).map_err(named)?);
        open.insert(path.to_path_buf(), Arc::downgrade(&c));
        Ok(c)
    }
}

impl PluginRelayer for Devchain {
    fn new_relayer(
        &self,
        config: &str,
        keystore: Option<Arc<dyn Keystore>>,
        // The devchain needs no identity beyond its transmit keys.
        _csa_keystore: Option<Arc<dyn Keystore>>,
    ) -> Result<Arc<dyn Relayer>, String> {
        let cfg: RelayerConfig = serde_json::from_str(config).map_err(|e| {
            format!(
                "devchain relayer config: {e}; expected {{\"chainFile\": \"/path/chain.jsonl\"}}"
            )
        })?;
        let contract = self.contract(&cfg.chain_file)?;
        if let Some(deploy) = &cfg.deploy {
            contract
                .deploy(&deploy.input()?)
                .map_err(|e| format!("devchain: deploying to {}: {e}", cfg.chain_file.display()))?;
        }
        Ok(Arc::new(DevchainRelayer { contract, keystore }))
    }
}

/// One devchain (one chain file).
pub struct DevchainRelayer {
    contract: Arc<Contract>,
    keystore: Option<Arc<dyn Keystore>>,
}

impl Relayer for DevchainRelayer {
    fn new_config_provider(&self, _args: &RelayArgs) -> Result<ConfigProvider, String> {
        Ok(ConfigProvider {
            digester: self.contract.clone(),
            tracker: self.contract.clone(),
        })
    }

    fn new_plugin_provider(
        &self,
        args: &RelayArgs,
        _plugin: &PluginArgs,
    ) -> Result<MedianProvider, String> {
        let kind = args.provider_type.as_str();
        if kind != "median" && !kind.is_empty() {
            return Err(format!(
                "providerType {kind:?}: the devchain relayer provides \"median\""
            ));
        }
        Ok(MedianProvider {
            config: self.new_config_provider(args)?,
            transmitter: Arc::new(Transmitter {
                contract: self.contract.clone(),
                keystore: self.keystore.clone(),
            }),
            contract: self.contract.clone(),
            report_codec: Arc::new(DevchainCodec),
            onchain_codec: Arc::new(DevchainCodec),
            remote: None,
        })
    }

    fn chain_status(&self) -> Result<ChainStatus, String> {
        let c = &self.contract;
        let config = serde_json::json!({
            "height": c.latest_block_height(),
            "transmissions": c.transmitted(),
            "configDigest": c.latest_config().map(|(_, cfg)| cfg.digest),
        });
        Ok(ChainStatus {
            id: CHAIN_ID.into(),
            enabled: true,
            config: config.to_string(),
        })
    }

    fn list_node_statuses(
        &self,
        _page_size: i32,
        page_token: &str,
    ) -> Result<NodeStatusPage, String> {
        if !page_token.is_empty() {
            return Err(format!(
                "page token {page_token:?}: the devchain has one node, on one page"
            ));
        }
        Ok(NodeStatusPage {
            nodes: vec![NodeStatus {
                chain_id: CHAIN_ID.into(),
                name: "chain-file".into(),
                config: serde_json::json!({"height": self.contract.latest_block_height()})
                    .to_string(),
                state: "alive".into(),
            }],
            total: 1,
            next_page_token: String::new(),
        })
    }

    fn transact(&self, _tx: &Transaction) -> Result<(), String> {
        Err("the devchain has no balances: Transact is not supported".into())
    }

    fn latest_head(&self) -> Result<Head, String> {
        let (height, hash, timestamp) = self.contract.head();
        Ok(Head {
            height: height.to_string(),
            hash: hash.to_vec(),
            timestamp,
        })
    }

    /// A block is final once written: the file is fsynced before a write is
    /// acknowledged, and nothing rewrites it.
    fn finalized_head(&self) -> Result<Head, String> {
        self.latest_head()
    }

    fn chain_info(&self) -> Result<ChainInfo, String> {
        Ok(ChainInfo {
            family_name: CHAIN_ID.into(),
            chain_id: CHAIN_ID.into(),
            network_name: CHAIN_ID.into(),
            network_name_full: "loopp devchain (a local chain file)".into(),
        })
    }

    /// The devchain keeps no state derived from old blocks (every view reads
    /// the chain), so there is nothing to reprocess: the block is checked,
    /// and args must be empty.
    fn replay(
        &self,
        from_block: &str,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        let height = self.contract.latest_block_height();
        let from: u64 = from_block.trim().parse().map_err(|_| {
            format!("fromBlock {from_block:?} is not a block number (a decimal integer)")
        })?;
        if from > height {
            return Err(format!(
                "fromBlock {from} is beyond the chain's height {height}"
            ));
        }
        if let Some(k) = args.keys().next() {
            return Err(format!("replay argument {k:?}: the devchain takes none"));
        }
        Ok(())
    }
}

impl ContractTransmitter for Contract {
    fn transmit(&self, ts: &ReportTimestamp, report: &[u8]) -> Result<(), String> {
        Contract::transmit(self, &ts.config_digest, ts.epoch, ts.round, report)
            .map_err(|e| e.to_string())
    }

    fn latest_config_digest_and_epoch(&self) -> Result<(Vec<u8>, u32), String> {
        Ok(match self.latest_transmission() {
            Some((digest, l)) => (crate::services::wire::unhex(&digest), l.epoch),
            None => (vec![0; 32], 0),
        })
    }

    fn from_account(&self) -> Result<String, String> {
        Ok(TRANSMITTER_ACCOUNT.into())
    }
}

/// The median provider's transmitter: the contract, with the account from
/// the node's keystore when the relayer was given one.
struct Transmitter {
    contract: Arc<Contract>,
    keystore: Option<Arc<dyn Keystore>>,
}

/// Transmissions written and synced at once, at most, in a process: each
/// holds a pool thread while its chain file syncs, so this bounds the
/// relayer's threads whatever the number of feeds or calls. 8: at 1,000
/// LOOPP feeds on this 2-core VM the relayer had up to 20 such threads
/// before (as many as transmissions in flight).
pub const WRITES: usize = 8;

/// Transmissions waiting for one of the [`WRITES`] places, at most; one
/// more is refused (the round fails, the next one transmits). Far above a
/// feed's one transmission in flight times any job's feeds.
pub const QUEUED_WRITES: usize = 16_384;

/// The lane every transmission's write and sync runs in.
fn writes() -> &'static crate::goplugin::pool::Lane {
    static LANE: std::sync::OnceLock<crate::goplugin::pool::Lane> = std::sync::OnceLock::new();
    LANE.get_or_init(|| {
        crate::goplugin::pool::Lane::with_remedy(
            "the devchain relayer's chain writes",
            "devchain_writes",
            "the feeds of one devchain relayer (spread them over more)",
            WRITES,
            QUEUED_WRITES,
        )
        // A write and its sync are short: on a framed connection with
        // nothing else to read, the reader does it instead of waking a
        // pool thread for it.
        .run_here_when_quiet()
    })
}

impl ContractTransmitter for Transmitter {
    fn transmit(&self, ts: &ReportTimestamp, report: &[u8]) -> Result<(), String> {
        ContractTransmitter::transmit(self.contract.as_ref(), ts, report)
    }

    /// Written and synced on a pool thread of the [`writes`] lane: a
    /// server answers with this future on its completion-queue thread,
    /// and at most [`WRITES`] threads wait on syncs, however many feeds
    /// transmit at once.
    fn transmit_async(
        &self,
        ts: &ReportTimestamp,
        report: &[u8],
    ) -> Option<crate::goplugin::rpc::Reply<()>> {
        let admitted = match writes().admit() {
            Ok(a) => a,
            Err(busy) => return Some(crate::goplugin::rpc::ready(Err(busy.to_string()))),
        };
        let (tx, rx) = futures_channel::oneshot::channel();
        let (c, ts, r) = (self.contract.clone(), ts.clone(), report.to_vec());
        admitted.start(move || {
            let _ = tx.send(ContractTransmitter::transmit(c.as_ref(), &ts, &r));
        });
        Some(Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err("the chain write ended without an answer".into()))
        }))
    }

    fn latest_config_digest_and_epoch(&self) -> Result<(Vec<u8>, u32), String> {
        self.contract.latest_config_digest_and_epoch()
    }

    fn from_account(&self) -> Result<String, String> {
        match &self.keystore {
            Some(ks) => Ok(ks
                .accounts()?
                .into_iter()
                .next()
                .unwrap_or_else(|| TRANSMITTER_ACCOUNT.into())),
            None => self.contract.from_account(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(file: &Path, f: u8, max: &str) -> String {
        serde_json::json!({
            "chainFile": file,
            "deploy": {
                "signers": ["oracle-0", "oracle-1", "oracle-2", "oracle-3"],
                "transmitters": ["t0", "t1", "t2", "t3"],
                "f": f, "minAnswer": "-5", "maxAnswer": max,
            },
        })
        .to_string()
    }

    fn configs_in(file: &Path) -> usize {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"config\""))
            .count()
    }

    /// The relayer deploys the contract its config names, once: the same
    /// config again (a feed rebuilt, the node restarted) writes nothing, a
    /// changed one is a new config; the chain file's directory is made.
    #[test]
    fn new_relayer_deploys_the_contract_once_per_config() {
        let dir = crate::testutil::fresh_dir("devchain-deploy");
        let file = dir.join("relay").join("feed.jsonl");
        let devchain = Devchain::new();
        let relayer = devchain
            .new_relayer(&config(&file, 1, "99"), None, None)
            .unwrap();
        let provider = relayer
            .new_plugin_provider(&RelayArgs::default(), &PluginArgs::default())
            .unwrap();
        let tracker = &provider.config.tracker;
        let (block, digest) = tracker.latest_config_details().unwrap();
        assert_eq!(tracker.latest_config(block).unwrap().config_count, 1);
        drop((relayer, provider));
        for _ in 0..3 {
            Devchain::new()
                .new_relayer(&config(&file, 1, "99"), None, None)
                .unwrap();
        }
        assert_eq!(configs_in(&file), 1, "the same config is deployed once");
        let relayer = Devchain::new()
            .new_relayer(&config(&file, 1, "100"), None, None)
            .unwrap();
        let provider = relayer
            .new_plugin_provider(&RelayArgs::default(), &PluginArgs::default())
            .unwrap();
        let tracker = &provider.config.tracker;
        let (block, newer) = tracker.latest_config_details().unwrap();
        let latest = tracker.latest_config(block).unwrap();
        assert_eq!((latest.config_count, configs_in(&file)), (2, 2));
        assert_ne!(newer, digest);
        assert_eq!(latest.transmitters, ["t0", "t1", "t2", "t3"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_bad_deploy_section_is_refused_with_its_field() {
        let dir = crate::testutil::fresh_dir("devchain-deploy-bad");
        let file = dir.join("feed.jsonl");
        let err = Devchain::new()
            .new_relayer(&config(&file, 1, "lots"), None, None)
            .err()
            .unwrap();
        assert!(
            err.contains("deploy.maxAnswer \"lots\" is not an integer string"),
            "{err}"
        );
        let err = Devchain::new()
            .new_relayer(r#"{"chainFile": "x", "deploy": {"f": 1}}"#, None, None)
            .err()
            .unwrap();
        assert!(
            err.starts_with("devchain relayer config: missing field"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Transmissions sent together, more than [`WRITES`] (the rest wait in
    /// the lane), all land through the async path, and a refused one
    /// (stale) comes back as an error.
    #[test]
    fn transmissions_sent_together_all_land_and_refusals_come_back() {
        use crate::services::relay::provider::{ParsedObservation, ReportCodec};
        let dir = crate::testutil::fresh_dir("devchain-writes");
        let n = 3 * WRITES;
        let feeds: Vec<_> = (0..n)
            .map(|i| {
                let relayer = Devchain::new()
                    .new_relayer(
                        &config(&dir.join(format!("f{i}.jsonl")), 1, "1000"),
                        None,
                        None,
                    )
                    .unwrap();
                let provider = relayer
                    .new_plugin_provider(&RelayArgs::default(), &PluginArgs::default())
                    .unwrap();
                let (_, digest) = provider.config.tracker.latest_config_details().unwrap();
                (relayer, provider, digest)
            })
            .collect();
        let report = |v: i128| {
            let obs: Vec<ParsedObservation> = (0..4)
                .map(|o| ParsedObservation {
                    timestamp: 1,
                    value: v,
                    juels_per_fee_coin: 1,
                    gas_price_subunits: 0,
                    observer: o,
                })
                .collect();
            DevchainCodec.build_report(&obs).unwrap()
        };
        let ts = |digest: &Vec<u8>| ReportTimestamp {
            config_digest: digest.clone(),
            epoch: 1,
            round: 1,
        };
        let sent: Vec<_> = feeds
            .iter()
            .enumerate()
            .map(|(i, (_, p, d))| {
                p.transmitter
                    .transmit_async(&ts(d), &report(i as i128))
                    .expect("the devchain answers transmissions as futures")
            })
            .collect();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let done = futures_executor::block_on(crate::goplugin::rpc::join_until(sent, until));
        assert!(done.iter().all(|r| matches!(r, Some(Ok(())))), "{done:?}");
        for (i, (_, p, d)) in feeds.iter().enumerate() {
            assert_eq!(
                p.transmitter.latest_config_digest_and_epoch().unwrap(),
                (d.clone(), 1),
                "feed {i}"
            );
        }
        // The same round again is stale: refused, through the future.
        let (_, p, d) = &feeds[0];
        let again = p.transmitter.transmit_async(&ts(d), &report(5)).unwrap();
        let err = futures_executor::block_on(again).unwrap_err();
        assert!(err.contains("is not newer than the latest"), "{err}");
        drop(feeds);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
