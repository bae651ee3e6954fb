//! Objects one side serves for the other on broker ids (a relayer, a
//! provider, a factory, a reporting plugin) and how long they live.
//!
//! Plugin side: [`serve`] puts an object's services on a fresh broker id
//! together with a `loop.Service` whose `Close` stops that id (after the
//! reply is on its way), as a Go LOOP resource is closed. Host side: a
//! [`Remote`] guard is held by the client adapter of such an object; when
//! the last holder drops it, it sends that `Close` on a short-lived thread
//! with [`CLOSE_TIMEOUT`], so rebuilding a feed after a failure leaves
//! nothing running in the plugins. Errors are ignored: a plugin that is gone
//! has nothing left to close.

use crate::goplugin::call::{Ctx, Sink};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::goplugin::route::Conn as Channel;

use protobuf::well_known_types::empty::Empty;

use crate::goplugin::broker::Broker;
use crate::goplugin::error::Result;
use crate::goplugin::rpc;
use crate::proto::loop_service::{HealthReportReply, NameReply};
use crate::proto::loop_service_grpc;

/// Deadline of the `Close` a dropped [`Remote`] sends.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves `services` for the other side on a fresh id of `broker`, with a
/// `loop.Service` named `name` whose `Close` stops them; returns the id.
pub fn serve(
    broker: &Broker,
    name: &str,
    mut services: Vec<crate::goplugin::route::Offer>,
) -> Result<u32> {
    let id = broker.next_id();
    services.push(loop_service_grpc::offer_service(Resource {
        name: name.to_string(),
        broker: broker.clone(),
        id,
    }));
    broker.serve(id, services)?;
    Ok(id)
}

#[derive(Clone)]
struct Resource {
    name: String,
    broker: Broker,
    id: u32,
}

impl loop_service_grpc::Service for Resource {
    fn name(&mut self, ctx: Ctx, _req: Empty, sink: Sink<NameReply>) {
        let reply = NameReply {
            name: self.name.clone(),
            ..Default::default()
        };
        rpc::respond(&ctx, sink, Ok(reply));
    }

    fn close(&mut self, _ctx: Ctx, _req: Empty, sink: Sink<Empty>) {
        let (broker, id) = (self.broker.clone(), self.id);
        let call = crate::goplugin::metrics::server_call();
        // Reply first: stopping the server cancels the calls still on it.
        let spawned = std::thread::Builder::new()
            .name("resource-close".into())
            .spawn(move || {
                let _ = futures_executor::block_on(sink.success(Empty::new()));
                call.finish("OK");
                broker.stop(id);
            });
        if let Err(e) = spawned {
            log::error!("cannot spawn a thread to close broker id {}: {e}", self.id);
        }
    }

    fn ready(&mut self, ctx: Ctx, _req: Empty, sink: Sink<Empty>) {
        rpc::respond(&ctx, sink, Ok(Empty::new()));
    }

    fn health_report(&mut self, ctx: Ctx, _req: Empty, sink: Sink<HealthReportReply>) {
        let reply = HealthReportReply {
            healthReport: BTreeMap::from([(self.name.clone(), String::new())])
                .into_iter()
                .collect(),
            ..Default::default()
        };
        rpc::respond(&ctx, sink, Ok(reply));
    }
}

/// The host's hold on an object a plugin serves for it: closes it when
/// dropped.
pub struct Remote {
    name: String,
    channel: Option<Channel>,
}

impl Remote {
    /// The object `name` (for logs and metrics) on `channel`.
    pub fn new(name: &str, channel: Channel) -> Remote {
        Remote {
            name: name.to_string(),
            channel: Some(channel),
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let Some(channel) = self.channel.take() else {
            return;
        };
        let client =
            crate::services::service::ServiceClient::new(&self.name, channel, CLOSE_TIMEOUT);
        let _ = std::thread::Builder::new()
            .name("remote-close".into())
            .spawn(move || {
                if let Err(e) = crate::services::service::Service::close(&client) {
                    log::debug!("closing a remote object: {e}");
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_remote_closes_the_served_object() {
        let plugin = Broker::new(crate::goplugin::sockdir::SocketDir::create().unwrap());
        let id = serve(&plugin, "thing", vec![]).unwrap();
        let path = plugin.served_address(id).expect("served");
        let remote = Remote::new("thing", plugin.local_channel(id));
        let named = crate::services::service::ServiceClient::new(
            "thing",
            plugin.local_channel(id),
            Duration::from_secs(2),
        );
        assert_eq!(named.try_name(), Ok("thing".into()));
        drop(remote);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // The server leaves the broker's list, then its socket goes.
        while (plugin.served_address(id).is_some() || path.exists())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(plugin.served_address(id), None, "the plugin stopped it");
        assert!(!path.exists(), "and removed its socket");
        plugin.close();
    }
}
