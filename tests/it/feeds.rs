//! The main job through the node: a devchain relay and a median feed, run
//! in-process or as LOOPPs by the flip of CL_DEVCHAIN_CMD / CL_MEDIAN_CMD.

use std::time::Duration;

use loopp::devchain::store::Chain;
use loopp::node::config::NodeConfig;
use loopp::node::registry::State;
use loopp::node::Node;

use crate::util::*;

fn job(data_dir: &std::path::Path) -> String {
    format!(
        r#"{{"plugins":[{{"name":"devchain","kind":"relayer"}},{{"name":"median","kind":"median"}}],
            "feeds":[{{"name":"f","relay":"devchain","median":"median",
                "source":{{"type":"randomwalk","seed":5,"start":1000000,"step_ppm":5000}},
                "interval":"150ms","deviation_ppb":0,"heartbeat":"1h",
                "max_durations":{{"observation":"1s","report":"1s","should_accept":"1s","should_transmit":"1s"}}}}],
            "supervision":{{"backoff_initial":"50ms","backoff_max":"200ms","health_interval":"200ms"}},
            "http":{{"listen":"off"}},"data_dir":{}}}"#,
        serde_json::Value::String(data_dir.display().to_string())
    )
}

/// The environment a test node resolves its job with: sockets in the
/// sandbox, and both plugins as LOOPPs when `loopp`.
fn env(sandbox: &Sandbox, loopp: bool) -> impl Fn(&str) -> Option<String> {
    let sock = sandbox.dir.clone();
    move |k| match k {
        "CL_DEVCHAIN_CMD" if loopp => Some(devchain().into()),
        "CL_MEDIAN_CMD" if loopp => Some(median().into()),
        "PLUGIN_UNIX_SOCKET_DIR" => Some(sock.display().to_string()),
        _ => None,
    }
}

fn node(sandbox: &Sandbox, loopp: bool) -> Node {
    let config = NodeConfig::from_json(
        "feeds",
        &job(&sandbox.dir.join("data")),
        &env(sandbox, loopp),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Node::start(&config).expect("node starts")
}

fn transmissions(sandbox: &Sandbox) -> Vec<(u32, i128)> {
    let path = sandbox.dir.join("data/devchain/f.jsonl");
    match Chain::open(&path) {
        Ok(c) => c
            .transmissions()
            .unwrap_or_default()
            .iter()
            .map(|t| (t.epoch, t.median))
            .collect(),
        Err(_) => vec![],
    }
}

#[test]
fn in_process_and_loopp_feeds_transmit_the_same_values() {
    let a = Sandbox::new("feed-inproc");
    let n = node(&a, false);
    assert!(
        wait_until(Duration::from_secs(30), || transmissions(&a).len() >= 4),
        "in-process rounds run"
    );
    n.shutdown();
    let b = Sandbox::new("feed-loopp");
    let n = node(&b, true);
    assert!(
        wait_until(Duration::from_secs(30), || transmissions(&b).len() >= 4),
        "LOOPP rounds run"
    );
    n.shutdown();
    let (ta, tb) = (transmissions(&a), transmissions(&b));
    assert_eq!(ta[..4], tb[..4], "same seed, same transmissions");
}

/// Kills LOOPP `plugin` under a running feed: the supervisor restarts it,
/// the feed rebuilds its setup, rounds resume; nothing is lost or doubled.
fn kill_mid_run(sandbox_name: &str, plugin: &str) {
    let sb = Sandbox::new(sandbox_name);
    let n = node(&sb, true);
    assert!(wait_until(Duration::from_secs(30), || transmissions(&sb)
        .len()
        >= 3));
    let pid = n
        .registry()
        .get(plugin)
        .and_then(|s| s.pid)
        .unwrap_or_else(|| panic!("{plugin} runs"));
    // SAFETY: killing the plugin the node reports.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(30), || n
        .registry()
        .get(plugin)
        .is_some_and(
            |s| s.state == State::Running && s.pid != Some(pid)
        )));
    let before = transmissions(&sb).len();
    assert!(
        wait_until(Duration::from_secs(30), || transmissions(&sb).len()
            >= before + 3),
        "rounds resume after the restart of {plugin}"
    );
    n.shutdown();
    let t = transmissions(&sb);
    assert!(
        t.windows(2).all(|w| w[0].0 < w[1].0),
        "epochs strictly increase, no duplicate: {t:?}"
    );
}

