//! Median feeds: each feed runs rounds at its interval through its median
//! plugin and relayer and logs each round's outcome; the rounds of all
//! feeds run on the [`scheduler`]'s fixed set of threads.
//!
//! A feed holds its relayer as `Arc<dyn PluginRelayer>` and its median
//! plugin as `Arc<dyn PluginMedian>`: in-process implementations or gRPC
//! client adapters for LOOPPs ([`crate::services::relay`], [`crate::median::factory`]),
//! one code path either way. Setup (redone whenever a round fails, e.g.
//! after a plugin restart):
//! 1. `new_relayer({chainFile, deploy}, keystore, CSA keystore)` →
//!    `new_plugin_provider(median)`:
//!    the median provider (config tracker, transmitter, contract view,
//!    codecs); the config digest comes from its tracker;
//! 2. `new_median_factory(provider, data source, juels and gas price
//!    sources, error log, deviation function)`
//!    → `new_reporting_plugin` per oracle. For a median LOOPP the node
//!    serves the provider on the median plugin's broker; a LOOPP relayer's
//!    provider is forwarded instead when both plugins route (the median
//!    plugin calls the relayer's object itself, see `goplugin::route`), else
//!    proxied through the node.
//!
//! The node never opens a relayer's files: the feed's contract (its oracles,
//! f and bounds) is deployed by the relayer itself, from the `deploy`
//! section of the relayer config the node sends with NewRelayer (a no-op
//! when the chain has that config already).

pub mod rounds;
pub mod scheduler;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::median::libocr::OffchainConfig;
use crate::node::feeds::rounds::{Oracle, Outcome, Round};
use crate::services::datasource::{DataSource, ReportTimestamp};
use crate::services::keystore::Keystore;
use crate::services::median::deadlines::Deadlines;
use crate::services::median::factory::{
    MedianFactoryArgs, PluginMedian, ReportingPluginConfig, ReportingPluginFactory,
};
use crate::services::median::plugin::MedianContract;
use crate::services::median::Bounds;
use crate::services::relay::provider::ReportCodec;
use crate::services::relay::{ContractTransmitter, PluginArgs, PluginRelayer, RelayArgs, Relayer};
use crate::sources;

/// Deadline of the setup calls (NewRelayer, NewMedianFactory, ...). It
/// outlasts a plugin's broker dial (go-plugin's and ours wait 5 s for a
/// service id): a plugin that cannot dial a service the node named answers
/// with its own error, naming the service, before this deadline, instead of
/// both running out together and leaving only DEADLINE_EXCEEDED.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

const _: () = assert!(
    SETUP_TIMEOUT.as_millis() >= 2 * crate::goplugin::broker::DEFAULT_DIAL_TIMEOUT.as_millis()
);

/// A feed, resolved from the job file.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// Its name.
    pub name: String,
    /// The relay plugin's name.
    pub relay: String,
    /// The median plugin's name.
    pub median: String,
    /// Where values come from.
    pub source: sources::Spec,
    /// Where juels-per-fee-coin come from.
    pub juels: sources::Spec,
    /// Where the gas price (in the chain's smallest unit) comes from.
    pub gas_price: sources::Spec,
    /// A custom deviation function for the median plugin
    /// (`deviationFuncDefinition`, a JSON object), passed through.
    pub deviation_func: Option<serde_json::Value>,
    /// Oracles in the stand-in network.
    pub oracles: u8,
    /// Faulty oracles tolerated.
    pub f: u8,
    /// Time between rounds.
    pub interval: Duration,
    /// When to report and accept: libocr's offchain config.
    pub offchain: OffchainConfig,
    /// The contract's bounds.
    pub bounds: Bounds,
    /// Per-call deadlines (Query floor applied).
    pub deadlines: Deadlines,
}

/// The chain file of feed `feed` on relay `relay` under `data_dir`: one
/// contract per feed, so feeds sharing a relay never share a config.
pub fn chain_file(data_dir: &Path, relay: &str, feed: &str) -> PathBuf {
    data_dir.join(relay).join(format!("{feed}.jsonl"))
}

