//! `loopp-node probe`: an operator's first diagnostic for a plugin.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use loopp::goplugin::handshake::{Cookie, Network};
use loopp::goplugin::host::{Client, HostConfig};
use loopp::services::service::ServiceClient;
use loopp::stats::{human, summarize};

const HELP: &str = "\
loopp-node probe: launch a go-plugin gRPC plugin, check it, shut it down

USAGE:
    loopp-node probe [OPTIONS] -- CMD [ARGS...]

OPTIONS:
    --kind KIND          the plugin's cookie by kind: relayer, median, example
    --cookie KEY=VALUE   the magic cookie, for any other plugin
    --version N[,N...]   app protocol versions to offer (default 0)
    --calls N            health checks to time (default 100)
    --network NET        unix (default) or tcp (loopp plugins only)
    --start-timeout DUR  time allowed for the handshake, e.g. 10s (default 60s)
    --rpc-timeout DUR    deadline of each call (default 1s)
    --json               print one JSON object instead of the report

The plugin gets the environment the node gives a LOOPP (Go Chainlink's
LOOP variables and a free CL_PROMETHEUS_PORT), so Go LOOP plugins start.

Exit status: 0 when the plugin started, answered and shut down gracefully;
1 when it failed (the reason is printed); 2 on bad arguments.
";

struct Args {
    cookie: Cookie,
    versions: Vec<u32>,
    calls: usize,
    network: Network,
    start_timeout: Duration,
    rpc_timeout: Duration,
    json: bool,
    command: Vec<OsString>,
}

fn parse_duration(flag: &str, v: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = v
        .parse()
        .map_err(|_| format!("{flag} {v:?} is not a duration; use e.g. 500ms, 10s, 1m"))?;
    let d = Duration::try_from(d).map_err(|_| format!("{flag} {v:?} must not be negative"))?;
    if d.is_zero() {
        return Err(format!(
            "{flag} must be more than zero: a realistic timeout is required"
        ));
    }
    Ok(d)
}

fn parse(args: &[String]) -> Result<Option<Args>, String> {
    let mut cookie = None;
    let mut versions = vec![0];
    let mut calls = 100;
    let mut network = Network::Unix;
    let mut start_timeout = loopp::goplugin::host::DEFAULT_START_TIMEOUT;
    let mut rpc_timeout = loopp::goplugin::host::DEFAULT_RPC_TIMEOUT;
    let mut json = false;
    let mut it = args.iter();
    let mut command = Vec::new();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value; see 'loopp-node probe --help'"))
        };
        match a.as_str() {
            "--help" | "-h" => return Ok(None),
            "--" => {
                command = it.by_ref().map(OsString::from).collect();
                break;
            }
            "--kind" => {
                let k = value("--kind")?;
                cookie = Some(Cookie::by_kind(&k).ok_or_else(|| {
                    format!("--kind {k:?} is unknown; use relayer, median or example (or --cookie KEY=VALUE)")
                })?);
            }
            "--cookie" => {
                let kv = value("--cookie")?;
                let (k, v) = kv
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| format!("--cookie {kv:?} must be KEY=VALUE"))?;
                cookie = Some(Cookie::new(k, v));
            }
            "--version" => {
                let v = value("--version")?;
                versions = v
                    .split(',')
                    .map(|x| x.trim().parse::<u32>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| {
                        format!(
                            "--version {v:?} must be numbers separated by commas, e.g. 0 or 1,2"
                        )
                    })?;
            }
            "--calls" => {
                let v = value("--calls")?;
                calls = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(|| format!("--calls {v:?} must be a number from 1 to 1000000"))?;
            }
            "--network" => {
                let v = value("--network")?;
                network = Network::parse(&v)
                    .ok_or_else(|| format!("--network {v:?} must be unix or tcp"))?;
            }
            "--start-timeout" => {
                start_timeout = parse_duration("--start-timeout", &value("--start-timeout")?)?
            }
            "--rpc-timeout" => {
                rpc_timeout = parse_duration("--rpc-timeout", &value("--rpc-timeout")?)?
            }
            "--json" => json = true,
            other => {
                return Err(format!(
                    "unknown option {other:?}; see 'loopp-node probe --help'"
                ))
            }
        }
    }
    if command.is_empty() {
        return Err("no plugin command; usage: loopp-node probe [OPTIONS] -- CMD [ARGS...]".into());
    }
    let cookie = cookie.ok_or(
        "which plugin kind is it? give --kind relayer|median|example or --cookie KEY=VALUE (the magic cookie)",
    )?;
    Ok(Some(Args {
        cookie,
        versions,
        calls,
        network,
        start_timeout,
        rpc_timeout,
        json,
        command,
    }))
}

