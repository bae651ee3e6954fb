//! `loopp-devchain`: the devchain relayer as a LOOPP (cookie of the Go relayer
//! plugins). The host calls `loop.PluginRelayer/NewRelayer` with
//! `{"chainFile": "..."}`, then `NewPluginProvider` for a median provider.

use std::process::ExitCode;
use std::sync::Arc;

use loopp::goplugin::handshake::Cookie;
use loopp::goplugin::plugin::{serve, MetricsPort, ServeConfig};
use loopp::services::service::served;

/// The relayer's `loop.Service`.
struct DevchainService;

impl loopp::services::service::Service for DevchainService {
    fn name(&self) -> String {
        "devchain".into()
    }

    fn close(&self) -> Result<(), String> {
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    fn health_report(&self) -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::from([("devchain".to_string(), String::new())])
    }
}

fn main() -> ExitCode {
    let config = ServeConfig {
        name: "devchain".into(),
        cookie: Cookie::relayer(),
        versions: vec![0],
        metrics: MetricsPort::Required,
    };
    serve(config, |plugin| {
        Ok(served(
            Arc::new(DevchainService),
            vec![loopp::services::relay::grpc::plugin_relayer_server(
                plugin.broker.clone(),
                Arc::new(loopp::devchain::relayer::Devchain::new()),
            )],
        ))
    })
}
