//! `loop.CapabilitiesRegistry`, as loopp serves it to relayers: an empty
//! registry. loopp runs no capabilities, but Go relayers dial the registry
//! id of NewRelayer and fail without one, so the host serves this on every
//! NewRelayer. It answers as a registry with nothing in it: `List` and
//! `DONsForCapability` are empty; every lookup is NOT_FOUND; this node is in
//! no DON (`LocalNode` is FAILED_PRECONDITION); `Add` is refused, since
//! nothing here would run what is added. Every answer comes from memory.

use crate::goplugin::call::{Ctx, Sink};
use grpcio::{RpcStatus, RpcStatusCode};
use protobuf::well_known_types::empty::Empty;

use crate::goplugin::rpc;
use crate::proto::capabilities_registry::*;
use crate::proto::capabilities_registry_grpc as svc;

/// The empty registry as a gRPC service, to serve on a broker id.
pub fn empty_registry_server() -> crate::goplugin::route::Offer {
    svc::offer_capabilities_registry(EmptyRegistry)
}

#[derive(Clone)]
struct EmptyRegistry;

fn not_found(what: String) -> RpcStatus {
    rpc::status(
        RpcStatusCode::NOT_FOUND,
        format!("{what}: not in this registry (loopp runs no capabilities)"),
    )
}

impl svc::CapabilitiesRegistry for EmptyRegistry {
    fn local_node(&mut self, ctx: Ctx, _req: Empty, sink: Sink<NodeReply>) {
        let no_don = rpc::status(
            RpcStatusCode::FAILED_PRECONDITION,
            "this node is in no DON: loopp runs no capabilities",
        );
        rpc::respond(&ctx, sink, Err(no_don));
    }

    fn node_by_peer_id(&mut self, ctx: Ctx, req: NodeRequest, sink: Sink<NodeReply>) {
        let peer = crate::services::wire::hex(&req.peerID);
        rpc::respond(&ctx, sink, Err(not_found(format!("node {peer}"))));
    }

    fn config_for_capability(
        &mut self,
        ctx: Ctx,
        req: ConfigForCapabilityRequest,
        sink: Sink<ConfigForCapabilityReply>,
    ) {
        let what = format!("capability {:?} in DON {}", req.capabilityID, req.donID);
        rpc::respond(&ctx, sink, Err(not_found(what)));
    }

    // DONsForCapability, as the generated glue spells it.
    fn do_ns_for_capability(
        &mut self,
        ctx: Ctx,
        _req: DONForCapabilityRequest,
        sink: Sink<DONForCapabilityReply>,
    ) {
        rpc::respond(&ctx, sink, Ok(DONForCapabilityReply::new()));
    }

    fn don_by_id(&mut self, ctx: Ctx, req: DONByIDRequest, sink: Sink<DONByIDReply>) {
        rpc::respond(&ctx, sink, Err(not_found(format!("DON {}", req.donID))));
    }

    fn get(&mut self, ctx: Ctx, req: GetRequest, sink: Sink<GetReply>) {
        rpc::respond(
            &ctx,
            sink,
            Err(not_found(format!("capability {:?}", req.id))),
        );
    }

    fn get_trigger(&mut self, ctx: Ctx, req: GetTriggerRequest, sink: Sink<GetTriggerReply>) {
        let what = format!("trigger capability {:?}", req.id);
        rpc::respond(&ctx, sink, Err(not_found(what)));
    }

    fn get_executable(
        &mut self,
        ctx: Ctx,
        req: GetExecutableRequest,
        sink: Sink<GetExecutableReply>,
    ) {
        let what = format!("executable capability {:?}", req.id);
        rpc::respond(&ctx, sink, Err(not_found(what)));
    }

    fn list(&mut self, ctx: Ctx, _req: Empty, sink: Sink<ListReply>) {
        rpc::respond(&ctx, sink, Ok(ListReply::new()));
    }

    fn add(&mut self, ctx: Ctx, req: AddRequest, sink: Sink<Empty>) {
        let refused = rpc::status(
            RpcStatusCode::FAILED_PRECONDITION,
            format!(
                "capability on broker id {}: loopp's registry takes no capabilities (it runs none)",
                req.capabilityID
            ),
        );
        rpc::respond(&ctx, sink, Err(refused));
    }

    fn remove(&mut self, ctx: Ctx, req: RemoveRequest, sink: Sink<Empty>) {
        rpc::respond(
            &ctx,
            sink,
            Err(not_found(format!("capability {:?}", req.id))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Over a real socket: empty lists, NOT_FOUND lookups naming what was
    /// asked for, no DON for this node, Add refused.
    #[test]
    fn the_empty_registry_answers_as_an_empty_registry() {
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
        broker.serve(1, vec![empty_registry_server()]).unwrap();
        let c = svc::CapabilitiesRegistryClient::new(broker.local_channel(1));
        let t = Duration::from_secs(2);
        let code = |r: Result<(), grpcio::Error>| match r {
            Err(grpcio::Error::RpcFailure(s)) => (s.code(), s.message().to_string()),
            other => panic!("expected a status, got {other:?}"),
        };
        assert!(c.list(&Empty::new(), t).unwrap().capabilityID.is_empty());
        assert!(c
            .do_ns_for_capability(&DONForCapabilityRequest::new(), t)
            .unwrap()
            .dons
            .is_empty());
        let req = GetRequest {
            id: "write_devchain@1.0.0".into(),
            ..Default::default()
        };
        let (got, text) = code(c.get(&req, t).map(|_| ()));
        assert_eq!(got, RpcStatusCode::NOT_FOUND);
        assert!(text.contains("write_devchain@1.0.0"), "{text}");
        let (got, _) = code(c.local_node(&Empty::new(), t).map(|_| ()));
        assert_eq!(got, RpcStatusCode::FAILED_PRECONDITION);
        let (got, _) = code(c.add(&AddRequest::new(), t).map(|_| ()));
        assert_eq!(got, RpcStatusCode::FAILED_PRECONDITION);
        broker.close();
    }
}
