//! Median feeds: one thread per feed runs rounds at its interval through the
//! feed's median plugin and relay, each in-process or a LOOPP, and logs each
//! round's outcome.
//!
//! Setup of a feed, LOOPP side (redone whenever a round fails, e.g. after a
//! plugin restart):
//! 1. relay LOOPP: `PluginRelayer.NewRelayer{chainFile}` → `Relayer` →
//!    `NewPluginProvider{median}` → the provider (MedianContract +
//!    ContractTransmitter) on the relayer's broker;
//! 2. median LOOPP: the node serves, on the median plugin's broker, the
//!    provider's contract view (proxied: plugins never talk to each other),
//!    the data source and the juels source; `NewMedianFactory` →
//!    `NewReportingPlugin` per oracle.
//!
//! In-process, the same objects are used directly. The chain file's contract
//! config is written once, when the feed starts, before any relayer opens it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{select, Sender};

use crate::datasource::{self, DataSource, ReportTimestamp};
use crate::devchain::contract::{ConfigInput, Contract};
use crate::devchain::relayer::ContractTransmitterClient;
use crate::median::contract::MedianContractClient;
use crate::median::deadlines::Deadlines;
use crate::median::factory;
use crate::median::math::Bounds;
use crate::median::plugin::{FeedSettings, MedianContract, MedianPlugin, ReportingPlugin};
use crate::median::reporting::ReportingPluginClient;
use crate::median::rounds::{run_round, Oracle, Outcome, Transmitter};
use crate::supervisor::Link;

/// Deadline of the setup calls (NewRelayer, NewMedianFactory, ...).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub source: datasource::Spec,
    /// Where juels-per-fee-coin come from.
    pub juels: datasource::Spec,
    /// Oracles in the stand-in network.
    pub oracles: u8,
    /// Faulty oracles tolerated.
    pub f: u8,
    /// Time between rounds.
    pub interval: Duration,
    /// When to report.
    pub settings: FeedSettings,
    /// The contract's bounds.
    pub bounds: Bounds,
    /// Per-call deadlines (Query floor applied).
    pub deadlines: Deadlines,
}

/// Where one of a feed's plugins runs.
#[derive(Clone)]
pub enum Endpoint {
    /// In the node.
    InProcess,
    /// A LOOPP, reached through its supervisor's link.
    Loopp(Link),
}

/// The chain file of relay `relay` under `data_dir`.
pub fn chain_file(data_dir: &Path, relay: &str) -> PathBuf {
    data_dir.join(relay).join("chain.jsonl")
}