/// Makes the data directory if it is missing and checks that files can be
/// written in it (one is made, synced and removed), then makes the node's
/// keys there: run before anything starts, so an unusable directory is a
/// configuration error naming it, not a feed that fails later.
pub fn prepare_data_dir(dir: &Path) -> Result<(), String> {
    use std::io::Write;
    let shown = dir.display();
    let fix = "make it a writable directory, or point data_dir in the job file at one";
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("data_dir {shown}: cannot create it: {e}; {fix}"))?;
    let probe = dir.join(format!(".loopp-write-check-{}", std::process::id()));
    let written = std::fs::File::create(&probe)
        .and_then(|mut f| f.write_all(b"loopp").and_then(|_| f.sync_all()));
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| format!("data_dir {shown}: cannot write in it: {e}; {fix}"))?;
    use crate::node::keystore::{DevKeystore, CSA_SECRET_FILE, SECRET_FILE};
    DevKeystore::open(&dir.join(SECRET_FILE), Vec::new())?;
    DevKeystore::open_csa(&dir.join(CSA_SECRET_FILE))?;
    Ok(())
}

/// A running feed; dropping it takes it out of the scheduler (after its
/// round in progress).
pub struct Feed {
    entry: scheduler::Entry,
}

/// What a feed's rounds run on: its plugins wired up; rebuilt after a
/// failed round.
pub struct Setup {
    digest: Vec<u8>,
    oracles: Vec<Oracle>,
    transmitter: Arc<dyn ContractTransmitter>,
    codec: Arc<dyn ReportCodec>,
    view: Arc<dyn MedianContract>,
    // Held for the servers a LOOPP client keeps up for the plugins (the
    // keystore, the proxied provider, the data sources).
    _relayer: Arc<dyn Relayer>,
    _factory: Arc<dyn ReportingPluginFactory>,
}

/// What the node gives a feed's plugins: its keys and its data sources.
#[derive(Clone)]
pub struct Inputs {
    /// The transmit keys (served to the relayer).
    pub keystore: Arc<dyn Keystore>,
    /// The node's CSA key (served to the relayer).
    pub csa_keystore: Arc<dyn Keystore>,
    /// Values (served to the median plugin).
    pub source: Arc<dyn DataSource>,
    /// Juels per fee coin (served to the median plugin).
    pub juels: Arc<dyn DataSource>,
    /// The gas price (served to the median plugin).
    pub gas_price: Arc<dyn DataSource>,
}

impl Inputs {
    /// The keys kept under `data_dir` and the sources `cfg` names.
    pub fn open(cfg: &FeedConfig, data_dir: &Path) -> Result<Inputs, String> {
        use crate::node::keystore::{DevKeystore, CSA_SECRET_FILE, SECRET_FILE};
        let keystore = DevKeystore::open(&data_dir.join(SECRET_FILE), transmitters(cfg))?;
        let csa = DevKeystore::open_csa(&data_dir.join(CSA_SECRET_FILE))?;
        Ok(Inputs {
            keystore: Arc::new(keystore),
            csa_keystore: Arc::new(csa),
            source: Arc::from(sources::build(&cfg.source)?),
            juels: Arc::from(sources::build(&cfg.juels)?),
            gas_price: Arc::from(sources::build(&cfg.gas_price)?),
        })
    }
}

struct Runner {
    cfg: FeedConfig,
    relay: Arc<dyn PluginRelayer>,
    median: Arc<dyn PluginMedian>,
    file: PathBuf,
    inputs: Inputs,
    setup: Option<Setup>,
    /// The last round failed in a way a new setup may mend (a plugin
    /// restarted, a refused transmission): the setup is dropped and built
    /// again on a worker before the next round. Never dropped where the
    /// round ended, which may be a completion-queue thread: dropping a
    /// setup stops what it served, which may wait for that thread.
    stale: bool,
    epoch: u32,
    /// While a plugin restarts, every round fails the same way: the error
    /// and how many rounds it cost, said once.
    not_ready: Option<(String, u64)>,
}

impl Feed {
    /// Starts the feed's rounds on `scheduler` (its contract is deployed by
    /// the relayer at the first setup).
    pub fn start(
        cfg: FeedConfig,
        relay: Arc<dyn PluginRelayer>,
        median: Arc<dyn PluginMedian>,
        data_dir: &Path,
        scheduler: &scheduler::Scheduler,
    ) -> Result<Feed, String> {
        let file = chain_file(data_dir, &cfg.relay, &cfg.name);
        std::fs::create_dir_all(data_dir).map_err(|e| {
            format!(
                "feed {}: cannot create {}: {e}",
                cfg.name,
                data_dir.display()
            )
        })?;
        let inputs = Inputs::open(&cfg, data_dir).map_err(|e| format!("feed {}: {e}", cfg.name))?;
        let runner = Runner {
            cfg,
            relay,
            median,
            file,
            inputs,
            setup: None,
            stale: false,
            epoch: 0,
            not_ready: None,
        };
        let interval = runner.cfg.interval;
        Ok(Feed {
            entry: scheduler.add(Box::new(runner), interval),
        })
    }

