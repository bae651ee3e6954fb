//! `loopp-example`: the SDK example plugin. Copy this file to start a plugin.
//!
//! It serves the `loop.Service` API and the `loopp.example.Example` service
//! (`proto/example.proto`), whose methods show a plain call, serving a
//! sub-service on a broker id and dialing one the host serves. Run it through a
//! host, e.g. `loopp-node probe --kind example -- loopp-example`.

use std::process::ExitCode;
use std::sync::Arc;

use loopp::example::{ExampleServer, ExampleService};
use loopp::goplugin::handshake::Cookie;
use loopp::goplugin::plugin::{serve, MetricsPort, ServeConfig};
use loopp::services::service::served;

fn main() -> ExitCode {
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