/// A running feed; dropping it stops the thread.
pub struct Feed {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Setup {
    oracles: Vec<Oracle>,
    transmitter: Arc<dyn Transmitter>,
    view: Arc<dyn MedianContract>,
}

struct Runner {
    cfg: FeedConfig,
    relay: Endpoint,
    median: Endpoint,
    file: PathBuf,
    digest: Vec<u8>,
    source: Arc<dyn DataSource>,
    juels: Arc<dyn DataSource>,
    in_process_contract: Option<Arc<Contract>>,
}

impl Feed {
    /// Writes the feed's contract config to the chain file (if it differs)
    /// and starts its rounds.
    pub fn start(
        cfg: FeedConfig,
        relay: Endpoint,
        median: Endpoint,
        data_dir: &Path,
    ) -> Result<Feed, String> {
        let file = chain_file(data_dir, &cfg.relay);
        std::fs::create_dir_all(file.parent().unwrap())
            .map_err(|e| format!("feed {}: cannot create {}: {e}", cfg.name, file.display()))?;
        let input = ConfigInput {
            signers: (0..cfg.oracles).map(|i| format!("oracle-{i}")).collect(),
            transmitters: (0..cfg.oracles)
                .map(|i| format!("transmitter-{i}"))
                .collect(),
            f: cfg.f,
            min_answer: cfg.bounds.min,
            max_answer: cfg.bounds.max,
        };
        let digest = {
            let contract = Contract::open(&file)
                .map_err(|e| format!("feed {}: {}: {e}", cfg.name, file.display()))?;
            let current = contract.latest_config().filter(|(_, c)| {
                c.f == input.f
                    && c.min_answer == input.min_answer
                    && c.max_answer == input.max_answer
                    && c.signers == input.signers
            });
            match current {
                Some((_, c)) => crate::wire::unhex(&c.digest),
                None => contract
                    .set_config(&input)
                    .map_err(|e| format!("feed {}: {}: {e}", cfg.name, file.display()))?
                    .to_vec(),
            }
        };
        let in_process_contract = match relay {
            Endpoint::InProcess => {
                Some(Arc::new(Contract::open(&file).map_err(|e| {
                    format!("feed {}: {}: {e}", cfg.name, file.display())
                })?))
            }
            Endpoint::Loopp(_) => None,
        };
        let runner = Runner {
            source: Arc::from(datasource::build(&cfg.source)?),
            juels: Arc::from(datasource::build(&cfg.juels)?),
            cfg,
            relay,
            median,
            file,
            digest,
            in_process_contract,
        };
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name(format!("feed-{}", runner.cfg.name))
            .spawn(move || runner.run(stop_rx))
            .map_err(|e| e.to_string())?;
        Ok(Feed {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops the feed and waits for its current round.
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Runner {
    fn setup(&self) -> Result<Setup, String> {
        type Codecs = (
            Arc<dyn crate::devchain::provider::ReportCodec>,
            Arc<dyn crate::devchain::provider::OnchainConfigCodec>,
        );
        use crate::proto::median_plugin::{NewMedianFactoryRequest, NewReportingPluginRequest};
        use crate::proto::median_plugin_grpc::{PluginMedianClient, ReportingPluginFactoryClient};
        use crate::proto::relayer::{NewPluginProviderRequest, NewRelayerRequest, RelayArgs};
        use crate::proto::relayer_grpc::{PluginRelayerClient, RelayerClient};
        let rpc =
            |what: &str, e: grpcio::Error| format!("{what}: {}", crate::error::rpc_status_text(&e));
        let (view, transmitter, codecs): (Arc<dyn MedianContract>, Arc<dyn Transmitter>, Codecs) =
            match &self.relay {
                Endpoint::InProcess => {
                    let c = self.in_process_contract.clone().expect("opened at start");
                    let dev = Arc::new(crate::devchain::provider::DevchainCodec);
                    (c.clone(), c, (dev.clone(), dev))
                }
                Endpoint::Loopp(link) => {
                    let (ch, broker) = (
                        link.channel(&self.cfg.relay).map_err(|e| e.to_string())?,
                        link.broker(&self.cfg.relay).map_err(|e| e.to_string())?,
                    );
                    let config = serde_json::json!({"chainFile": self.file}).to_string();
                    let r = PluginRelayerClient::new(ch)
                        .new_relayer(
                            &NewRelayerRequest {
                                config,
                                ..Default::default()
                            },
                            SETUP_TIMEOUT,
                        )
                        .map_err(|e| rpc("NewRelayer", e))?;
                    let relayer = RelayerClient::new(
                        broker
                            .dial(r.relayerID, SETUP_TIMEOUT)
                            .map_err(|e| e.to_string())?,
                    );
                    let args = RelayArgs {
                        providerType: "median".into(),
                        contractID: self.cfg.name.clone(),
                        ..Default::default()
                    };
                    let p = relayer
                        .new_plugin_provider(
                            &NewPluginProviderRequest {
                                relayArgs: Some(args).into(),
                                ..Default::default()
                            },
                            SETUP_TIMEOUT,
                        )
                        .map_err(|e| rpc("NewPluginProvider", e))?;
                    let provider = broker
                        .dial(p.pluginProviderID, SETUP_TIMEOUT)
                        .map_err(|e| e.to_string())?;
                    let codec = Arc::new(crate::devchain::provider::ProviderClient::new(
                        provider.clone(),
                        SETUP_TIMEOUT,
                    ));
                    (
                        Arc::new(MedianContractClient::new(
                            &self.cfg.relay,
                            provider.clone(),
                            SETUP_TIMEOUT,
                        )),
                        Arc::new(ContractTransmitterClient::new(
                            &self.cfg.relay,
                            provider,
                            SETUP_TIMEOUT,
                        )),
                        (codec.clone(), codec),
                    )
                }
            };
        let n = self.cfg.oracles;
        let oracles: Vec<Oracle> = match &self.median {
            Endpoint::InProcess => (0..n)
                .map(|i| {
                    let log = crate::keystore::LogErrors {
                        source: format!("feed::{}", self.cfg.name),
                    };
                    let p: Arc<dyn ReportingPlugin> = Arc::new(
                        MedianPlugin::new(
                            i,
                            self.cfg.f as usize,
                            self.cfg.bounds,
                            self.cfg.settings,
                            self.source.clone(),
                            self.juels.clone(),
                            view.clone(),
                        )
                        .with_error_log(Arc::new(log))
                        .with_codec(codecs.0.clone()),
                    );
                    (i, p)
                })
                .collect(),
            Endpoint::Loopp(link) => {
                let (ch, broker) = (
                    link.channel(&self.cfg.median).map_err(|e| e.to_string())?,
                    link.broker(&self.cfg.median).map_err(|e| e.to_string())?,
                );
                let (provider, ds, juels, errors) = (
                    broker.next_id(),
                    broker.next_id(),
                    broker.next_id(),
                    broker.next_id(),
                );
                let serve = |id, svc| broker.serve(id, vec![svc]).map_err(|e| e.to_string());
                // The provider, proxied: the relay's services, re-served by the node.
                broker
                    .serve(
                        provider,
                        vec![
                            crate::median::contract::server(view.clone()),
                            crate::devchain::provider::report_codec_server(codecs.0.clone()),
                            crate::devchain::provider::onchain_codec_server(codecs.1.clone()),
                        ],
                    )
                    .map_err(|e| e.to_string())?;
                serve(ds, datasource::server(self.source.clone()))?;
                serve(juels, datasource::server(self.juels.clone()))?;
                let log = crate::keystore::LogErrors {
                    source: format!("feed::{}", self.cfg.name),
                };
                serve(errors, crate::keystore::error_log_server(Arc::new(log)))?;
                let reply = PluginMedianClient::new(ch)
                    .new_median_factory(
                        &NewMedianFactoryRequest {
                            medianProviderID: provider,
                            contractID: self.cfg.name.clone(),
                            dataSourceID: ds,
                            juelsPerFeeCoinDataSourceID: juels,
                            errorLogID: errors,
                            ..Default::default()
                        },
                        SETUP_TIMEOUT,
                    )
                    .map_err(|e| rpc("NewMedianFactory", e))?;
                let fac = ReportingPluginFactoryClient::new(
                    broker
                        .dial(reply.reportingPluginFactoryID, SETUP_TIMEOUT)
                        .map_err(|e| e.to_string())?,
                );
                let mut oracles = Vec::new();
                for i in 0..n {
                    let cfg = factory::config(
                        &self.digest,
                        i,
                        u32::from(n),
                        u32::from(self.cfg.f),
                        self.cfg.bounds,
                        self.cfg.settings,
                        &self.cfg.deadlines.0,
                    );
                    let r = fac
                        .new_reporting_plugin(
                            &NewReportingPluginRequest {
                                reportingPluginConfig: Some(cfg).into(),
                                ..Default::default()
                            },
                            SETUP_TIMEOUT,
                        )
                        .map_err(|e| rpc("NewReportingPlugin", e))?;
                    let ch = broker
                        .dial(r.reportingPluginID, SETUP_TIMEOUT)
                        .map_err(|e| e.to_string())?;
                    oracles.push((
                        i,
                        Arc::new(ReportingPluginClient::new(&self.cfg.median, ch))
                            as Arc<dyn ReportingPlugin>,
                    ));
                }
                oracles
            }
        };
        Ok(Setup {
            oracles,
            transmitter,
            view,
        })
    }

    fn run(self, stop: crossbeam_channel::Receiver<()>) {
        let name = self.cfg.name.clone();
        let ticker = crossbeam_channel::tick(self.cfg.interval);
        let mut setup: Option<Setup> = None;
        let mut epoch: u32 = 0;
        loop {
            select! {
                recv(stop) -> _ => return,
                recv(ticker) -> _ => {}
            }
            if setup.is_none() {
                match self.setup() {
                    Ok(s) => {
                        let last = s
                            .view
                            .latest_transmission_details()
                            .ok()
                            .flatten()
                            .map_or(0, |(_, l)| l.epoch);
                        epoch = epoch.max(last);
                        log::info!(
                            "feed {name}: ready ({} oracles, f={})",
                            self.cfg.oracles,
                            self.cfg.f
                        );
                        setup = Some(s);
                    }
                    Err(e) => {
                        log::warn!("feed {name}: not ready: {e}");
                        crate::metrics::feed_round(&name, "not_ready");
                        continue;
                    }
                }
            }
            let s = setup.as_ref().expect("set above");
            epoch += 1;
            let ts = ReportTimestamp {
                config_digest: self.digest.clone(),
                epoch,
                round: 0,
            };
            let leader = epoch as usize % s.oracles.len();
            match run_round(
                &s.oracles,
                leader,
                &ts,
                self.cfg.f as usize,
                &self.cfg.deadlines,
                s.transmitter.as_ref(),
            ) {
                Outcome::Transmitted(v) => {
                    log::info!("feed {name}: epoch {epoch}: transmitted median {v}");
                    crate::metrics::feed_round(&name, "transmitted");
                }
                Outcome::NoReport(why) => {
                    log::info!("feed {name}: epoch {epoch}: no report: {why}");
                    crate::metrics::feed_round(&name, "no_report");
                }
                Outcome::Failed(e) => {
                    log::warn!("feed {name}: epoch {epoch}: round failed: {e}");
                    let outcome = if e.contains("DEADLINE_EXCEEDED") {
                        "deadline_exceeded"
                    } else {
                        "failed"
                    };
                    crate::metrics::feed_round(&name, outcome);
                    setup = None; // rebuilt next round (a plugin may have restarted)
                }
            }
        }
    }
}
