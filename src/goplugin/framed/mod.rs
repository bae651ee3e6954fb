//! The framed transport: a routed object's unary calls between two loopp
//! processes, without gRPC.
//!
//! Between loopp processes that route (see [`crate::goplugin::route`]),
//! most of a LOOPP's calls are unary calls of brokered objects: a median
//! round is about 16 of them. Over gRPC each costs some 55-65 µs of CPU on
//! both ends together, mostly hand-offs between the caller, gRPC's
//! completion-queue and poller threads on each side. Here a call is one
//! frame each way on one unix socket per pair of processes ([`wire`]), and
//! the thread that reads a frame does the work it brings: the server's
//! reader runs the handler ([`server`]), the client's reader drives on the
//! future that waits for the answer ([`task`]). Measured with the same
//! pattern of calls as a feed's, about a third of gRPC's CPU a call.
//!
//! What a call means is unchanged: the same `loop.*` services and
//! messages (protobuf, as gRPC carries them), method names, broker ids,
//! status codes, deadlines (the caller's, sent with the call) and message
//! bounds. Handlers are the same code ([`crate::goplugin::call`]).
//! Streams stay on gRPC, as does everything a Go peer sees; between loopp
//! processes there are none: a host that frames a plugin's own services
//! ([`SELF_FIELD`]) watches its broker with unary calls
//! (`loopp.Broker`) and takes its output from its pipes.
//!
//! Negotiation, as for routing: a loopp host that routes also sets
//! [`OFFER_VAR`] in a plugin's environment (unless its own sets it to
//! `0`); a loopp plugin that finds it answers with [`HANDSHAKE_FIELD`]
//! after the routing field. Both brokers then serve their routed objects
//! on a framed server too and announce its socket with each object
//! (`ConnInfo` field 1002, which a Go peer never gets); a broker that
//! dials an object so announced calls its unary methods there.

pub mod client;
pub mod server;
pub mod task;
pub mod wire;

use std::marker::PhantomData;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use grpcio::{RpcStatus, RpcStatusCode};

pub use client::Channel;
pub use server::Server;
pub use task::spawn;

/// Set by a loopp host in a plugin's environment: the host can carry
/// routed objects' calls framed. A host whose own environment sets it to
/// `0` does not offer.
pub const OFFER_VAR: &str = "LOOPP_BROKER_FRAMED";

/// The handshake's 9th field by which a loopp plugin accepts the offer.
pub const HANDSHAKE_FIELD: &str = "loopp-framed";

/// The handshake's 10th field by which a framing loopp plugin says that
/// its own socket takes framed connections too, for every service of its
/// own ([`PLUGIN_OBJECT`]): its host then calls it only there, and
/// neither side needs gRPC. A plugin of an earlier loopp version frames
/// only brokered objects (or, with `loopp-framed-self`, its health too):
/// its host calls it over gRPC.
pub const SELF_FIELD: &str = "loopp-framed-own";

/// The broker id under which a loopp plugin serves its own services
/// (health, Shutdown, `loopp.Broker`, what it serves) framed on its own
/// socket, to a host that frames: broker ids start at 1, so no brokered
/// object has it.
pub const PLUGIN_OBJECT: u32 = 0;

/// How many framed connections a plugin's own socket keeps at once: its
/// host needs one.
pub const PLUGIN_CONNECTIONS: usize = 4;

/// How long a write may wait for the peer to read before the connection
/// is given up: a peer that stops reading must not hold a writer forever.
pub const WRITE_WITHIN: Duration = Duration::from_secs(10);

/// Whether this process, as a host, offers framing: yes unless
/// [`OFFER_VAR`] is `0` in its environment.
pub fn host_offers() -> bool {
    crate::goplugin::route::host_offers_by(OFFER_VAR)
}

/// Whether a plugin given `env` beyond what its host sets is offered
/// framing: its own [`OFFER_VAR`], if set, else the host's offer.
pub fn offered_with(env: &[(std::ffi::OsString, std::ffi::OsString)]) -> bool {
    crate::goplugin::route::offered_by(OFFER_VAR, env)
}

/// Whether this process, as a plugin, was offered framing by its host.
pub fn plugin_offered() -> bool {
    crate::goplugin::route::plugin_offered_by(OFFER_VAR)
}

/// A connection's writing end, shared by the threads that write to it;
/// one frame at a time.
pub struct Writer {
    stream: Mutex<UnixStream>,
}

impl Writer {
    fn new(stream: UnixStream) -> Writer {
        let _ = stream.set_write_timeout(Some(WRITE_WITHIN));
        Writer {
            stream: Mutex::new(stream),
        }
    }

    /// Writes one frame. A failed write (the peer gone, or not reading
    /// for [`WRITE_WITHIN`]) ends the connection both ways, so its reader
    /// ends too.
    fn write(&self, frame: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let mut s = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        let r = s.write_all(frame);
        if r.is_err() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        r
    }

