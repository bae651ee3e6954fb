//! A local round driver: a single-node stand-in for the OCR network, NOT the
//! OCR consensus protocol. n oracle instances of the median plugin run each
//! round: the leader's Query, every oracle's Observation, the leader's
//! Report, ShouldAcceptFinalizedReport (more than 2f must accept), the
//! leader's ShouldTransmitAcceptedReport, then Transmit to the contract.
//!
//! Every call has its own deadline ([`Deadlines`]); a call that misses it
//! fails (or, for one oracle's observation, drops that observation) in this
//! round only.
//!
//! A round is a future ([`round`]) that never blocks the thread polling
//! it: each phase's calls are sent without waiting (`<call>_async`), a
//! call that can only block runs on a pool thread ([`rpc::blocking`]), and
//! a phase's deadline is a [`crate::goplugin::timer`] deadline. So the node
//! polls a LOOPP round on the completion-queue thread its replies arrive
//! on ([`ReportingPlugin::spawner`]): a round holds no thread while it
//! waits, and a reply wakes no other thread. [`run_round`] waits for one
//! on the calling thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::goplugin::rpc::{self, Reply};
use crate::services::datasource::ReportTimestamp;
use crate::services::median::deadlines::Deadlines;
use crate::services::median::plugin::ReportingPlugin;
use crate::services::relay::provider::ReportCodec;
use crate::services::relay::ContractTransmitter;

/// How a round ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A report was transmitted with this median.
    Transmitted(i128),
    /// No report this round, and why.
    NoReport(String),
    /// The round failed, and why (a missed deadline, a refused transmission).
    Failed(String),
}

/// One call within `deadline` (see [`each`]), its error named `call`.
async fn within<T: Send + 'static>(
    call: &str,
    deadline: Duration,
    reply: Reply<T>,
) -> Result<T, String> {
    let mut out = each(vec![reply], deadline).await;
    out.pop()
        .expect("one result per call")
        .map_err(|e| format!("{call}: {e}"))
}

/// The calls' results in order, waited for together; a call not done
/// within `deadline` is a DEADLINE_EXCEEDED error (and is dropped: a gRPC
/// call is cancelled).
async fn each<T: Send + 'static>(
    calls: Vec<Reply<T>>,
    deadline: Duration,
) -> Vec<Result<T, String>> {
    rpc::join_until(calls, Instant::now() + deadline)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(format!("DEADLINE_EXCEEDED after {deadline:?}"))))
        .collect()
}

/// One oracle: its id and its plugin instance (in-process or over gRPC).
pub type Oracle = (u8, Arc<dyn ReportingPlugin>);

/// What one round did: its outcome, whether a report was made, and which
/// calls missed their deadlines (one entry per miss; an oracle's
/// Observation counts once per oracle).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// How it ended.
    pub outcome: Outcome,
    /// Whether the leader made a report.
    pub reported: bool,
    /// Calls that missed their deadline, by name (`Query`, `Observation`, ...).
    pub missed: Vec<&'static str>,
}

fn missed(e: &str) -> bool {
    e.contains("DEADLINE_EXCEEDED")
}

impl Round {
    /// The round failed at `call` with `e`: counts a missed deadline.
    fn fail(&mut self, call: &'static str, e: String) -> Outcome {
        if missed(&e) {
            self.missed.push(call);
        }
        Outcome::Failed(e)
    }
}

/// What a round needs: the feed's oracles and chain, and this round's
/// leader, timestamp and deadlines.
#[derive(Clone)]
pub struct Args {
    /// Every oracle's plugin instance.
    pub oracles: Vec<Oracle>,
    /// The leader, as an index into `oracles` (modulo their number).
    pub leader: usize,
    /// The round's timestamp.
    pub ts: ReportTimestamp,
    /// Faulty oracles tolerated.
    pub f: usize,
    /// Each phase's deadline.
    pub deadlines: Deadlines,
    /// Sends the report.
    pub transmitter: Arc<dyn ContractTransmitter>,
    /// Reads the transmitted report's median back, for the outcome.
    pub codec: Arc<dyn ReportCodec>,
}

