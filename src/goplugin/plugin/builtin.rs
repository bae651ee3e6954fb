//! The services every plugin serves, whatever it is: grpc.health.v1 (the host's
//! ping), `plugin.GRPCController` (Shutdown), `plugin.GRPCBroker` (StartStream)
//! and `plugin.GRPCStdio` (StreamStdio); and to a loopp host that frames the
//! plugin's own services, `loopp.Broker` (the broker's stream as two unary
//! calls).

use crate::goplugin::call::{Ctx, Sink};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use futures_util::SinkExt;
use grpcio::{
    DuplexSink, RequestStream, RpcContext, RpcStatusCode, ServerStreamingSink, WriteFlags,
};

use crate::goplugin::broker::Broker;
use crate::goplugin::plugin::stdio::Stdio;
use crate::goplugin::plugin::Stop;
use crate::goplugin::rpc;
use crate::proto::grpc_broker::ConnInfo;
use crate::proto::grpc_controller::Empty;
use crate::proto::grpc_stdio::StdioData;
use crate::proto::health::{
    health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse,
};
use crate::proto::loopp_broker::{Announced, Announcements, WatchRequest};
use crate::proto::{
    grpc_broker_grpc, grpc_controller_grpc, grpc_stdio_grpc, health_grpc, loopp_broker_grpc,
};

/// Health: `plugin` and `""` are SERVING until shutdown begins, then NOT_SERVING.
#[derive(Clone)]
pub struct Health {
    pub(crate) stopping: Arc<AtomicBool>,
}

impl health_grpc::Health for Health {
    fn check(&mut self, ctx: Ctx, req: HealthCheckRequest, sink: Sink<HealthCheckResponse>) {
        let r = match req.service.as_str() {
            "" | "plugin" => {
                let status = if self.stopping.load(Ordering::Relaxed) {
                    ServingStatus::NOT_SERVING
                } else {
                    ServingStatus::SERVING
                };
                Ok(HealthCheckResponse {
                    status: status.into(),
                    ..Default::default()
                })
            }
            other => Err(rpc::status(
                RpcStatusCode::NOT_FOUND,
                format!("unknown service {other:?}; this plugin reports \"plugin\" and \"\""),
            )),
        };
        rpc::respond(&ctx, sink, r);
    }
}

/// Controller: Shutdown replies, then asks `serve` to stop.
#[derive(Clone)]
pub struct Controller {
    pub(crate) stop: Sender<Stop>,
}

impl grpc_controller_grpc::GRPCController for Controller {
    fn shutdown(&mut self, ctx: Ctx, _req: Empty, sink: Sink<Empty>) {
        let stop = self.stop.clone();
        let reply = sink.success(Empty::new());
        // Stop only after the reply is on its way, so the host sees success.
        ctx.spawn(async move {
            let _ = reply.await;
            let _ = stop.send(Stop::ShutdownRpc);
        });
    }
}

/// The broker's StartStream, served to the host.
#[derive(Clone)]
pub struct BrokerService {
    pub(crate) broker: Broker,
}

impl grpc_broker_grpc::GRPCBroker for BrokerService {
    fn start_stream(
        &mut self,
        _ctx: RpcContext,
        stream: RequestStream<ConnInfo>,
        sink: DuplexSink<ConnInfo>,
    ) {
        self.broker.attach(sink, stream);
    }
}

/// `loopp.Broker`: the broker stream's work for a host that frames the
/// plugin's own services, which has no stream.
#[derive(Clone)]
pub struct FramedBroker {
    pub(crate) broker: Broker,
}

impl loopp_broker_grpc::Broker for FramedBroker {
    fn announce(&mut self, ctx: Ctx, req: ConnInfo, sink: Sink<Announced>) {
        let r = self
            .broker
            .received(req)
            .map(|()| Announced::new())
            .map_err(|e| rpc::status(RpcStatusCode::UNAVAILABLE, e.to_string()));
        rpc::respond(&ctx, sink, r);
    }

    fn watch(&mut self, ctx: Ctx, req: WatchRequest, sink: Sink<Announcements>) {
        let (tx, rx) = futures_channel::oneshot::channel();
        // Answered now, at the broker's next announcement or at its close:
        // no thread waits meanwhile.
        self.broker.watch(
            req.after,
            Box::new(move |got| {
                let _ = tx.send(got);
            }),
        );
        rpc::respond_when(&ctx, sink, async move {
            match rx.await {
                Ok(Ok((infos, last))) => Ok(Announcements {
                    infos,
                    last,
                    ..Default::default()
                }),
                Ok(Err(e)) => Err(rpc::status(RpcStatusCode::UNAVAILABLE, e.to_string())),
                Err(_) => Err(rpc::status(
                    RpcStatusCode::UNAVAILABLE,
                    "the plugin's broker dropped the watch",
                )),
            }
        });
    }
}

/// StreamStdio: forwards captured stdout/stderr to the one subscriber.
#[derive(Clone)]
pub struct StdioService {
    pub(crate) stdio: Stdio,
}

impl grpc_stdio_grpc::GRPCStdio for StdioService {
    fn stream_stdio(
        &mut self,
        _ctx: RpcContext,
        _req: protobuf::well_known_types::empty::Empty,
        mut sink: ServerStreamingSink<StdioData>,
    ) {
        let rx = self.stdio.subscribe();
        let spawned = std::thread::Builder::new()
            .name("stdio-stream".into())
            .spawn(move || {
                for data in rx.iter() {
                    if futures_executor::block_on(sink.send((data, WriteFlags::default()))).is_err()
                    {
                        return;
                    }
                }
                let _ = futures_executor::block_on(sink.close());
            });
        if let Err(e) = spawned {
            log::error!("cannot spawn the stdio stream thread: {e}");
        }
    }
}
