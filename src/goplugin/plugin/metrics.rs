//! A plugin's own `/metrics` endpoint, on 127.0.0.1:`CL_PROMETHEUS_PORT`.

use crate::goplugin::http::{body, method_allowed, text, HttpServer, Limits};

/// Listens on 127.0.0.1:`port`, for [`serve_metrics`].
pub fn bind_metrics(port: u16) -> std::io::Result<std::net::TcpListener> {
    HttpServer::bind(&format!("127.0.0.1:{port}"))
}

/// Serves `/metrics` (everything in the process's metrics registry) on
/// `listener` (see [`bind_metrics`]), with two worker threads.
pub fn serve_metrics(listener: std::net::TcpListener) -> std::io::Result<HttpServer> {
    HttpServer::start_on(listener, 2, "metrics", Limits::default(), |r| {
        if let Err(reply) = method_allowed(r) {
            return reply;
        }
        match r.url().split('?').next().unwrap_or("") {
            "/metrics" => {
                let (data, ctype) = crate::goplugin::metrics::encode();
                body(200, &ctype, data)
            }
            _ => text(404, "not found; metrics are at /metrics"),
        }
    })
}