/// Runs one round on this thread: [`round`], waited for here.
pub fn run_round(
    oracles: &[Oracle],
    leader: usize,
    ts: &ReportTimestamp,
    f: usize,
    deadlines: &Deadlines,
    transmitter: Arc<dyn ContractTransmitter>,
    codec: Arc<dyn ReportCodec>,
) -> Round {
    let args = Args {
        oracles: oracles.to_vec(),
        leader,
        ts: ts.clone(),
        f,
        deadlines: *deadlines,
        transmitter,
        codec,
    };
    rpc::wait(play(args, true))
}

/// Starts one round and calls `then` with it when it ends. A round with
/// an oracle over gRPC is polled on that client's completion-queue thread
/// ([`ReportingPlugin::spawner`]): it holds no thread while it waits, and
/// `then` runs there (it must not block). An in-process round runs on
/// this thread, `then` too, before `start` returns.
pub fn start(args: Args, then: impl FnOnce(Round) + Send + 'static) {
    match spawner(&args.oracles) {
        Some(spawner) => spawner.spawn(async move { then(round(args).await) }),
        None => then(rpc::wait(play(args, true))),
    }
}

/// Where a round of `oracles` is polled by [`start`]: the first gRPC
/// oracle's completion-queue thread; None when every oracle is in-process.
pub fn spawner(oracles: &[Oracle]) -> Option<crate::goplugin::rpc::Spawner> {
    oracles.iter().find_map(|(_, p)| p.spawner())
}

/// One round, as a future that never blocks the thread polling it.
pub async fn round(args: Args) -> Round {
    play(args, false).await
}

/// One round. On a thread that `may_block`, the chain's calls that only
/// block (an in-process relayer writing its chain file) are made there
/// and then; else they run on a pool thread.
async fn play(args: Args, may_block: bool) -> Round {
    let mut round = Round {
        outcome: Outcome::NoReport(String::new()),
        reported: false,
        missed: Vec::new(),
    };
    round.outcome = phases(&args, may_block, &mut round).await;
    round
}

async fn phases(args: &Args, may_block: bool, round: &mut Round) -> Outcome {
    let Args {
        oracles,
        leader,
        ts,
        f,
        deadlines,
        transmitter,
        codec,
    } = args;
    let (d, f) = (deadlines.0, *f);
    let lead = oracles[leader % oracles.len()].1.clone();
    let query = match within(
        "Query",
        d.query,
        rpc::sent_or_blocking(&lead, |p| p.query_async(ts, d.query), {
            let t = ts.clone();
            move |p| p.query(&t, d.query)
        }),
    )
    .await
    {
        Ok(q) => q,
        Err(e) => return round.fail("Query", e),
    };
    // Observations in parallel; one that misses its deadline is left out.
    let calls = oracles
        .iter()
        .map(|(id, o)| {
            let (id, t, q, dl) = (*id, ts.clone(), query.clone(), d.observation);
            let tagged = |r: Reply<Vec<u8>>| -> Reply<(u8, Vec<u8>)> {
                Box::pin(async move { r.await.map(|obs| (id, obs)) })
            };
            rpc::sent_or_blocking(
                o,
                |p| p.observation_async(ts, &query, dl).map(tagged),
                move |p| p.observation(&t, &q, dl).map(|obs| (id, obs)),
            )
        })
        .collect();
    let mut observations: Vec<(u8, Vec<u8>)> = Vec::new();
    for r in each(calls, d.observation).await {
        match r {
            Ok(observation) => observations.push(observation),
            Err(e) if !missed(&e) => {}
            Err(_) => round.missed.push("Observation"),
        }
    }
    // OCR's leader asks for a report only from more than 2f observations.
    if observations.len() <= 2 * f {
        return Outcome::NoReport(format!(
            "only {} observations in time; a report needs more than 2f = {}",
            observations.len(),
            2 * f
        ));
    }
    let report = match within(
        "Report",
        d.report,
        rpc::sent_or_blocking(
            &lead,
            |p| p.report_async(ts, &query, &observations, d.report),
            {
                let (t, q, o) = (ts.clone(), query.clone(), observations.clone());
                move |p| p.report(&t, &q, &o, d.report)
            },
        ),
    )
    .await
    {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Outcome::NoReport(
                "no report due (deviation, deltaC, request, or out of bounds)".into(),
            )
        }
        Err(e) => return round.fail("Report", e),
    };
    round.reported = true;
    // Every oracle decides in parallel, within one deadline.
    let calls = oracles
        .iter()
        .map(|(_, o)| {
            let (t, r, dl) = (ts.clone(), report.clone(), d.should_accept);
            rpc::sent_or_blocking(
                o,
                |p| p.should_accept_finalized_report_async(ts, &report, dl),
                move |p| p.should_accept_finalized_report(&t, &r, dl),
            )
        })
        .collect();
    let mut accepts = 0;
    for r in each(calls, d.should_accept).await {
        match r {
            Ok(true) => accepts += 1,
            Ok(false) => {}
            Err(e) if !missed(&e) => {}
            Err(_) => round.missed.push("ShouldAcceptFinalizedReport"),
        }
    }
    if accepts <= 2 * f {
        return Outcome::NoReport(format!(
            "only {accepts} oracles accepted the report; more than {} needed",
            2 * f
        ));
    }
    match within(
        "ShouldTransmitAcceptedReport",
        d.should_transmit,
        rpc::sent_or_blocking(
            &lead,
            |p| p.should_transmit_accepted_report_async(ts, &report, d.should_transmit),
            {
                let (t, r) = (ts.clone(), report.clone());
                move |p| p.should_transmit_accepted_report(&t, &r, d.should_transmit)
            },
        ),
    )
    .await
    {
        Ok(true) => {}
        Ok(false) => return Outcome::NoReport("the leader declined to transmit".into()),
        Err(e) => return round.fail("ShouldTransmitAcceptedReport", e),
    }
    // The median is read back for the outcome while the report is being
    // transmitted: the codec only decodes the report, so its answer does
    // not wait on the transmission, and a LOOPP round is one call shorter.
    let median = rpc::sent_or_blocking(codec, |c| c.median_from_report_async(&report), {
        let r = report.clone();
        move |c| c.median_from_report(&r)
    });
    // Transmit has no phase deadline: its own (a client's call timeout)
    // bounds it.
    let sent = if may_block {
        rpc::ready(transmitter.transmit(ts, &report))
    } else {
        rpc::sent_or_blocking(transmitter, |t| t.transmit_async(ts, &report), {
            let (ts, r) = (ts.clone(), report.clone());
            move |t| t.transmit(&ts, &r)
        })
    };
    if let Err(e) = sent.await {
        return round.fail("Transmit", format!("Transmit: {e}"));
    }
    match each(vec![median], READ_BACK)
        .await
        .pop()
        .expect("one result per call")
    {
        Ok(m) => Outcome::Transmitted(m),
        Err(e) => Outcome::Failed(format!("the transmitted report: {e}")),
    }
}

