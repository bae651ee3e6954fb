//! A unary call's reply that never panics the thread waiting for it.
//!
//! grpcio's `ClientUnaryReceiver` unwraps the reply message of a call that
//! ended OK, and panics when there is none (tikv/grpc-rs#670). A server
//! may end a unary call OK without a message (a buggy or hostile plugin:
//! on the wire a unary reply is a stream, which may be empty), and gRPC's
//! C core ends calls so by itself: a call whose deadline passed while the
//! process was SIGSTOPped, its OK reply already in the socket, sometimes
//! ends OK without the message when it is read. Seen with a supervisor's
//! health check (its thread died with the panic: the plugin was shut
//! down and never started again) and with a round's Report call (a panic
//! on the completion-queue thread stops the feed).
//!
//! Every unary call of the generated clients (`proto`, `build.rs`) goes
//! through [`Unary`]: the blocking methods wait for it with [`wait`], the
//! `<method>_async` ones return it. A receiver that panics is the call's
//! INTERNAL error, naming what happened, and the panic prints nothing (see
//! [`quietly`]): the caller reports the error as it reports any other.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use grpcio::{ClientUnaryReceiver, RpcStatus, RpcStatusCode};

/// The reply of a unary call: its message, or the call's error.
#[must_use = "dropping the reply cancels the call"]
pub struct Unary<T>(Carried<T>);

enum Carried<T> {
    Grpc(ClientUnaryReceiver<T>),
    /// A framed call's answer, and the decoder of its message.
    Framed(
        crate::goplugin::framed::client::Pending,
        fn(&[u8]) -> protobuf::Result<T>,
    ),
}

impl<T> Unary<T> {
    /// Guards `receiver`.
    pub fn new(receiver: ClientUnaryReceiver<T>) -> Unary<T> {
        Unary(Carried::Grpc(receiver))
    }

    /// A framed call's answer, decoded with `decode`.
    pub fn framed(
        pending: crate::goplugin::framed::client::Pending,
        decode: fn(&[u8]) -> protobuf::Result<T>,
    ) -> Unary<T> {
        Unary(Carried::Framed(pending, decode))
    }
}

impl<T: Unpin> Future for Unary<T> {
    type Output = grpcio::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let receiver = match &mut self.get_mut().0 {
            Carried::Grpc(receiver) => receiver,
            Carried::Framed(pending, decode) => {
                return Pin::new(pending).poll(cx).map(|r| {
                    r.and_then(|bytes| {
                        decode(&bytes).map_err(|e| {
                            grpcio::Error::RpcFailure(RpcStatus::with_message(
                                RpcStatusCode::INTERNAL,
                                format!("the reply is not a valid message: {e}"),
                            ))
                        })
                    })
                })
            }
        };
        match quietly(|| Pin::new(receiver).poll(cx)) {
            Ok(polled) => polled,
            Err(what) => Poll::Ready(Err(grpcio::Error::RpcFailure(RpcStatus::with_message(
                RpcStatusCode::INTERNAL,
                format!(
                    "the call ended without a reply message, which a unary call must have (grpcio: {what})"
                ),
            )))),
        }
    }
}

/// Waits on this thread for a call sent with `start` (a generated client's
/// blocking method): its [`Unary`], waited for by
/// [`crate::goplugin::spinwait`] (a short spin before parking), which may
/// run where grpcio's blocking methods may.
pub fn wait<T: Unpin>(start: grpcio::Result<Unary<T>>) -> grpcio::Result<T> {
    crate::goplugin::spinwait::block_on(start?)
}