    /// Stops the feed and waits for its current round.
    pub fn stop(self) {
        self.entry.remove();
    }
}

/// The transmitter accounts of feed `cfg`'s oracles.
fn transmitters(cfg: &FeedConfig) -> Vec<String> {
    (0..cfg.oracles)
        .map(|i| format!("transmitter-{i}"))
        .collect()
}

/// The relayer config for feed `cfg` on the chain `file`: where its
/// contract lives and the contract config to deploy there (its oracles, f
/// and bounds).
pub fn relayer_config(cfg: &FeedConfig, file: &Path) -> String {
    serde_json::json!({
        "chainFile": file,
        "deploy": {
            "signers": (0..cfg.oracles).map(|i| format!("oracle-{i}")).collect::<Vec<_>>(),
            "transmitters": transmitters(cfg),
            "f": cfg.f,
            "minAnswer": cfg.bounds.min.to_string(),
            "maxAnswer": cfg.bounds.max.to_string(),
        },
    })
    .to_string()
}

impl Setup {
    /// Relayer on the chain `file`, provider, factory, one reporting plugin
    /// per oracle: the same calls whether each plugin runs in the node or as
    /// a LOOPP.
    pub fn build(
        cfg: &FeedConfig,
        relay: &dyn PluginRelayer,
        median: &dyn PluginMedian,
        file: &Path,
        inputs: &Inputs,
    ) -> Result<Setup, String> {
        let name = &cfg.name;
        let keystore = &inputs.keystore;
        let relayer = relay.new_relayer(
            &relayer_config(cfg, file),
            Some(keystore.clone()),
            Some(inputs.csa_keystore.clone()),
        )?;
        let args = RelayArgs {
            contract_id: name.clone(),
            provider_type: "median".into(),
            ..Default::default()
        };
        let plugin = PluginArgs {
            transmitter_id: keystore.accounts()?.into_iter().next().unwrap_or_default(),
            plugin_config: Vec::new(),
        };
        let provider = relayer.new_plugin_provider(&args, &plugin)?;
        let (_, digest) = provider.config.tracker.latest_config_details()?;
        let onchain_config = provider.onchain_codec.encode(cfg.bounds)?;
        let errors = Arc::new(crate::services::keystore::LogErrors {
            source: format!("feed::{name}"),
        });
        let factory = median.new_median_factory(MedianFactoryArgs {
            provider: provider.clone(),
            contract_id: name.clone(),
            data_source: inputs.source.clone(),
            juels_per_fee_coin: inputs.juels.clone(),
            gas_price_subunits: inputs.gas_price.clone(),
            error_log: errors,
            deviation_func: cfg
                .deviation_func
                .as_ref()
                .map(|d| d.to_string().into_bytes()),
        })?;
        let mut oracles = Vec::new();
        for i in 0..cfg.oracles {
            let (plugin, _) = factory.new_reporting_plugin(&ReportingPluginConfig {
                config_digest: digest.clone(),
                oracle_id: i,
                n: cfg.oracles,
                f: cfg.f,
                onchain_config: onchain_config.clone(),
                offchain_config: cfg.offchain.encode(),
                estimated_round_interval: cfg.interval,
                max: cfg.deadlines.0,
            })?;
            oracles.push((i, plugin));
        }
        Ok(Setup {
            digest,
            oracles,
            transmitter: provider.transmitter,
            codec: provider.report_codec,
            view: provider.contract,
            _relayer: relayer,
            _factory: factory,
        })
    }

    /// The epoch of the contract's latest transmission (0 before any).
    pub fn latest_epoch(&self) -> u32 {
        self.view
            .latest_transmission_details()
            .ok()
            .flatten()
            .map_or(0, |(_, l)| l.epoch)
    }

