//! The relayer side of the node, as Rust traits: [`PluginRelayer`] (a relayer
//! plugin's entry point), [`Relayer`] (one chain) and the providers a relayer
//! hands out, [`ConfigProvider`] and [`MedianProvider`]: bundles of
//! sub-service trait objects ([`provider`], [`ContractTransmitter`],
//! [`MedianContract`]).
//!
//! Every trait has an in-process implementation (the devchain,
//! [`crate::devchain::relayer`]) and gRPC adapters ([`grpc`]): servers that
//! serve any implementation from a plugin, and clients that implement the
//! same trait on the host. Node code holds `Arc<dyn PluginRelayer>` and
//! cannot tell whether the relayer runs in the node or as a LOOPP.

use std::sync::Arc;

pub mod grpc;
pub mod provider;

use self::provider::{ConfigTracker, Digester, OnchainConfigCodec, ReportCodec};
use crate::services::keystore::Keystore;
use crate::services::median::plugin::MedianContract;
use crate::services::wire::ReportTimestamp;

/// What a job tells the relayer about itself (`loop.RelayArgs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayArgs {
    /// The job's external id (a UUID's bytes).
    pub external_job_id: Vec<u8>,
    /// The job's id in the node.
    pub job_id: i32,
    /// The contract the job reports to.
    pub contract_id: String,
    /// Whether the job is new.
    pub new: bool,
    /// The job's relay config (relayer-specific, JSON for the devchain).
    pub relay_config: Vec<u8>,
    /// Which provider the job needs, e.g. `median`.
    pub provider_type: String,
}

/// What the job's plugin needs from the relayer (`loop.PluginArgs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginArgs {
    /// The account the job transmits from.
    pub transmitter_id: String,
    /// The plugin's config.
    pub plugin_config: Vec<u8>,
}

/// A chain's status (`loop.ChainStatus`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainStatus {
    /// The chain id.
    pub id: String,
    /// Whether the relayer serves it.
    pub enabled: bool,
    /// Relayer-specific details (JSON for the devchain).
    pub config: String,
}

/// One node of a chain (`loop.NodeStatus`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// The chain id.
    pub chain_id: String,
    /// The node's name.
    pub name: String,
    /// Relayer-specific details.
    pub config: String,
    /// E.g. `alive`.
    pub state: String,
}

/// One page of [`Relayer::list_node_statuses`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatusPage {
    /// This page's nodes.
    pub nodes: Vec<NodeStatus>,
    /// How many nodes there are in all.
    pub total: i32,
    /// Where the next page starts; empty on the last page.
    pub next_page_token: String,
}

/// A transfer (`loop.TransactionRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    /// From this account.
    pub from: String,
    /// To this account.
    pub to: String,
    /// How much.
    pub amount: i128,
    /// Refuse if the balance is too low.
    pub balance_check: bool,
}

/// A block (`loop.Head`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// Its height, a decimal integer (chains' heights outgrow `u64`).
    pub height: String,
    /// Its hash.
    pub hash: Vec<u8>,
    /// Its time, seconds since the epoch.
    pub timestamp: u64,
}

/// What chain a relayer serves (`loop.ChainInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainInfo {
    /// The chain family, e.g. `evm`, `solana`.
    pub family_name: String,
    /// The chain id.
    pub chain_id: String,
    /// The network's short name.
    pub network_name: String,
    /// The network's full name.
    pub network_name_full: String,
}

/// A relayer plugin's entry point (`loop.PluginRelayer`).
pub trait PluginRelayer: Send + Sync {
    /// A relayer for the chain `config` describes (relayer-specific; for the
    /// devchain `{"chainFile": "..."}`), signing with `keystore` and
    /// identifying itself with `csa_keystore` (the node's CSA key) if given.
    fn new_relayer(
        &self,
        config: &str,
        keystore: Option<Arc<dyn Keystore>>,
        csa_keystore: Option<Arc<dyn Keystore>>,
    ) -> Result<Arc<dyn Relayer>, String>;
}

/// One chain (`loop.Relayer`).
pub trait Relayer: Send + Sync {
    /// The config provider (digester + tracker) of a job's contract.
    fn new_config_provider(&self, args: &RelayArgs) -> Result<ConfigProvider, String>;
    /// The provider a job's plugin needs (`providerType` "median": a
    /// [`MedianProvider`]).
    fn new_plugin_provider(
        &self,
        args: &RelayArgs,
        plugin: &PluginArgs,
    ) -> Result<MedianProvider, String>;
    /// The chain's status.
    fn chain_status(&self) -> Result<ChainStatus, String>;
    /// A page of the chain's nodes, `page_size` at most (0: all), from
    /// `page_token` (empty: the first).
    fn list_node_statuses(
        &self,
        page_size: i32,
        page_token: &str,
    ) -> Result<NodeStatusPage, String>;
    /// Sends a transfer.
    fn transact(&self, tx: &Transaction) -> Result<(), String>;
    /// The chain's newest block.
    fn latest_head(&self) -> Result<Head, String>;
    /// The chain's newest final block.
    fn finalized_head(&self) -> Result<Head, String>;
    /// What chain this is.
    fn chain_info(&self) -> Result<ChainInfo, String>;
    /// Reprocesses the chain from block `from_block` (decimal), with
    /// relayer-specific `args` (a JSON object).
    fn replay(
        &self,
        from_block: &str,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String>;
}

/// Where accepted reports go (`loop.ContractTransmitter`).
pub trait ContractTransmitter: Send + Sync {
    /// Sends `report` for round `ts`; Ok once the chain has it.
    fn transmit(&self, ts: &ReportTimestamp, report: &[u8]) -> Result<(), String>;
    /// [`ContractTransmitter::transmit`] as a future that never blocks the
    /// thread polling it (a client sends its call); None: call `transmit`
    /// on a thread that may block (an in-process chain writes and syncs).
    fn transmit_async(
        &self,
        ts: &ReportTimestamp,
        report: &[u8],
    ) -> Option<crate::goplugin::rpc::Reply<()>> {
        let _ = (ts, report);
        None
    }
    /// The digest and epoch of the latest transmission (zero values before
    /// the first).
    fn latest_config_digest_and_epoch(&self) -> Result<(Vec<u8>, u32), String>;
    /// The account transmissions come from.
    #[allow(clippy::wrong_self_convention)] // the Go LOOP method's name
    fn from_account(&self) -> Result<String, String>;
}

/// A contract's config, as the OCR protocol follows it.
#[derive(Clone)]
pub struct ConfigProvider {
    /// Computes config digests.
    pub digester: Arc<dyn Digester>,
    /// Tracks the contract's config.
    pub tracker: Arc<dyn ConfigTracker>,
}

/// Everything the median plugin and the round driver need from the chain.
#[derive(Clone)]
pub struct MedianProvider {
    /// The contract's config.
    pub config: ConfigProvider,
    /// Where reports go.
    pub transmitter: Arc<dyn ContractTransmitter>,
    /// The contract's latest transmission, as the median plugin sees it.
    pub contract: Arc<dyn MedianContract>,
    /// The chain's report format.
    pub report_codec: Arc<dyn ReportCodec>,
    /// The chain's encoding of the contract's bounds.
    pub onchain_codec: Arc<dyn OnchainConfigCodec>,
    /// Where another process serves all of the above as one routed object,
    /// when every field is a client of it (a LOOPP relayer's provider): a
    /// host may then forward that object to a median plugin instead of
    /// serving these again. `None` for anything else.
    pub remote: Option<crate::goplugin::route::Endpoint>,
}
