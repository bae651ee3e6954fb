//! The node's HTTP server: `/discovery` (Prometheus HTTP service discovery),
//! `/plugins/NAME/metrics` (a thin proxy to each LOOPP's own `/metrics`),
//! `/metrics` (the node's own) and `/health`.
//!
//! Invariants: a plugin name is matched exactly against the registry (no
//! decoding, no path tricks); the node only ever fetches
//! `http://<CL_LOOPP_HOSTNAME>:<the plugin's allocated port>/metrics`, never a
//! URL built from the request; a proxied scrape never takes longer than its
//! timeout (Prometheus's `X-Prometheus-Scrape-Timeout-Seconds` minus a margin,
//! else [`DEFAULT_SCRAPE_TIMEOUT`]).

use std::io::Read;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::goplugin::http::{
    body, header, method_allowed, request_header, text, HttpServer, Limits, Reply, Request,
};
use crate::node::registry::State;
use crate::node::Plugins;

/// Scrape timeout without Prometheus's header (as the Go node: 1 s).
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest request path served; longer is 414.
pub const MAX_PATH: usize = 1024;
/// Largest plugin metrics page passed through (bytes).
pub const MAX_METRICS_BODY: u64 = 64 << 20;

/// How the node's HTTP server is set up.
#[derive(Clone, Debug)]
pub struct NodeHttpConfig {
    /// Listen address, e.g. `127.0.0.1:6688`.
    pub listen: String,
    /// Host written into `/discovery` targets.
    pub discovery_host: String,
    /// Host where the node reaches plugin metrics (`CL_LOOPP_HOSTNAME`).
    pub loopp_host: String,
    /// Worker threads.
    pub workers: usize,
    /// Connections, deadlines, head size, queue.
    pub limits: Limits,
}

/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6688";

impl NodeHttpConfig {
    /// From the environment: `CL_PROMETHEUS_DISCOVERY_HOSTNAME` (default:
    /// see [`discovery_host`]) and `CL_LOOPP_HOSTNAME` (default
    /// `localhost`).
    pub fn from_env(listen: &str, limits: Limits) -> NodeHttpConfig {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        NodeHttpConfig {
            listen: listen.to_string(),
            discovery_host: discovery_host(listen, var("CL_PROMETHEUS_DISCOVERY_HOSTNAME")),
            loopp_host: var("CL_LOOPP_HOSTNAME").unwrap_or_else(|| "localhost".into()),
            workers: 8,
            limits,
        }
    }
}

/// The host `/discovery` advertises for the node listening on `listen`:
/// `configured` when set; else the address the node listens on, when it is
/// one address (loopback listens are reachable nowhere else: on Debian the
/// host name resolves to 127.0.1.1, where nothing listens); else, for a
/// wildcard listen (0.0.0.0, ::), the host name (else `localhost`).
pub fn discovery_host(listen: &str, configured: Option<String>) -> String {
    if let Some(host) = configured {
        return host;
    }
    match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if !a.ip().is_unspecified() => match a.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        },
        _ => hostname().unwrap_or_else(|| "localhost".into()),
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    std::str::from_utf8(&buf[..end])
        .ok()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The metrics proxy's client. Its targets are plugins on loopback, so it
/// takes no proxy from the environment (`http_proxy` and friends, which
/// ureq would otherwise use for 127.0.0.1 too).
static AGENT: LazyLock<ureq::Agent> = LazyLock::new(|| {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(DEFAULT_SCRAPE_TIMEOUT))
        .build()
        .new_agent()
});

/// Starts the node's HTTP server.
pub fn serve(config: NodeHttpConfig, plugins: Arc<Plugins>) -> std::io::Result<HttpServer> {
    let port_holder = Arc::new(std::sync::OnceLock::<u16>::new());
    let ph = port_holder.clone();
    let cfg = config.clone();
    let limits = config.limits.clone();
    let listener = HttpServer::bind(&config.listen).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(
                e.kind(),
                format!(
                    "{e}: another program (or node) serves there; stop it, or give a free port in the job's http.listen or with --http (\"127.0.0.1:0\": any; \"off\": no HTTP)"
                ),
            )
        } else {
            e
        }
    })?;
    let server = HttpServer::start_on(listener, config.workers, "http", limits, move |r| {
        route(r, &cfg, &plugins, ph.get().copied().unwrap_or(0))
    })?;
    let _ = port_holder.set(server.addr().port());
    Ok(server)
}

fn route(r: &Request, cfg: &NodeHttpConfig, plugins: &Plugins, port: u16) -> Reply {
    if let Err(reply) = method_allowed(r) {
        return reply;
    }
    let url = r.url();
    if url.len() > MAX_PATH {
        return text(414, format!("request path longer than {MAX_PATH} bytes"));
    }
    let path = url.split('?').next().unwrap_or("");
    match path {
        "/discovery" => discovery(cfg, plugins, port),
        "/metrics" => {
            crate::node::metrics::record_plugins(&plugins.registry().snapshot());
            let (data, ctype) = crate::goplugin::metrics::encode();
            body(200, &ctype, data)
        }
        "/health" => health(plugins),
        _ => match path
            .strip_prefix("/plugins/")
            .and_then(|p| p.strip_suffix("/metrics"))
        {
            Some(name) => proxy(r, cfg, plugins, name),
            None => text(
                404,
                format!(
                    "not found: {path}; try /discovery, /metrics, /health or /plugins/NAME/metrics"
                ),
            ),
        },
    }
}

