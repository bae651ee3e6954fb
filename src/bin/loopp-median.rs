//! `loopp-median`: the median product plugin as a LOOPP (cookie of the Go
//! median plugins). The host calls `loop.PluginMedian/NewMedianFactory` with
//! the broker ids of the provider and data sources it serves, then
//! `NewReportingPlugin` per oracle.

use std::process::ExitCode;
use std::sync::Arc;

use loopp::goplugin::handshake::Cookie;
use loopp::goplugin::plugin::{serve, MetricsPort, ServeConfig};
use loopp::services::service::served;

/// The median plugin's `loop.Service`.
struct MedianService;

impl loopp::services::service::Service for MedianService {
    fn name(&self) -> String {
        "median".into()
    }

    fn close(&self) -> Result<(), String> {
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    fn health_report(&self) -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::from([("median".to_string(), String::new())])
    }
}

fn main() -> ExitCode {
    let config = ServeConfig {
        name: "median".into(),
        cookie: Cookie::median(),
        versions: vec![0],
        metrics: MetricsPort::Required,
    };
    serve(config, |plugin| {
        Ok(served(
            Arc::new(MedianService),
            vec![loopp::services::median::factory_grpc::plugin_median_server(
                plugin.broker.clone(),
                Arc::new(loopp::median::factory::Median),
            )],
        ))
    })
}