#[test]
fn killing_the_median_plugin_mid_run_loses_and_duplicates_nothing() {
    kill_mid_run("feed-kill", "median");
}

#[test]
fn killing_the_relayer_mid_run_loses_and_duplicates_nothing() {
    kill_mid_run("feed-kill-relay", "devchain");
}

/// The node's /metrics counts each feed's rounds, reports and
/// transmissions, over real HTTP.
#[test]
fn the_nodes_metrics_count_feed_rounds_reports_and_transmissions() {
    let sb = Sandbox::new("feed-metrics");
    let text = job(&sb.dir.join("data")).replace(
        r#""http":{"listen":"off"}"#,
        r#""http":{"listen":"127.0.0.1:0"}"#,
    );
    let config = NodeConfig::from_json("m", &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let n = Node::start(&config).expect("node starts");
    let url = format!("http://{}/metrics", n.http_addr().unwrap());
    let scrape = || -> String {
        ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    };
    let read = |body: &str, series: &str| -> Option<u64> {
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    };
    let transmitted_series = r#"loopp_feed_rounds_total{feed="f",outcome="transmitted"}"#;
    // A round is counted once it is over, after the relayer has written its
    // transmission: wait on the counter itself, not on the chain file.
    let mut body = String::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            body = scrape();
            read(&body, transmitted_series).is_some_and(|t| t >= 3)
        }),
        "three rounds counted as transmitted:\n{body}"
    );
    n.shutdown();
    let value = |series: &str| -> u64 {
        read(&body, series).unwrap_or_else(|| panic!("no {series} in:\n{body}"))
    };
    // The feed keeps running during the scrape, and the families are read
    // one after the other: a round may land between two of them.
    let transmitted = value(transmitted_series);
    let accepted = value(r#"loopp_feed_transmissions_total{feed="f"}"#);
    assert!(accepted.abs_diff(transmitted) <= 1, "{body}");
    // Every transmission the node counted is on the chain file.
    let on_chain = transmissions(&sb).len() as u64;
    assert!(
        on_chain >= accepted,
        "{on_chain} on the chain file:\n{body}"
    );
    assert!(
        value(r#"loopp_feed_reports_total{feed="f"}"#) + 1 >= transmitted,
        "{body}"
    );
}

/// Two feeds on one relay: each has its own contract (file), both transmit.
/// The job with a second feed, `g`, walking around 3,000,000 (`f` walks
/// around 1,000,000).
fn two_feeds(text: &str) -> String {
    let feed = &text[text.find(r#"{"name":"f""#).unwrap()
        ..text
            .find(
                r#"}],
            "supervision""#,
            )
            .unwrap()
            + 1];
    let second = feed
        .replace(r#""name":"f""#, r#""name":"g""#)
        .replace(r#""start":1000000"#, r#""start":3000000"#);
    text.replacen(feed, &format!("{feed},{second}"), 1)
}

/// The medians a feed transmitted, on its devchain contract.
fn medians(sb: &Sandbox, feed: &str) -> Vec<i128> {
    Chain::open(&sb.dir.join(format!("data/devchain/{feed}.jsonl")))
        .map(|c| {
            c.transmissions()
                .unwrap()
                .iter()
                .map(|t| t.median)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn feeds_sharing_a_relay_keep_their_own_contracts() {
    let sb = Sandbox::new("feed-two");
    let text = two_feeds(&job(&sb.dir.join("data")));
    let config = NodeConfig::from_json("two", &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let n = Node::start(&config).expect("node starts");
    let medians = |feed: &str| medians(&sb, feed);
    assert!(
        wait_until(Duration::from_secs(30), || medians("f").len() >= 2
            && medians("g").len() >= 2),
        "both feeds transmit"
    );
    n.shutdown();
    // f walks around 1,000,000, g around 3,000,000 (0.5% a round at most).
    assert!(
        medians("f").iter().all(|m| *m < 2_000_000),
        "{:?}",
        medians("f")
    );
    assert!(
        medians("g").iter().all(|m| *m > 2_000_000),
        "{:?}",
        medians("g")
    );
}

/// `processes: "per_feed"`: each feed's median is a LOOPP of its own (as a
/// Chainlink node runs one per job). Both feeds transmit, and killing one
/// feed's median leaves the other feed's process and rounds untouched.
#[test]
fn a_median_process_per_feed_keeps_the_feeds_apart() {
    let sb = Sandbox::new("feed-own");
    let text = two_feeds(&job(&sb.dir.join("data"))).replace(
        r#"{"name":"median","kind":"median"}"#,
        r#"{"name":"median","kind":"median","processes":"per_feed"}"#,
    );
    let config =
        NodeConfig::from_json("own", &text, &env(&sb, true)).unwrap_or_else(|e| panic!("{e}"));
    let n = Node::start(&config).expect("node starts");
    assert!(
        wait_until(Duration::from_secs(30), || medians(&sb, "f").len() >= 2
            && medians(&sb, "g").len() >= 2),
        "both feeds transmit"
    );
    let pid = |p: &str| n.registry().get(p).and_then(|s| s.pid);
    assert!(n.registry().get("median").is_none(), "no shared median");
    let (f_pid, g_pid) = (pid("median-f").expect("f's median"), pid("median-g"));
    assert!(g_pid.is_some() && g_pid != Some(f_pid), "two processes");
    // SAFETY: killing the plugin the node reports.
    unsafe { libc::kill(f_pid as libc::pid_t, libc::SIGKILL) };
    let g_before = medians(&sb, "g").len();
    assert!(
        wait_until(Duration::from_secs(30), || medians(&sb, "g").len()
            >= g_before + 3),
        "g goes on"
    );
    assert!(wait_until(Duration::from_secs(30), || n
        .registry()
        .get("median-f")
        .is_some_and(
            |s| s.state == State::Running && s.pid != Some(f_pid)
        )));
    let f_before = medians(&sb, "f").len();
    assert!(
        wait_until(Duration::from_secs(30), || medians(&sb, "f").len()
            >= f_before + 2),
        "f resumes with its new median process"
    );
    assert_eq!(pid("median-g"), g_pid, "g's median was not touched");
    n.shutdown();
}

/// A median LOOPP whose data source fails reports it through the node's
/// error log (served to it on a broker id), and the feed keeps going.
#[test]
fn observation_failures_reach_the_nodes_error_log() {
    capture_logs();
    let sb = Sandbox::new("feed-errors");
    let text = job(&sb.dir.join("data")).replace(
        r#""source":{"type":"randomwalk","seed":5,"start":1000000,"step_ppm":5000}"#,
        r#""source":{"type":"http","url":"http://127.0.0.1:1/price","path":"price"}"#,
    );
    let text = text.replace(r#""name":"f""#, r#""name":"badsource""#);
    let config = NodeConfig::from_json("errors", &text, &env(&sb, true)).unwrap();
    let n = Node::start(&config).expect("node starts");
    assert!(
        wait_until(Duration::from_secs(30), || logs_for("feed::badsource")
            .iter()
            .any(
                |r| r.level == log::Level::Error && r.message.contains("observation failed")
            )),
        "the plugin's error reached the node's log"
    );
    assert!(transmissions(&sb).is_empty());
    n.shutdown();
}

/// The node's threads are bounded by the job's `feed_threads`, not by its
/// feeds: 80 in-process feeds on 2 round threads all transmit, and the
/// node runs fewer threads than it has feeds (before, each feed had its
/// own thread).
#[test]
fn eighty_feeds_transmit_on_two_round_threads() {
    use crate::proc::{figures, NodeProcess};
    const FEEDS: usize = 80;
    let sandbox = Sandbox::new("feed-threads");
    let job = walk_feeds_job(&sandbox, FEEDS, "200ms", r#""feed_threads":2,"#);
    let mut node = NodeProcess::start(&job, &[]);
    let mut transmitted = std::collections::HashSet::new();
    while transmitted.len() < FEEDS {
        let line = node.wait_line(Duration::from_secs(60), |l| {
            l.contains(": transmitted median")
        });
        transmitted.insert(feed_of(&line));
    }
    let f = figures(node.pid());
    println!("{FEEDS} feeds, feed_threads 2: node threads {}", f.threads);
    assert!(
        f.threads < FEEDS,
        "the node runs {} threads for {FEEDS} feeds on 2 round threads",
        f.threads
    );
    node.stop();
}

/// A LOOPP round holds no thread: once the feeds are set up (on feed
/// workers), their rounds run as futures on the completion-queue thread,
/// started by the feed timer, and the workers sit idle while the rounds
/// go on. A round held by a worker switched context several times a
/// phase; here 20 feeds at 100 ms make over 100 rounds while every worker
/// together switches at most a few times.
#[test]
fn loopp_rounds_run_as_futures_and_hold_no_worker() {
    use crate::proc::{loopp_env, switches_of_threads, NodeProcess};
    const FEEDS: usize = 20;
    let sandbox = Sandbox::new("feed-futures");
    let job = walk_feeds_job(&sandbox, FEEDS, "100ms", r#""feed_threads":4,"#);
    let mut node = NodeProcess::start(&job, &loopp_env(&sandbox.dir));
    let transmitted = |l: &str| l.contains(": transmitted median");
    let mut set_up = std::collections::HashSet::new();
    while set_up.len() < FEEDS {
        let line = node.wait_line(Duration::from_secs(60), transmitted);
        set_up.insert(feed_of(&line));
    }
    let pid = node.pid();
    let workers = switches_of_threads(pid, "feed-round");
    let (mut rounds, t0) = (0, std::time::Instant::now());
    while rounds < 5 * FEEDS {
        node.wait_line(Duration::from_secs(30), transmitted);
        rounds += 1;
    }
    let switched = switches_of_threads(pid, "feed-round").saturating_sub(workers);
    println!(
        "{rounds} rounds in {:?}; feed workers switched {switched} times",
        t0.elapsed()
    );
    assert!(
        switched <= 10,
        "feed workers switched {switched} times during {rounds} LOOPP rounds"
    );
    node.stop();
}

/// With `round_slack`, the node starts LOOPP rounds due close together
/// together: 40 feeds spread over their 1 s interval end their rounds in
/// batches, on ticks 100 ms apart, where each would end alone (their
/// starts are about 25 ms apart). Rounds still transmit, and the node's
/// start-delay histogram shows them started up to the slack late.
#[test]
fn with_a_round_slack_rounds_due_close_together_run_together() {
    use crate::proc::{loopp_env, NodeProcess};
    const FEEDS: usize = 40;
    let sandbox = Sandbox::new("feed-slack");
    let job = walk_feeds_job(
        &sandbox,
        FEEDS,
        "1s",
        r#""round_slack":"100ms","http":{"listen":"127.0.0.1:0"},"#,
    );
    let mut node = NodeProcess::start(&job, &loopp_env(&sandbox.dir));
    let port = node.wait_http_port(Duration::from_secs(30));
    let round = |l: &str| l.contains(": transmitted median") || l.contains(": no report");
    let mut set_up = std::collections::HashSet::new();
    while set_up.len() < FEEDS {
        set_up.insert(feed_of(&node.wait_line(Duration::from_secs(60), round)));
    }
    // When each round's line arrives; a batch: lines less than 15 ms apart.
    let mut ends = Vec::new();
    while ends.len() < 3 * FEEDS {
        node.wait_line(Duration::from_secs(30), round);
        ends.push(std::time::Instant::now());
    }
    let batches = 1 + ends
        .windows(2)
        .filter(|w| w[1] - w[0] > Duration::from_millis(15))
        .count();
    println!("{} rounds ended in {batches} batches", ends.len());
    assert!(
        batches <= ends.len() / 2,
        "{} rounds ended in {batches} batches: not started together",
        ends.len()
    );
    // Started late by about half the slack on average, never by more than
    // the slack and what a loaded machine adds.
    assert_rounds_started_on_ticks(port, ends.len());
    node.stop();
}

/// By default (`round_slack` auto) a job of 44 feeds at 1 s starts its
/// rounds on ticks 50 ms apart, as the node logs: most rounds start
/// later than 5 ms after they are due (as each is due, all of them start
/// within 5 ms), none by more than the tick and what a loaded machine adds.
#[test]
fn by_default_a_job_of_many_feeds_starts_rounds_on_ticks() {
    use crate::proc::{loopp_env, NodeProcess};
    const FEEDS: usize = 44;
    let sandbox = Sandbox::new("feed-auto-slack");
    let job = walk_feeds_job(&sandbox, FEEDS, "1s", r#""http":{"listen":"127.0.0.1:0"},"#);
    let mut node = NodeProcess::start(&job, &loopp_env(&sandbox.dir));
    let port = node.wait_http_port(Duration::from_secs(30));
    node.wait_line(Duration::from_secs(30), |l| {
        l.contains("feed rounds start on ticks 50ms apart")
    });
    let round = |l: &str| l.contains(": transmitted median") || l.contains(": no report");
    for _ in 0..3 * FEEDS {
        node.wait_line(Duration::from_secs(60), round);
    }
    assert_rounds_started_on_ticks(port, 3 * FEEDS);
    node.stop();
}

/// From the node's start-delay histogram: at least `rounds` starts, none
/// more than 250 ms late, and most later than 5 ms after due (as each is
/// due, all of them start within 5 ms).
#[track_caller]
fn assert_rounds_started_on_ticks(port: u16, rounds: usize) {
    let page = metrics_page(port);
    let bucket = |le| histogram_bucket(&page, "loopp_feed_round_start_delay_seconds", le);
    let (all, soon, within) = (bucket("+Inf"), bucket("0.005"), bucket("0.25"));
    println!("round starts: {all}, within 5 ms of due {soon}, within 250 ms {within}");
    assert!(all >= rounds as f64, "{all} round starts counted");
    assert_eq!(within, all, "a round started more than 250 ms late");
    assert!(
        soon < all / 2.0,
        "{soon} of {all} rounds started within 5 ms of due: not on ticks"
    );
}

/// With both plugins as LOOPPs that route, the node forwards the relayer's
/// median provider to the median plugin (`goplugin::route`): the median
/// plugin reads the contract and the report codec from the relayer itself,
/// none of those calls crosses the node, and the feed transmits.
#[test]
fn a_routing_median_plugin_reads_the_loopp_relayers_provider_directly() {
    forwarding(true);
}

/// With `LOOPP_BROKER_FORWARD=0` the node serves the relayer's provider to
/// the median plugin itself, as go-plugin and Chainlink do: every call of
/// the median plugin to it crosses the node.
#[test]
fn with_forwarding_off_the_node_serves_the_provider_again() {
    // Before any thread: this process's node reads it when it serves.
    std::env::set_var(loopp::goplugin::route::FORWARD_VAR, "0");
    forwarding(false);
}

/// The test job with both plugins as LOOPPs and HTTP on a free port, as
/// node `name`; and a scraper of its pages (`/metrics`,
/// `/plugins/NAME/metrics`): their text, empty on an error.
fn loopp_node_with_http(sb: &Sandbox, name: &str) -> (Node, impl Fn(&str) -> String) {
    let text = job(&sb.dir.join("data")).replace(
        r#""http":{"listen":"off"}"#,
        r#""http":{"listen":"127.0.0.1:0"}"#,
    );
    let config =
        NodeConfig::from_json(name, &text, &env(sb, true)).unwrap_or_else(|e| panic!("{e}"));
    let n = Node::start(&config).expect("node starts");
    let base = format!("http://{}", n.http_addr().unwrap());
    let scrape = move |path: &str| -> String {
        ureq::get(&format!("{base}{path}"))
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_default()
    };
    (n, scrape)
}

fn forwarding(on: bool) {
    let sb = Sandbox::new(if on {
        "feed-forward"
    } else {
        "feed-no-forward"
    });
    let (n, scrape) = loopp_node_with_http(&sb, "fwd");
    // Calls served with `method`, summed over codes.
    let served = |page: &str, method: &str| -> u64 {
        page.lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains(method))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let reads = "/loop.MedianContract/LatestTransmissionDetails";
    let decodes = "/loop.ReportCodec/MedianFromReport";
    let mut node_page = String::new();
    let mut relayer_page = String::new();
    let counted = wait_until(Duration::from_secs(30), || {
        node_page = scrape("/metrics");
        relayer_page = scrape("/plugins/devchain/metrics");
        transmissions(&sb).len() >= 3 && served(&relayer_page, reads) > 0
    });
    n.shutdown();
    assert!(
        counted,
        "3 transmissions and the relayer serving {reads}; node:\n{node_page}\nrelayer:\n{relayer_page}"
    );
    // The relayer answered the median plugin's reads either way.
    assert!(served(&relayer_page, decodes) > 0, "{relayer_page}");
    for method in [reads, decodes] {
        let through_node = served(&node_page, method);
        println!("forwarding {on}: the node served {through_node} {method}");
        if on {
            assert_eq!(through_node, 0, "{method} crossed the node:\n{node_page}");
        } else {
            assert!(
                through_node > 0,
                "{method} not served by the node:\n{node_page}"
            );
        }
    }
}

/// Both plugins loopp: a feed's calls go framed (`goplugin::framed`), the
/// node's to both plugins and the median plugin's to the relayer
/// (forwarded) and to the node (its data sources), and the rounds report.
#[test]
fn loopp_feeds_call_their_plugins_framed() {
    framing(true);
}

/// With `LOOPP_BROKER_FRAMED=0` in the node's environment no connection is
/// framed, and the same feed reports over gRPC.
#[test]
fn with_framing_off_loopp_feeds_call_over_grpc() {
    // Before any thread: this process's node reads it when it starts plugins.
    std::env::set_var(loopp::goplugin::framed::OFFER_VAR, "0");
    framing(false);
}

fn framing(on: bool) {
    let sb = Sandbox::new(if on { "feed-framed" } else { "feed-unframed" });
    let (n, scrape) = loopp_node_with_http(&sb, "framed");
    // Open framed connections `direction` (in, out) on a page.
    let framed = |page: &str, direction: &str| -> Option<u64> {
        let key = format!("loopp_framed_connections{{direction=\"{direction}\"}} ");
        page.lines()
            .find_map(|l| l.strip_prefix(&key)?.parse().ok())
    };
    let pages = || {
        [
            scrape("/metrics"),
            scrape("/plugins/median/metrics"),
            scrape("/plugins/devchain/metrics"),
        ]
    };
    let mut seen = pages();
    let reported = wait_until(Duration::from_secs(30), || {
        seen = pages();
        transmissions(&sb).len() >= 3
    });
    n.shutdown();
    let [node_page, median_page, relayer_page] = &seen;
    assert!(reported, "3 transmissions; node:\n{node_page}");
    let counts = [
        framed(node_page, "out"),
        framed(node_page, "in"),
        framed(median_page, "out"),
        framed(median_page, "in"),
        framed(relayer_page, "in"),
    ];
    println!("framing {on}: node out/in, median out/in, relayer in: {counts:?}");
    assert!(
        counts.iter().all(Option::is_some),
        "every page shows the gauge: {counts:?}"
    );
    let [node_out, node_in, median_out, median_in, relayer_in] = counts.map(Option::unwrap);
    if on {
        assert!(node_out >= 2, "the node to both plugins: {node_out}");
        assert!(
            median_in >= 1 && relayer_in >= 2,
            "{median_in} {relayer_in}"
        );
        assert!(
            median_out >= 2,
            "the median plugin to the node and the relayer: {median_out}"
        );
        assert!(
            node_in >= 1,
            "the median plugin's calls of the node's data sources: {node_in}"
        );
    } else {
        assert_eq!(counts.map(Option::unwrap), [0; 5]);
    }
}

/// Between loopp processes every call goes framed, so none of them starts
/// gRPC's core, whose timer threads alone wake each process several times
/// a second, busy or idle: a node with both plugins as loopp LOOPPs
/// transmits rounds, stops a plugin and starts it again, and neither the
/// node nor its plugins ever run one of gRPC's threads. With framing
/// turned off (`LOOPP_BROKER_FRAMED=0`) the same job runs them in every
/// process, so the check sees them.
#[test]
fn loopp_to_loopp_feeds_start_no_grpc_in_any_process() {
    use crate::proc::{loopp_env, thread_names, NodeProcess};
    // gRPC core's threads, and the completion-queue threads loopp names.
    let grpc_threads = |pid: u32| -> Vec<String> {
        thread_names(pid)
            .into_keys()
            .filter(|n| {
                n.starts_with("grpc")
                    || [
                        "timer_manager",
                        "event_engine",
                        "default-executo",
                        "resolver-execut",
                    ]
                    .contains(&n.as_str())
            })
            .collect()
    };
    for framed in [true, false] {
        let sandbox = Sandbox::new("feed-no-grpc");
        let job = walk_feeds_job(&sandbox, 2, "100ms", "");
        let mut env = loopp_env(&sandbox.dir);
        if !framed {
            env.push(("LOOPP_BROKER_FRAMED".into(), "0".into()));
        }
        let mut node = NodeProcess::start(&job, &env);
        let mut pids = std::collections::BTreeMap::new();
        let mut transmitted = 0;
        while pids.len() < 2 || transmitted < 6 {
            let line = node.wait_line(Duration::from_secs(60), |l| {
                l.contains(": transmitted median") || running_line(l).is_some()
            });
            match running_line(&line) {
                Some((name, pid)) => drop(pids.insert(name, pid)),
                None => transmitted += 1,
            }
        }
        let mut processes = vec![("node".to_string(), node.pid())];
        processes.extend(pids.clone());
        for (name, pid) in &processes {
            let found = grpc_threads(*pid);
            println!("framed {framed}: {name} (pid {pid}) runs gRPC threads {found:?}");
            assert_eq!(
                found.is_empty(),
                framed,
                "{name} (pid {pid}), framing {framed}: gRPC's threads {found:?}"
            );
        }
        if framed {
            // A restarted plugin is called framed again: the median is
            // killed, comes back, and rounds transmit through the new one.
            let median = pids["median"];
            // SAFETY: a signal to the median plugin this test's node started.
            unsafe { libc::kill(median as i32, libc::SIGKILL) };
            let again = loop {
                let line = node.wait_line(Duration::from_secs(60), |l| running_line(l).is_some());
                match running_line(&line) {
                    Some((name, pid)) if name == "median" && pid != median => break pid,
                    _ => {}
                }
            };
            for _ in 0..4 {
                node.wait_line(Duration::from_secs(60), |l| {
                    l.contains(": transmitted median")
                });
            }
            for pid in [node.pid(), again] {
                let found = grpc_threads(pid);
                assert!(found.is_empty(), "after the restart, pid {pid}: {found:?}");
            }
        }
        node.stop();
    }
}