fn discovery(cfg: &NodeHttpConfig, plugins: &Plugins, port: u16) -> Reply {
    let target = format!("{}:{port}", cfg.discovery_host);
    let mut groups = vec![json!({"targets": [target], "labels": {"__metrics_path__": "/metrics"}})];
    for s in plugins.registry().snapshot() {
        if !s.out_of_process {
            continue;
        }
        groups.push(json!({
            "targets": [target],
            "labels": {
                "__meta_plugin_name": s.name,
                "__metrics_path__": format!("/plugins/{}/metrics", s.name),
                "__meta_loopp_kind": s.kind,
                "__meta_loopp_state": s.state.as_str(),
                "__meta_loopp_restarts": s.restarts.to_string(),
            }
        }));
    }
    body(
        200,
        "application/json",
        serde_json::Value::Array(groups).to_string().into_bytes(),
    )
}

fn health(plugins: &Plugins) -> Reply {
    let report = plugins.health_report();
    let healthy = report.values().all(String::is_empty);
    let v = json!({"healthy": healthy, "report": report});
    body(
        if healthy { 200 } else { 503 },
        "application/json",
        v.to_string().into_bytes(),
    )
}

/// The scrape timeout for a request: Prometheus's header minus a margin
/// (10%, at most 250 ms), at least 50 ms; else the default.
pub fn scrape_timeout(header_value: Option<&str>) -> Duration {
    let Some(secs) = header_value
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
    else {
        return DEFAULT_SCRAPE_TIMEOUT;
    };
    let total = Duration::from_secs_f64(secs.min(3600.0));
    let margin = total.mul_f64(0.1).min(Duration::from_millis(250));
    total.saturating_sub(margin).max(Duration::from_millis(50))
}

fn proxy(r: &Request, cfg: &NodeHttpConfig, plugins: &Plugins, name: &str) -> Reply {
    let Some(status) = plugins.registry().get(name).filter(|s| s.out_of_process) else {
        return text(
            404,
            format!("no plugin named {name:?} runs out of process here; see /discovery"),
        );
    };
    let t0 = Instant::now();
    let fail = |code: u16, reason: &str, msg: String| {
        crate::node::metrics::proxy_observe(&status.name, Some(reason), t0.elapsed());
        text(code, msg)
    };
    let (Some(port), State::Running) = (status.metrics_port, status.state) else {
        return fail(
            503,
            "restarting",
            format!(
                "plugin {} is not running ({}); try the next scrape",
                status.name,
                status.describe()
            ),
        );
    };
    let timeout = scrape_timeout(request_header(r, "X-Prometheus-Scrape-Timeout-Seconds"));
    let url = format!("http://{}:{port}/metrics", cfg.loopp_host);
    let mut req = AGENT
        .get(&url)
        .config()
        .timeout_global(Some(timeout))
        .build();
    if let Some(accept) = request_header(r, "Accept") {
        req = req.header("Accept", accept);
    }
    match req.call() {
        Ok(mut resp) => {
            let code = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/plain; version=0.0.4")
                .to_string();
            let mut data = Vec::new();
            let read = resp
                .body_mut()
                .as_reader()
                .take(MAX_METRICS_BODY)
                .read_to_end(&mut data);
            if let Err(e) = read {
                let timed_out = t0.elapsed() >= timeout;
                return if timed_out {
                    fail(
                        504,
                        "timeout",
                        format!("plugin {name}: metrics not read within {timeout:?}"),
                    )
                } else {
                    fail(
                        502,
                        "read",
                        format!("plugin {name}: reading its metrics failed: {e}"),
                    )
                };
            }
            if code != 200 {
                return fail(
                    502,
                    "status",
                    format!("plugin {name}: its /metrics answered HTTP {code}"),
                );
            }
            crate::node::metrics::proxy_observe(name, None, t0.elapsed());
            body(200, &ctype, data)
        }
        Err(ureq::Error::Timeout(_)) => fail(
            504,
            "timeout",
            format!("plugin {name}: no metrics within {timeout:?}"),
        ),
        Err(e) => fail(
            502,
            "unreachable",
            format!("plugin {name}: metrics endpoint unreachable: {e}"),
        ),
    }
    .with_header(header("Cache-Control", "no-store"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_advertises_where_the_node_listens() {
        assert_eq!(discovery_host("127.0.0.1:6688", None), "127.0.0.1");
        assert_eq!(discovery_host("127.0.0.5:0", None), "127.0.0.5");
        assert_eq!(discovery_host("[::1]:6688", None), "[::1]");
        assert_eq!(
            discovery_host("0.0.0.0:6688", None),
            hostname().unwrap_or("localhost".into())
        );
        assert_eq!(
            discovery_host("127.0.0.1:6688", Some("metrics.example".into())),
            "metrics.example"
        );
    }

    #[test]
    fn scrape_timeouts_follow_prometheus_with_a_margin() {
        assert_eq!(scrape_timeout(None), DEFAULT_SCRAPE_TIMEOUT);
        assert_eq!(scrape_timeout(Some("10")), Duration::from_millis(9750));
        assert_eq!(scrape_timeout(Some("1")), Duration::from_millis(900));
        assert_eq!(scrape_timeout(Some("0.01")), Duration::from_millis(50));
        assert_eq!(scrape_timeout(Some("nan")), DEFAULT_SCRAPE_TIMEOUT);
        assert_eq!(scrape_timeout(Some("-3")), DEFAULT_SCRAPE_TIMEOUT);
    }
}