    /// What the round of `epoch` needs (leader: epoch mod n).
    fn args(&self, cfg: &FeedConfig, epoch: u32) -> rounds::Args {
        rounds::Args {
            oracles: self.oracles.clone(),
            leader: epoch as usize % self.oracles.len(),
            ts: ReportTimestamp {
                config_digest: self.digest.clone(),
                epoch,
                round: 0,
            },
            f: cfg.f as usize,
            deadlines: cfg.deadlines,
            transmitter: self.transmitter.clone(),
            codec: self.codec.clone(),
        }
    }

    /// Where this feed's rounds are polled, if not on the thread that
    /// starts them ([`rounds::start`]).
    fn spawner(&self) -> Option<crate::goplugin::rpc::Spawner> {
        rounds::spawner(&self.oracles)
    }

    /// Runs the round of `epoch` as the node does ([`rounds::start`]) and
    /// waits here for it.
    pub fn round(&self, cfg: &FeedConfig, epoch: u32) -> Round {
        self.timed_round(cfg, epoch).0
    }

    /// [`Setup::round`], and how long it took as the node times its
    /// rounds (`loopp_feed_round_duration_seconds`): from its start until
    /// its outcome is known, where it ends (for a LOOPP round, the thread
    /// its last answer arrived on), not until this thread has woken up.
    pub fn timed_round(&self, cfg: &FeedConfig, epoch: u32) -> (Round, std::time::Duration) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let t0 = std::time::Instant::now();
        rounds::start(self.args(cfg, epoch), move |round| {
            let _ = tx.send((round, t0.elapsed()));
        });
        rx.recv().expect("a round ends with its outcome")
    }
}

impl Runner {
    fn setup(&self) -> Result<Setup, String> {
        Setup::build(
            &self.cfg,
            self.relay.as_ref(),
            self.median.as_ref(),
            &self.file,
            &self.inputs,
        )
    }
}

impl scheduler::Ticked for Runner {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn starts_at_once(&self) -> bool {
        // Set up, with oracles over gRPC: the round is polled on their
        // completion-queue thread ([`rounds::start`]).
        !self.stale && self.setup.as_ref().is_some_and(|s| s.spawner().is_some())
    }

    /// One round: set up first when needed (a failed set-up costs this
    /// round), then run it and log its outcome.
    fn tick(mut self: Box<Self>, done: scheduler::Done) {
        if std::mem::take(&mut self.stale) {
            self.setup = None;
        }
        if self.setup.is_none() {
            let name = self.cfg.name.clone();
            match self.setup() {
                Ok(s) => {
                    self.epoch = self.epoch.max(s.latest_epoch());
                    let skipped = self.not_ready.take().map_or(0, |(_, n)| n);
                    log::info!(
                        "feed {name}: ready ({} oracles, f={}){}",
                        self.cfg.oracles,
                        self.cfg.f,
                        match skipped {
                            0 => String::new(),
                            n => format!(" after {n} skipped rounds"),
                        }
                    );
                    self.setup = Some(s);
                }
                Err(e) => {
                    crate::node::metrics::feed_not_ready(&name);
                    match &mut self.not_ready {
                        Some((last, n)) if *last == e => {
                            *n += 1;
                            log::debug!("feed {name}: still not ready: {e}");
                        }
                        _ => {
                            log::warn!("feed {name}: not ready: {e}");
                            self.not_ready = Some((e, 1));
                        }
                    }
                    return done.finish(self);
                }
            }
        }
        let s = self.setup.as_ref().expect("set above");
        self.epoch += 1;
        let (epoch, t0) = (self.epoch, std::time::Instant::now());
        let args = s.args(&self.cfg, epoch);
        rounds::start(args, move |round| {
            self.ended(epoch, t0.elapsed(), round);
            done.finish(self)
        });
    }
}

impl Runner {
    /// Records and logs round `epoch`; after a failed round that missed
    /// no deadline the setup is built again before the next (`stale`).
    fn ended(&mut self, epoch: u32, took: Duration, round: Round) {
        let name = &self.cfg.name;
        crate::node::metrics::feed_round(name, &round, took);
        match round.outcome {
            Outcome::Transmitted(v) => {
                log::info!("feed {name}: epoch {epoch}: transmitted median {v}");
            }
            Outcome::NoReport(why) => {
                log::info!("feed {name}: epoch {epoch}: no report: {why}");
            }
            Outcome::Failed(e) => {
                log::warn!("feed {name}: epoch {epoch}: round failed: {e}");
                // A missed deadline costs this round only.
                if round.missed.is_empty() {
                    self.stale = true;
                }
            }
        }
    }
}