    /// Ends the connection both ways.
    fn end(&self) {
        let s = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
}

/// A routed call being served: what [`crate::goplugin::call::Ctx`] holds.
#[derive(Debug)]
pub struct Served {
    method: &'static str,
}

impl Served {
    /// The full method name.
    pub fn method(&self) -> &'static str {
        self.method
    }
}

/// Where a routed call's answer goes, untyped: the generated glue gives it
/// a type ([`Answer`]). The call came framed, or over the shared gRPC
/// server ([`server::routed_unary_service`]). Dropped without an answer,
/// it answers INTERNAL, so the caller does not wait for its deadline.
pub struct RawAnswer {
    to: Option<To>,
    max_message: usize,
}

enum To {
    Framed { writer: Arc<Writer>, call: u32 },
    Grpc(grpcio::UnarySink<Vec<u8>>),
}

impl RawAnswer {
    fn new(writer: Arc<Writer>, call: u32, max_message: usize) -> RawAnswer {
        RawAnswer {
            to: Some(To::Framed { writer, call }),
            max_message,
        }
    }

    /// An answer sent on a gRPC call's sink (gRPC bounds its size).
    pub fn grpc(sink: grpcio::UnarySink<Vec<u8>>) -> RawAnswer {
        RawAnswer {
            to: Some(To::Grpc(sink)),
            max_message: usize::MAX,
        }
    }

    /// Answers with an error.
    #[inline(never)]
    pub fn send_status(mut self, status: RpcStatus) {
        let _ = self.deliver(Err(status));
    }

    #[inline(never)]
    fn send(mut self, result: Result<Vec<u8>, RpcStatus>) -> grpcio::Result<()> {
        match result {
            Ok(m) if m.len() > self.max_message => {
                let status = RpcStatus::with_message(
                    RpcStatusCode::RESOURCE_EXHAUSTED,
                    format!(
                        "an answer of {} bytes, over this side's bound of {} ({})",
                        m.len(),
                        self.max_message,
                        crate::goplugin::rpc::MAX_MESSAGE_VAR
                    ),
                );
                let _ = self.deliver(Err(status.clone()));
                Err(grpcio::Error::RpcFailure(status))
            }
            result => self.deliver(result),
        }
    }

    fn deliver(&mut self, result: Result<Vec<u8>, RpcStatus>) -> grpcio::Result<()> {
        match self.to.take() {
            Some(To::Framed { writer, call }) => {
                let frame = match &result {
                    Ok(m) => wire::answer(call, Ok(m)),
                    Err(s) => wire::answer(call, Err(s)),
                };
                writer
                    .write(&frame)
                    .map_err(|_| grpcio::Error::RemoteStopped)
            }
            Some(To::Grpc(sink)) => {
                let sent = match result {
                    Ok(m) => sink.success(m),
                    Err(s) => sink.fail(s),
                };
                // Held until the call ends: dropping the last reference to a
                // server call before then cancels it.
                spawn(async move {
                    let _ = sent.await;
                });
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Drop for RawAnswer {
    fn drop(&mut self) {
        if self.to.is_some() {
            let _ = self.deliver(Err(RpcStatus::with_message(
                RpcStatusCode::INTERNAL,
                "the handler ended without an answer".into(),
            )));
        }
    }
}

/// The error of a framed request that is not a valid `what` (for the
/// generated glue: one copy for every method).
#[inline(never)]
pub fn invalid_request(method: &str, what: &str, e: protobuf::Error) -> RpcStatus {
    RpcStatus::with_message(
        RpcStatusCode::INVALID_ARGUMENT,
        format!("{method}: the request is not a valid {what}: {e}"),
    )
}

/// Where a framed call's answer of type `T` goes.
pub struct Answer<T> {
    raw: RawAnswer,
    encode: fn(&T) -> protobuf::Result<Vec<u8>>,
    _t: PhantomData<fn(T)>,
}

impl<T> Answer<T> {
    /// `raw`, answered with `T`s that `encode` writes.
    pub fn new(raw: RawAnswer, encode: fn(&T) -> protobuf::Result<Vec<u8>>) -> Answer<T> {
        Answer {
            raw,
            encode,
            _t: PhantomData,
        }
    }

    /// Sends the answer; an error if it could not be written.
    #[inline(never)]
    pub fn send(self, result: Result<T, RpcStatus>) -> grpcio::Result<()> {
        let bytes = match result {
            Ok(t) => match (self.encode)(&t) {
                Ok(b) => Ok(b),
                Err(e) => Err(RpcStatus::with_message(
                    RpcStatusCode::INTERNAL,
                    format!("the answer could not be encoded: {e}"),
                )),
            },
            Err(s) => Err(s),
        };
        self.raw.send(bytes)
    }
}