pub fn main(args: &[String]) -> Result<ExitCode, String> {
    let Some(args) = parse(args)? else {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    };
    let program = args.command[0].clone();
    let name = std::path::Path::new(&program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let mut config = HostConfig::new(&name, program, args.cookie.clone());
    config.args = args.command[1..].to_vec();
    config.versions = args.versions.clone();
    config.network = args.network;
    config.start_timeout = args.start_timeout;
    config.rpc_timeout = args.rpc_timeout;
    // The environment the node gives a LOOPP, so a plugin that needs it (a
    // Go LOOP plugin, loopp-median) starts as it would under the node.
    let port = loopp::node::ports::Ports::new()
        .allocate()
        .map_err(|e| format!("no free port for the plugin's /metrics: {e}"))?;
    config.env = loopp::node::loopenv::plugin_env(port, &[]);

    let mut client = match Client::start(&config) {
        Ok(c) => c,
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string()})
                );
            }
            eprintln!("loopp-node probe: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let h = client.handshake().clone();
    let started = client.started_in();

    // loop.Service, if the plugin serves it.
    let svc = ServiceClient::new(&name, client.conn().clone(), config.rpc_timeout);
    let service = match svc.try_name() {
        Ok(n) => {
            use loopp::services::service::Service;
            let ready = svc.ready();
            let report = svc.health_report();
            Some((n, ready, report))
        }
        Err(e) if e.contains("UNIMPLEMENTED") => None,
        Err(e) => Some((String::new(), Err(e), Default::default())),
    };

    let mut samples = Vec::with_capacity(args.calls);
    let mut failure = None;
    for _ in 0..args.calls {
        let t = Instant::now();
        match client.ping() {
            Ok(()) => samples.push(t.elapsed()),
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    let rtt = summarize(&mut samples);
    let ping = if client.pings_framed() {
        "framed"
    } else {
        "gRPC"
    };
    let exit = client.kill();
    let status = exit
        .status
        .map(|s| s.to_string())
        .unwrap_or_else(|| "not reaped".into());

    if args.json {
        let v = serde_json::json!({
            "ok": failure.is_none() && exit.graceful,
            "plugin": name,
            "pid": client.pid(),
            "handshake": h.to_string(),
            "app_version": h.app_version,
            "network": h.network.as_str(),
            "address": h.address,
            "start_ms": started.as_secs_f64() * 1e3,
            "handshake_ms": client.handshake_in().as_secs_f64() * 1e3,
            "calls": samples.len(),
            "ping": ping,
            "rpc_us_p50": rtt.p50.as_secs_f64() * 1e6,
            "rpc_us_p99": rtt.p99.as_secs_f64() * 1e6,
            "rpc_us_max": rtt.max.as_secs_f64() * 1e6,
            "service": service.as_ref().map(|(n, _, _)| n.clone()),
            "graceful": exit.graceful,
            "exit": status,
            "shutdown_ms": exit.took.as_secs_f64() * 1e3,
            "error": failure,
        });
        println!("{v}");
    } else {
        println!(
            "plugin      {} (pid {})",
            args.command[0].to_string_lossy(),
            client.pid()
        );
        println!("handshake   {h}");
        println!(
            "negotiated  app version {}, network {}, address {}, protocol grpc, tls off",
            h.app_version, h.network, h.address
        );
        println!(
            "ready in    {} (handshake after {}, then connect and first health check)",
            human(started),
            human(client.handshake_in())
        );
        println!("health      SERVING");
        match &service {
            None => println!("service     loop.Service not served"),
            Some((n, ready, report)) => {
                let ready = match ready {
                    Ok(()) => "ready".to_string(),
                    Err(e) => format!("not ready: {e}"),
                };
                let report: Vec<String> = report
                    .iter()
                    .map(|(k, v)| {
                        if v.is_empty() {
                            format!("{k}: ok")
                        } else {
                            format!("{k}: {v}")
                        }
                    })
                    .collect();
                println!(
                    "service     loop.Service {n:?}, {ready}, health {{{}}}",
                    report.join(", ")
                );
            }
        }
        println!(
            "rpc         {} health checks ({ping}): p50 {}, p99 {}, max {}",
            samples.len(),
            human(rtt.p50),
            human(rtt.p99),
            human(rtt.max)
        );
        if exit.graceful {
            println!(
                "shutdown    graceful: {status} {} after Shutdown",
                human(exit.took)
            );
        } else {
            println!(
                "shutdown    FORCED: no exit within {:?} of Shutdown; SIGKILLed ({status})",
                config.shutdown_grace
            );
        }
    }
    if let Some(f) = failure {
        eprintln!("loopp-node probe: health check failed: {f}");
        return Ok(ExitCode::FAILURE);
    }
    if !exit.graceful {
        eprintln!("loopp-node probe: the plugin ignored Shutdown and had to be killed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
