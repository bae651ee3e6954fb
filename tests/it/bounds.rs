//! Bounds a plugin cannot push past, with real plugin processes: the size
//! of a message, and how many calls it may have running in what the host
//! serves it (its lane).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loopp::example::{echo, text};
use loopp::goplugin::call::{Ctx, Sink};
use loopp::goplugin::host::Client;
use loopp::goplugin::rpc;
use loopp::proto::example::{BrokerId, Text};
use loopp::proto::example_grpc::{offer_example, Example, ExampleClient};

use crate::util::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn a_reply_over_the_message_bound_is_refused_naming_plugin_method_and_setting() {
    let sandbox = Sandbox::new("bounds-msg");
    // The plugin may send 16 MiB; the host takes 64 KiB.
    let mut small = test_plugin("big", "big-echo", &sandbox);
    small.max_message = 64 << 10;
    small.env.push((
        rpc::MAX_MESSAGE_VAR.into(),
        (16u32 << 20).to_string().into(),
    ));
    let mut client = Client::start(&small).expect("start");
    let ex = ExampleClient::new(client.channel().clone());
    let err = echo("big", &ex, "hi", T).unwrap_err().to_string();
    for want in [
        "plugin big: /loopp.example.Example/Echo failed: RESOURCE_EXHAUSTED",
        "larger than max",
        "rpc.max_message_bytes",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    // The plugin is fine, and so is a call whose reply fits.
    client.ping().expect("the plugin still answers");
    client.kill();
    // With the default bound (16 MiB) the same reply arrives.
    let mut client = Client::start(&test_plugin("big2", "big-echo", &sandbox)).expect("start");
    let ex = ExampleClient::new(client.channel().clone());
    assert_eq!(echo("big2", &ex, "hi", T).unwrap().len(), 200_002);
    client.kill();
}

/// An Example whose Echo blocks for a while, on a pool thread (as the
/// node's keystore and data sources do), counting how many run at once.
#[derive(Clone)]
struct SlowEcho {
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Example for SlowEcho {
    fn echo(&mut self, ctx: Ctx, req: Text, sink: Sink<Text>) {
        let (running, peak) = (self.running.clone(), self.peak.clone());
        rpc::respond_blocking(&ctx, sink, move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            // Long enough that all calls of a burst arrive while the first run.
            std::thread::sleep(Duration::from_secs(1));
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(text(&format!("slow {}", req.value)))
        });
    }
}

/// Serves a SlowEcho for `client`'s plugin, in its lane; returns the id.
fn serve_slow(client: &Client, slow: &SlowEcho) -> u32 {
    let broker = client.broker();
    let _lane = broker.enter_lane();
    let id = broker.next_id();
    broker
        .serve(id, vec![offer_example(slow.clone())])
        .expect("serve");
    id
}

/// `n` CallEcho at once: each makes the plugin call back a SlowEcho the
/// host serves it on an id of its own (an id is dialed once).
fn call_back(client: &Client, slow: &SlowEcho, n: usize) -> Vec<Result<String, String>> {
    let ids: Vec<u32> = (0..n).map(|_| serve_slow(client, slow)).collect();
    let threads: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let ex = ExampleClient::new(client.channel().clone());
            std::thread::spawn(move || {
                ex.call_echo(
                    &BrokerId {
                        value: id,
                        ..Default::default()
                    },
                    T,
                )
                .map(|t| t.value)
                .map_err(|e| loopp::goplugin::error::rpc_status_text(&e))
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// 12 calls back at once against a bound of 2 running and 3 waiting: 5
/// answered, never more than 2 together, and 7 refused at once with
/// RESOURCE_EXHAUSTED and every text of `wants`.
#[track_caller]
fn twelve_against_two_and_three(client: &Client, slow: &SlowEcho, wants: &[&str]) {
    let results = call_back(client, slow, 12);
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(ok, 5, "{results:?}");
    assert_eq!(refused.len(), 7, "{results:?}");
    for e in &refused {
        assert!(e.contains("RESOURCE_EXHAUSTED"), "{e}");
        for want in wants {
            assert!(e.contains(want), "missing {want:?} in {e}");
        }
    }
    assert_eq!(
        slow.peak.load(Ordering::SeqCst),
        2,
        "more calls ran at once than the bound"
    );
}

fn rejected(plugin: &str) -> f64 {
    let (page, _) = loopp::goplugin::metrics::encode();
    let page = String::from_utf8(page).unwrap();
    let prefix = format!("loopp_served_calls_rejected_total{{plugin=\"{plugin}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

#[test]
fn a_plugin_over_its_call_bound_gets_resource_exhausted_and_others_do_not_notice() {
    let sandbox = Sandbox::new("bounds-lane");
    let mut greedy = test_plugin("greedy", "serve", &sandbox);
    greedy.concurrent_calls = 2;
    greedy.queued_calls = 3;
    let mut greedy = Client::start(&greedy).expect("start greedy");
    let mut other = Client::start(&test_plugin("calm", "serve", &sandbox)).expect("start calm");
    let slow = SlowEcho {
        running: Arc::new(AtomicUsize::new(0)),
        peak: Arc::new(AtomicUsize::new(0)),
    };
    let calm = SlowEcho {
        running: Arc::new(AtomicUsize::new(0)),
        peak: Arc::new(AtomicUsize::new(0)),
    };
    let other_ids: Vec<u32> = (0..4).map(|_| serve_slow(&other, &calm)).collect();
    let before = rejected("greedy");

    // 12 calls back at once from the greedy plugin, 4 from the calm one.
    let calm_calls = {
        let other_ch = other.channel().clone();
        std::thread::spawn(move || {
            let ex = ExampleClient::new(other_ch);
            other_ids
                .into_iter()
                .map(|id| {
                    ex.call_echo(
                        &BrokerId {
                            value: id,
                            ..Default::default()
                        },
                        T,
                    )
                    .map(|t| t.value)
                })
                .collect::<Vec<_>>()
        })
    };
    // 2 ran, 3 waited and ran; the other 7 were refused at once, by name.
    twelve_against_two_and_three(
        &greedy,
        &slow,
        &[
            "plugin greedy's calls to what the node serves it: 2 running and 3 waiting",
            "rpc.concurrent_calls",
        ],
    );
    assert_eq!(rejected("greedy") - before, 7.0);
    // The calm plugin's calls all went through.
    for r in calm_calls.join().unwrap() {
        assert_eq!(r.expect("calm plugin's call").as_str(), "slow ping");
    }
    assert_eq!(rejected("calm"), 0.0);
    // Drained, the greedy plugin gets its full bound again.
    let again = call_back(&greedy, &slow, 5);
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    greedy.kill();
    other.kill();
}

/// The other way round: a plugin bounds the blocking calls it serves, all
/// callers together (`LOOPP_MAX_CONCURRENT_CALLS` running,
/// `LOOPP_MAX_QUEUED_CALLS` waiting), so a host that sends more slow calls
/// at once gets RESOURCE_EXHAUSTED for the rest instead of a plugin thread
/// each. Here each CallEcho blocks in the plugin on a 1 s call back to the
/// host; the host's own bound is far away.
#[test]
fn a_host_over_a_plugins_call_bound_gets_resource_exhausted_and_the_plugin_runs_its_bound() {
    let sandbox = Sandbox::new("bounds-plugin");
    let mut config = test_plugin("bounded", "serve", &sandbox);
    config.concurrent_calls = 64;
    config
        .env
        .push((rpc::CONCURRENT_CALLS_VAR.into(), "2".into()));
    config.env.push((rpc::QUEUED_CALLS_VAR.into(), "3".into()));
    let mut client = Client::start(&config).expect("start");
    let slow = SlowEcho {
        running: Arc::new(AtomicUsize::new(0)),
        peak: Arc::new(AtomicUsize::new(0)),
    };
    twelve_against_two_and_three(
        &client,
        &slow,
        &[
            "this process's served calls: 2 running and 3 waiting",
            "LOOPP_MAX_CONCURRENT_CALLS / LOOPP_MAX_QUEUED_CALLS",
        ],
    );
    // Drained, the plugin takes its full bound again and still answers.
    let again = call_back(&client, &slow, 5);
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    client.ping().expect("the plugin still answers");
    client.kill();
}