thread_local! {
    /// This thread is inside [`quietly`]: a panic is caught there, and the
    /// panic hook stays silent.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, catching a panic: its message, and nothing printed. The
/// first use puts a hook in front of the process's panic hook (whatever
/// it is then, a plugin's included) that passes on every panic but those.
fn quietly<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = QUIET.with(|q| q.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(outer));
    r.map_err(|payload| crate::goplugin::error::panic_message(&*payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::health::{HealthCheckRequest, HealthCheckResponse};
    use grpcio::{
        ChannelBuilder, EnvBuilder, Method, MethodType, ServerBuilder, ServerCredentials,
        ServerStreamingSink, ServiceBuilder,
    };
    use std::sync::Arc;
    use std::time::Duration;

    /// Health checks answered OK with no message: on the wire a unary
    /// reply is a stream, so a server-streaming handler that sends nothing
    /// and ends OK is such a server.
    fn silent_server() -> (grpcio::Server, u16) {
        let streaming: Method<HealthCheckRequest, HealthCheckResponse> = Method {
            ty: MethodType::ServerStreaming,
            ..crate::proto::health_grpc::METHOD_HEALTH_CHECK
        };
        let service = ServiceBuilder::new()
            .add_server_streaming_handler(
                &streaming,
                |ctx, _req, sink: ServerStreamingSink<HealthCheckResponse>| {
                    ctx.spawn(async move {
                        let mut sink = sink;
                        let _ = futures_util::SinkExt::close(&mut sink).await;
                    })
                },
            )
            .build();
        let env = Arc::new(EnvBuilder::new().cq_count(1).build());
        let mut server = ServerBuilder::new(env)
            .register_service(service)
            .build()
            .unwrap();
        let port = server
            .add_listening_port("127.0.0.1:0", ServerCredentials::insecure())
            .unwrap();
        server.start();
        (server, port)
    }

    fn client(port: u16) -> crate::proto::health_grpc::HealthClient {
        let env = Arc::new(EnvBuilder::new().cq_count(1).build());
        let channel = ChannelBuilder::new(env).connect(&format!("127.0.0.1:{port}"));
        crate::proto::health_grpc::HealthClient::new(channel)
    }

    fn assert_named(r: grpcio::Result<HealthCheckResponse>) {
        match r {
            Err(grpcio::Error::RpcFailure(s)) => {
                assert_eq!(s.code(), RpcStatusCode::INTERNAL);
                assert!(
                    s.message().contains("without a reply message"),
                    "{}",
                    s.message()
                );
            }
            other => panic!("expected INTERNAL, got {other:?}"),
        }
    }

    /// grpcio's own receiver panics on such a reply; the generated
    /// clients' calls, blocking and sent without waiting, give an error
    /// that says what happened, and the thread goes on.
    #[test]
    fn a_unary_reply_without_a_message_is_an_error_not_a_panic() {
        let (mut server, port) = silent_server();
        let health = client(port);
        let req = HealthCheckRequest::new();
        // grpcio unguarded: the panic this module is for.
        let env = Arc::new(EnvBuilder::new().cq_count(1).build());
        let raw =
            grpcio::Client::new(ChannelBuilder::new(env).connect(&format!("127.0.0.1:{port}")));
        let opt = grpcio::CallOption::default().timeout(Duration::from_secs(5));
        let sent = raw
            .unary_call_async(&crate::proto::health_grpc::METHOD_HEALTH_CHECK, &req, opt)
            .unwrap();
        match quietly(|| futures_executor::block_on(sent)) {
            Err(what) => assert!(what.contains("None"), "{what}"),
            Ok(r) => panic!(
                "grpcio's receiver no longer panics on a reply without a message (grpc-rs#670 fixed?), it gave {r:?}: this guard may go"
            ),
        }
        let blocking = health.check(&req, Duration::from_secs(5));
        assert_named(blocking);
        let sent = health.check_async(&req, Duration::from_secs(5)).unwrap();
        assert_named(futures_executor::block_on(sent));
        // Polled again after it failed: the same error, no panic.
        let mut sent = health.check_async(&req, Duration::from_secs(5)).unwrap();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let first = loop {
            if let Poll::Ready(r) = Pin::new(&mut sent).poll(&mut cx) {
                break r;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_named(first);
        let Poll::Ready(again) = Pin::new(&mut sent).poll(&mut cx) else {
            panic!("a finished reply is ready")
        };
        assert!(again.is_err());
        let _ = futures_executor::block_on(server.shutdown());
    }

    #[test]
    fn quietly_gives_a_panics_message_and_restores_the_flag() {
        assert_eq!(
            quietly(|| panic!("inside")).unwrap_err(),
            "inside".to_string()
        );
        assert!(!QUIET.with(Cell::get), "the flag is restored");
        assert_eq!(quietly(|| 7).unwrap(), 7);
    }
}
