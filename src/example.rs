//! The example application service (`loopp.example.Example`, see
//! `proto/example.proto`): what `loopp-example` serves and what a plugin author
//! copies. It shows the three things an app service does: answer a call, serve a
//! sub-service on a broker id, and dial a sub-service the other side serves.

use crate::goplugin::call::{Ctx, Sink};
use std::time::Duration;

use grpcio::RpcStatusCode;
use protobuf::well_known_types::empty::Empty;

use crate::goplugin::broker::{Broker, DEFAULT_DIAL_TIMEOUT};
use crate::goplugin::error::{rpc_status_text, Error};
use crate::goplugin::rpc;
use crate::proto::example::{BrokerId, Text};
use crate::proto::example_grpc::{self, ExampleClient};

/// Deadline of the Echo call that CallEcho makes on the caller's server.
pub const CALL_ECHO_TIMEOUT: Duration = Duration::from_secs(5);

/// An Example server that answers Echo with `prefix` + text.
#[derive(Clone)]
pub struct ExampleServer {
    prefix: String,
    broker: Broker,
}

impl ExampleServer {
    /// A server whose Echo replies start with `prefix` and which serves and
    /// dials sub-services through `broker`.
    pub fn new(prefix: &str, broker: Broker) -> ExampleServer {
        ExampleServer {
            prefix: prefix.to_string(),
            broker,
        }
    }

    /// As a grpcio service.
    pub fn service(self) -> crate::goplugin::route::Offer {
        example_grpc::offer_example(self)
    }
}

/// A `Text` message.
pub fn text(s: &str) -> Text {
    Text {
        value: s.to_string(),
        ..Default::default()
    }
}

impl example_grpc::Example for ExampleServer {
    fn echo(&mut self, ctx: Ctx, req: Text, sink: Sink<Text>) {
        rpc::respond(
            &ctx,
            sink,
            Ok(text(&format!("{}{}", self.prefix, req.value))),
        );
    }

    fn serve_echo(&mut self, ctx: Ctx, _req: Empty, sink: Sink<BrokerId>) {
        let id = self.broker.next_id();
        let r = self
            .broker
            .serve(id, vec![self.clone().service()])
            .map(|()| BrokerId {
                value: id,
                ..Default::default()
            })
            .map_err(|e| rpc::status(RpcStatusCode::INTERNAL, e.to_string()));
        rpc::respond(&ctx, sink, r);
    }

    fn call_echo(&mut self, ctx: Ctx, req: BrokerId, sink: Sink<Text>) {
        let broker = self.broker.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            let channel = broker
                .dial(req.value, DEFAULT_DIAL_TIMEOUT)
                .map_err(|e| rpc::status(RpcStatusCode::UNAVAILABLE, e.to_string()))?;
            ExampleClient::new(channel)
                .echo(&text("ping"), CALL_ECHO_TIMEOUT)
                .map_err(|e| {
                    rpc::status(
                        RpcStatusCode::UNAVAILABLE,
                        format!("Echo on broker id {}: {}", req.value, rpc_status_text(&e)),
                    )
                })
        });
    }
}

/// The example's `loop.Service`: always ready and healthy.
pub struct ExampleService;

impl crate::services::service::Service for ExampleService {
    fn name(&self) -> String {
        "example".to_string()
    }

    fn close(&self) -> Result<(), String> {
        log::info!("example service closed");
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    fn health_report(&self) -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::from([("example".to_string(), String::new())])
    }
}

/// Calls Echo on a peer's Example service with a deadline.
pub fn echo(
    plugin: &str,
    client: &ExampleClient,
    s: &str,
    timeout: Duration,
) -> Result<String, Error> {
    client
        .echo(&text(s), timeout)
        .map(|t| t.value)
        .map_err(|e| Error::rpc(plugin, "/loopp.example.Example/Echo", &e))
}
