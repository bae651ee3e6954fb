//! The plugins this binary serves, each as a go-plugin LOOPP: what
//! `loopp-median`, `loopp-devchain` and `loopp-example` (or `loopp median`,
//! ...) run. The node starts them from `CL_<NAME>_CMD`.
//!
//! [`example`] is the SDK's template: a plugin of your own is a `main` like it.

use std::process::ExitCode;
use std::sync::Arc;

use loopp::example::{ExampleServer, ExampleService};
use loopp::goplugin::handshake::Cookie;
use loopp::goplugin::plugin::{serve, MetricsPort, ServeConfig};
use loopp::services::service::{served, AlwaysReady};

/// The median product plugin (cookie of the Go median plugins). The host
/// calls `loop.PluginMedian/NewMedianFactory` with the broker ids of the
/// provider and data sources it serves, then `NewReportingPlugin` per oracle.
pub fn median() -> ExitCode {
    let config = ServeConfig {
        name: "median".into(),
        cookie: Cookie::median(),
        versions: vec![0],
        metrics: MetricsPort::Required,
    };
    serve(config, |plugin| {
        Ok(served(
            Arc::new(AlwaysReady("median")),
            vec![loopp::services::median::factory_grpc::plugin_median_server(
                plugin.broker.clone(),
                Arc::new(loopp::median::factory::Median),
            )],
        ))
    })
}

/// The devchain relayer (cookie of the Go relayer plugins). The host calls
/// `loop.PluginRelayer/NewRelayer` with `{"chainFile": "..."}`, then
/// `NewPluginProvider` for a median provider.
pub fn devchain() -> ExitCode {
    let config = ServeConfig {
        name: "devchain".into(),
        cookie: Cookie::relayer(),
        versions: vec![0],
        metrics: MetricsPort::Required,
    };
    serve(config, |plugin| {
        Ok(served(
            Arc::new(AlwaysReady("devchain")),
            vec![loopp::services::relay::grpc::plugin_relayer_server(
                plugin.broker.clone(),
                Arc::new(loopp::devchain::relayer::Devchain::new()),
            )],
        ))
    })
}

/// The SDK example plugin: the `loop.Service` API and the
/// `loopp.example.Example` service (`proto/example.proto`), whose methods
/// show a plain call, serving a sub-service on a broker id and dialing one
/// the host serves. Run it through a host, e.g.
/// `loopp probe --kind example -- loopp-example`.
pub fn example() -> ExitCode {
    let config = ServeConfig {
        name: "example".to_string(),
        cookie: Cookie::example(),
        versions: vec![0],
        // Also runs under plain go-plugin hosts, which set no metrics port.
        metrics: MetricsPort::IfSet,
    };
    serve(config, |plugin| {
        log::info!(
            "example plugin starting with app version {}",
            plugin.app_version
        );
        Ok(served(
            Arc::new(ExampleService),
            vec![ExampleServer::new("loopp: ", plugin.broker.clone()).service()],
        ))
    })
}
