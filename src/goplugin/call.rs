//! What the handler of a served unary call is given, whichever transport
//! carried the call: a [`Ctx`] (the method, a place to drive futures) and a
//! [`Sink`] for the one answer.
//!
//! Every call a Go peer makes arrives over gRPC, through the generated
//! glue of its service; between two loopp processes that route (see
//! [`crate::goplugin::route`]), a routed object's unary calls arrive as
//! bytes, over [`crate::goplugin::framed`] or the shared gRPC server, and
//! one glue per method decodes them. The generated
//! service traits (`build.rs`) take these two types, so an implementation
//! of a `loop.*` service is written once and answers either way, through
//! [`crate::goplugin::rpc::respond`] and its siblings. Streaming calls are
//! gRPC's only and keep grpcio's own types.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use grpcio::{RpcContext, RpcStatus, UnarySink, UnarySinkResult};

use crate::goplugin::framed;

/// A served call's context.
pub enum Ctx<'a> {
    /// A call that came over gRPC.
    Grpc(RpcContext<'a>),
    /// A call of a routed object, dispatched as bytes by loopp's own glue:
    /// it came over a framed connection, or over a routed broker's shared
    /// gRPC server (see [`framed::server::routed_unary_service`]).
    Routed(framed::Served),
}

impl Ctx<'_> {
    /// The call's full method name, `/package.Service/Method`.
    pub fn method(&self) -> Cow<'_, str> {
        match self {
            Ctx::Grpc(ctx) => String::from_utf8_lossy(ctx.method()),
            Ctx::Routed(call) => Cow::Borrowed(call.method()),
        }
    }

    /// Drives `f` to its end where the transport's replies arrive (gRPC's
    /// completion-queue thread; for a routed call, whichever thread wakes
    /// it: [`framed::spawn`]). `f` must never block.
    pub fn spawn<F>(&self, f: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self {
            Ctx::Grpc(ctx) => ctx.spawn(f),
            Ctx::Routed(_) => framed::spawn(f),
        }
    }
}

/// Where a served unary call's one answer goes.
pub enum Sink<T> {
    /// Back over gRPC.
    Grpc(UnarySink<T>),
    /// Back the way a routed call came.
    Routed(framed::Answer<T>),
}

impl<T> Sink<T> {
    /// Answers with `t`.
    pub fn success(self, t: T) -> Sent {
        match self {
            Sink::Grpc(sink) => Sent::Grpc(sink.success(t)),
            Sink::Routed(answer) => Sent::Done(Some(answer.send(Ok(t)))),
        }
    }

    /// Answers with `status`, an error.
    pub fn fail(self, status: RpcStatus) -> Sent {
        match self {
            Sink::Grpc(sink) => Sent::Grpc(sink.fail(status)),
            Sink::Routed(answer) => Sent::Done(Some(answer.send(Err(status)))),
        }
    }
}

/// An answer on its way: done when the transport has it (gRPC: the send
/// completed; framed: written to the connection, at once).
#[must_use = "a gRPC answer is only sent once its future is driven"]
pub enum Sent {
    /// gRPC's send, completed on the completion queue.
    Grpc(UnarySinkResult),
    /// Already written (or not, with the reason); taken once.
    Done(Option<grpcio::Result<()>>),
}

impl Future for Sent {
    type Output = grpcio::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Sent::Grpc(f) => Pin::new(f).poll(cx),
            Sent::Done(r) => Poll::Ready(r.take().unwrap_or(Ok(()))),
        }
    }
}