/// How long a round waits for the transmitted report's median read back,
/// at most. Only a backstop: the codec's call carries its own deadline
/// (its client's call timeout), and an in-process codec answers at once.
const READ_BACK: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devchain::contract::Contract;
    use crate::median::plugin::{FeedSettings, MedianPlugin};
    use crate::services::datasource::DataSource;
    use crate::services::median::deadlines::MaxDurations;
    use crate::services::median::Bounds;
    use crate::sources::{build, Spec};

    struct Slow(Duration);

    impl DataSource for Slow {
        fn observe(&self, _ts: &ReportTimestamp, _d: Duration) -> Result<i128, String> {
            std::thread::sleep(self.0);
            Ok(1)
        }
    }

    fn contract(name: &str) -> (Arc<Contract>, Vec<u8>, std::path::PathBuf) {
        let dir = crate::testutil::fresh_dir(&format!("rounds-{name}"));
        let (c, digest) = crate::testutil::configured_contract(&dir, -1_000_000, 1_000_000);
        (c, digest, dir)
    }

    fn deadlines(obs_ms: u64) -> Deadlines {
        let ms = Duration::from_millis;
        Deadlines::new(
            MaxDurations {
                query: ms(50),
                observation: ms(obs_ms),
                report: ms(500),
                should_accept: ms(500),
                should_transmit: ms(500),
            },
            ms(100),
        )
        .unwrap()
    }

    fn oracles(c: &Arc<Contract>, sources: Vec<Arc<dyn DataSource>>) -> Vec<Oracle> {
        let juels: Arc<dyn DataSource> = Arc::from(build(&Spec::Static { value: 7 }).unwrap());
        sources
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let p: Arc<dyn ReportingPlugin> = Arc::new(MedianPlugin::new(
                    i as u8,
                    1,
                    Bounds {
                        min: -1_000_000,
                        max: 1_000_000,
                    },
                    FeedSettings {
                        deviation_ppb: 0,
                        heartbeat: Duration::from_secs(3600),
                    },
                    s,
                    juels.clone(),
                    c.clone(),
                    Arc::new(crate::devchain::provider::DevchainCodec),
                ));
                (i as u8, p)
            })
            .collect()
    }

    #[test]
    fn rounds_transmit_the_median_of_the_oracles_observations() {
        let (c, digest, dir) = contract("median");
        let sources: Vec<Arc<dyn DataSource>> = (0..4)
            .map(|i| {
                Arc::from(
                    build(&Spec::Randomwalk {
                        seed: i,
                        start: 100_000,
                        step_ppm: 5000,
                    })
                    .unwrap(),
                )
            })
            .collect();
        let plugins = oracles(&c, sources.clone());
        let mut transmitted = Vec::new();
        for epoch in 1..=6u32 {
            let ts = ReportTimestamp {
                config_digest: digest.clone(),
                epoch,
                round: 1,
            };
            match run_round(
                &plugins,
                epoch as usize,
                &ts,
                1,
                &deadlines(500),
                c.clone(),
                Arc::new(crate::devchain::provider::DevchainCodec),
            )
            .outcome
            {
                Outcome::Transmitted(m) => {
                    let mut values: Vec<i128> = sources
                        .iter()
                        .map(|s| s.observe(&ts, Duration::from_secs(1)).unwrap())
                        .collect();
                    assert_eq!(
                        Some(m),
                        crate::median::math::median(&mut values),
                        "epoch {epoch}"
                    );
                    transmitted.push(m);
                }
                Outcome::NoReport(why) => assert!(why.contains("no report due"), "{why}"),
                Outcome::Failed(e) => panic!("epoch {epoch}: {e}"),
            }
        }
        assert!(!transmitted.is_empty());
        let on_chain = crate::testutil::medians_on_chain(&c);
        assert_eq!(
            on_chain, transmitted,
            "every transmitted median is on the chain, once"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_slow_oracle_is_left_out_and_a_slow_round_fails_alone() {
        let (c, digest, dir) = contract("slow");
        let fast = |v: i64| Arc::<dyn DataSource>::from(build(&Spec::Static { value: v }).unwrap());
        let slow: Arc<dyn DataSource> = Arc::new(Slow(Duration::from_millis(800)));
        let plugins = oracles(&c, vec![fast(10), fast(20), fast(30), slow.clone()]);
        let ts = |epoch| ReportTimestamp {
            config_digest: digest.clone(),
            epoch,
            round: 1,
        };
        let round = |plugins: &[Oracle], epoch| {
            run_round(
                plugins,
                0,
                &ts(epoch),
                1,
                &deadlines(200),
                c.clone(),
                Arc::new(crate::devchain::provider::DevchainCodec),
            )
            .outcome
        };
        let t = std::time::Instant::now();
        // 3 of 4 observations arrive in time: more than 2f = 2, so it reports.
        assert_eq!(round(&plugins, 1), Outcome::Transmitted(20));
        assert!(
            t.elapsed() < Duration::from_millis(800),
            "did not wait for the slow oracle"
        );
        // With two slow oracles only 2 observations remain: no report, next round fine.
        let plugins = oracles(&c, vec![fast(10), fast(50), slow.clone(), slow]);
        assert!(matches!(round(&plugins, 2), Outcome::NoReport(_)));
        let plugins = oracles(&c, vec![fast(10), fast(50), fast(60), fast(70)]);
        assert_eq!(round(&plugins, 3), Outcome::Transmitted(60));
        // A stale round is not transmitted again.
        assert!(matches!(round(&plugins, 3), Outcome::NoReport(_)));
        assert_eq!(c.transmissions().unwrap().len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Rounds over `loop.ReportingPlugin` on a real socket, against the same
/// rounds in-process.
#[cfg(test)]
mod grpc_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::devchain::contract::Contract;
    use crate::median::plugin::{FeedSettings, MedianPlugin};
    use crate::services::datasource::{DataSource, ReportTimestamp};
    use crate::services::median::deadlines::{Deadlines, MaxDurations};
    use crate::services::median::plugin::ReportingPlugin;
    use crate::services::median::reporting::{server, ReportingPluginClient};
    use crate::services::median::Bounds;
    use crate::sources::{build, Spec};

    fn contract(dir: &std::path::Path) -> (Arc<Contract>, Vec<u8>) {
        crate::testutil::configured_contract(dir, i128::MIN, i128::MAX)
    }

    fn plugin(
        c: &Arc<Contract>,
        oracle: u8,
        source: Arc<dyn DataSource>,
    ) -> Arc<dyn ReportingPlugin> {
        Arc::new(MedianPlugin::new(
            oracle,
            1,
            Bounds {
                min: i128::MIN,
                max: i128::MAX,
            },
            FeedSettings {
                deviation_ppb: 0,
                heartbeat: Duration::from_secs(3600),
            },
            source,
            Arc::from(build(&Spec::Static { value: 3 }).unwrap()),
            c.clone(),
            Arc::new(crate::devchain::provider::DevchainCodec),
        ))
    }

    fn deadlines(ms: u64) -> Deadlines {
        let d = Duration::from_millis(ms);
        Deadlines::new(
            MaxDurations {
                query: d,
                observation: d,
                report: d,
                should_accept: d,
                should_transmit: d,
            },
            Duration::from_millis(100),
        )
        .unwrap()
    }

    struct Slow;

    impl DataSource for Slow {
        fn observe(&self, _ts: &ReportTimestamp, _d: Duration) -> Result<i128, String> {
            std::thread::sleep(Duration::from_millis(1500));
            Ok(0)
        }
    }

    /// The devchain codec, saying when a median is asked of it.
    struct Telling(crossbeam_channel::Sender<()>);

    impl ReportCodec for Telling {
        fn build_report(
            &self,
            obs: &[crate::services::relay::provider::ParsedObservation],
        ) -> Result<Vec<u8>, String> {
            crate::devchain::provider::DevchainCodec.build_report(obs)
        }
        fn median_from_report(&self, report: &[u8]) -> Result<i128, String> {
            let _ = self.0.try_send(());
            crate::devchain::provider::DevchainCodec.median_from_report(report)
        }
        fn max_report_length(&self, n: usize) -> Result<usize, String> {
            crate::devchain::provider::DevchainCodec.max_report_length(n)
        }
    }

    /// The contract, transmitting only once the codec has been asked for
    /// the report's median (or after 5 s), and saying which it was.
    struct Waiting {
        contract: Arc<Contract>,
        asked: crossbeam_channel::Receiver<()>,
        saw_it: std::sync::atomic::AtomicBool,
    }

    impl ContractTransmitter for Waiting {
        fn transmit(&self, ts: &ReportTimestamp, report: &[u8]) -> Result<(), String> {
            let asked = self.asked.recv_timeout(Duration::from_secs(5)).is_ok();
            self.saw_it
                .store(asked, std::sync::atomic::Ordering::SeqCst);
            ContractTransmitter::transmit(&*self.contract, ts, report)
        }
        fn latest_config_digest_and_epoch(&self) -> Result<(Vec<u8>, u32), String> {
            ContractTransmitter::latest_config_digest_and_epoch(&*self.contract)
        }
        fn from_account(&self) -> Result<String, String> {
            ContractTransmitter::from_account(&*self.contract)
        }
    }

    /// The node reads the transmitted report's median back from a codec
    /// behind gRPC while the report is transmitted, not after: the codec
    /// has the call before the transmission ends, and the outcome is the
    /// median on the chain.
    #[test]
    fn the_median_is_read_back_while_the_report_is_transmitted() {
        let dir = crate::testutil::TempDir::new("read-back");
        let (c, digest) = contract(&dir.0);
        let (tx, asked) = crossbeam_channel::bounded(1);
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
        broker
            .serve(
                1,
                vec![crate::services::relay::provider::report_codec_server(
                    Arc::new(Telling(tx)),
                )],
            )
            .unwrap();
        let codec = crate::services::relay::provider::ProviderClient::new(
            broker.local_channel(1),
            Duration::from_secs(2),
        );
        let oracles: Vec<Oracle> = (0..4u8)
            .map(|i| {
                let v = Arc::from(
                    build(&Spec::Static {
                        value: 10 * (i as i64 + 1),
                    })
                    .unwrap(),
                );
                (i, plugin(&c, i, v))
            })
            .collect();
        let transmitter = Arc::new(Waiting {
            contract: c.clone(),
            asked,
            saw_it: std::sync::atomic::AtomicBool::new(false),
        });
        let ts = ReportTimestamp {
            config_digest: digest,
            epoch: 1,
            round: 1,
        };
        let round = run_round(
            &oracles,
            0,
            &ts,
            1,
            &deadlines(2000),
            transmitter.clone(),
            Arc::new(codec),
        );
        let on_chain = crate::testutil::medians_on_chain(&c);
        assert_eq!(on_chain.len(), 1, "{:?}", round.outcome);
        assert_eq!(round.outcome, Outcome::Transmitted(on_chain[0]));
        assert!(
            transmitter.saw_it.load(std::sync::atomic::Ordering::SeqCst),
            "the median was asked only after the transmission"
        );
        drop(broker);
    }

    /// The same rounds, once with every oracle in-process and once with
    /// every oracle behind gRPC on a unix socket: the same transmissions.
    /// A slow oracle behind gRPC is cut off at the Observation deadline.
    #[test]
    fn grpc_oracles_give_the_same_transmissions_as_in_process_ones() {
        let base = crate::testutil::fresh_dir("reporting");
        let walks = || -> Vec<Arc<dyn DataSource>> {
            (0..4)
                .map(|i| {
                    Arc::from(
                        build(&Spec::Randomwalk {
                            seed: 100 + i,
                            start: 1000,
                            step_ppm: 5000,
                        })
                        .unwrap(),
                    )
                })
                .collect()
        };
        let run = |name: &str, over_grpc: bool| -> Vec<i128> {
            let dir = base.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let (c, digest) = contract(&dir);
            let broker = crate::goplugin::broker::Broker::new(
                crate::goplugin::sockdir::SocketDir::create().unwrap(),
            );
            let oracles: Vec<Oracle> = walks()
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let p = plugin(&c, i as u8, s);
                    if !over_grpc {
                        return (i as u8, p);
                    }
                    let id = broker.next_id();
                    broker.serve(id, vec![server(p)]).unwrap();
                    let ch = broker.local_channel(id);
                    (
                        i as u8,
                        Arc::new(ReportingPluginClient::new("median", ch))
                            as Arc<dyn ReportingPlugin>,
                    )
                })
                .collect();
            for epoch in 1..=5 {
                let ts = ReportTimestamp {
                    config_digest: digest.clone(),
                    epoch,
                    round: 0,
                };
                let out = run_round(
                    &oracles,
                    epoch as usize,
                    &ts,
                    1,
                    &deadlines(2000),
                    c.clone(),
                    Arc::new(crate::devchain::provider::DevchainCodec),
                )
                .outcome;
                assert!(
                    !matches!(out, Outcome::Failed(_)),
                    "{name} epoch {epoch}: {out:?}"
                );
            }
            broker.close();
            crate::testutil::medians_on_chain(&c)
        };
        let local = run("local", false);
        assert!(local.len() >= 3, "{local:?}");
        assert_eq!(run("grpc", true), local);

        // A slow oracle over gRPC: left out at the Observation deadline.
        let dir = base.join("slow");
        std::fs::create_dir_all(&dir).unwrap();
        let (c, digest) = contract(&dir);
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
        broker
            .serve(1, vec![server(plugin(&c, 3, Arc::new(Slow)))])
            .unwrap();
        let ch = broker.local_channel(1);
        let fixed =
            |v: i64| Arc::<dyn DataSource>::from(build(&Spec::Static { value: v }).unwrap());
        let oracles: Vec<Oracle> = vec![
            (0, plugin(&c, 0, fixed(1))),
            (1, plugin(&c, 1, fixed(2))),
            (2, plugin(&c, 2, fixed(3))),
            (3, Arc::new(ReportingPluginClient::new("median", ch))),
        ];
        let ts = ReportTimestamp {
            config_digest: digest,
            epoch: 1,
            round: 0,
        };
        let t = std::time::Instant::now();
        assert_eq!(
            run_round(
                &oracles,
                0,
                &ts,
                1,
                &deadlines(300),
                c.clone(),
                Arc::new(crate::devchain::provider::DevchainCodec)
            ),
            Round {
                outcome: Outcome::Transmitted(2),
                reported: true,
                missed: vec!["Observation"],
            },
            "the slow oracle's observation is the one miss"
        );
        assert!(t.elapsed() < Duration::from_millis(1500));
        broker.close();
        let _ = std::fs::remove_dir_all(&base);
    }
}
