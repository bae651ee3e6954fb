//! Routed brokering: every object a broker serves, on one shared server.
//!
//! In go-plugin every brokered object (a provider, a data source, a
//! reporting plugin...) is a gRPC server of its own on a socket of its own,
//! and the other side dials each with a connection of its own: a socket,
//! two fds and some 54 KiB of transport state per object, on both sides.
//! A median feed brokers about a dozen.
//!
//! When both sides are loopp they agree, at the handshake, to route instead:
//! each broker runs one shared server that serves every service of `proto/`
//! through a [`Table`] of the objects it serves by broker id, and announces
//! every id at that one server's address. The dialing side keeps one channel
//! per address and names the id in the [`ROUTE_HEADER`] of every call
//! ([`Conn`]). Ids, announcements, `Close` and lifetimes are unchanged; only
//! the transport is shared.
//!
//! A host can also hand on an object it dialed from one plugin to another
//! ([`Broker::forward`](crate::goplugin::broker::Broker::forward)): it
//! announces the [`Endpoint`] it reached it at (the first plugin's shared
//! server and id there), and the second plugin calls the first directly,
//! instead of through an object the host serves again and every call
//! crossing the host twice. The node does this with a LOOPP relayer's
//! median provider for a LOOPP median plugin, when both route; a host
//! whose environment sets [`FORWARD_VAR`] to `0` serves it again, as
//! go-plugin and Chainlink do.
//!
//! Negotiation, so a Go peer never sees any of it: a loopp host sets
//! [`OFFER_VAR`] in the plugin's environment (unless its own environment sets
//! it to `0`); a loopp plugin that finds it appends [`HANDSHAKE_FIELD`] to its
//! handshake line as an 8th field. A Go plugin ignores the variable and a Go
//! host never sets it, so both keep go-plugin's one server per object.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use grpcio::{Channel, Metadata, MetadataBuilder, RpcContext, RpcStatus, RpcStatusCode, Service};

use crate::goplugin::pool::Lane;

/// The metadata header naming the broker id a routed call is for.
pub const ROUTE_HEADER: &str = "loopp-broker-id";

/// Set by a loopp host in a plugin's environment: the host can route.
/// A host whose own environment sets it to `0` does not offer.
pub const OFFER_VAR: &str = "LOOPP_BROKER_ROUTED";

/// The handshake's 8th field by which a loopp plugin accepts the offer.
pub const HANDSHAKE_FIELD: &str = "loopp-routed";

/// Set to `0` in a host's environment: the host serves again what it would
/// forward (see [`Endpoint`]), so plugins reach each other only through it.
pub const FORWARD_VAR: &str = "LOOPP_BROKER_FORWARD";

/// Whether this process, as a host, forwards routed objects from one
/// plugin to another: yes unless [`FORWARD_VAR`] is `0`.
pub fn host_forwards() -> bool {
    host_offers_by(FORWARD_VAR)
}

/// Whether this process, as a host, offers routing to its plugins: yes
/// unless [`OFFER_VAR`] is `0` in its environment.
pub fn host_offers() -> bool {
    host_offers_by(OFFER_VAR)
}

/// Whether a plugin given `env` beyond what its host sets is offered
/// routing: its own [`OFFER_VAR`], if set, else the host's offer.
pub fn offered_with(env: &[(std::ffi::OsString, std::ffi::OsString)]) -> bool {
    offered_by(OFFER_VAR, env)
}

/// Whether this process, as a plugin, was offered routing by its host.
pub fn plugin_offered() -> bool {
    plugin_offered_by(OFFER_VAR)
}

/// Whether this process, as a host, makes the offer a loopp host makes
/// by setting `var` (routing, framing; forwarding, which it only does):
/// yes unless its own environment sets `var` to `0`.
pub fn host_offers_by(var: &str) -> bool {
    std::env::var(var).map_or(true, |v| v.trim() != "0")
}

/// Whether a plugin given `env` beyond what its host sets gets the offer
/// of `var`: its own `var`, if set (`1`: yes), else the host's offer.
pub fn offered_by(var: &str, env: &[(std::ffi::OsString, std::ffi::OsString)]) -> bool {
    env.iter().rev().find(|(k, _)| k == var).map_or_else(
        || host_offers_by(var),
        |(_, v)| v.to_str().is_some_and(|v| v.trim() == "1"),
    )
}

/// Whether this process, as a plugin, was made the offer of `var`.
pub fn plugin_offered_by(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v.trim() == "1")
}

/// What a client calls: a channel's client, and for a routed object the
/// header that names it. A plain [`Channel`] converts into one.
///
/// Generated clients made from one `Conn` (or its clones) share its
/// `grpcio::Client`: each `grpcio::Client::new` makes a gRPC call object of
/// its own (to wake its completion queue), kilobytes that a client per
/// object, per call or per feed would multiply.
#[derive(Clone)]
pub struct Conn {
    /// The connection's gRPC client, made at its first gRPC call.
    pub client: crate::goplugin::rpc::LazyClient,
    /// The [`ROUTE_HEADER`] to send with every call, if routed.
    pub route: Option<Metadata>,
    /// Where the routed object is, when the broker dialed it: what a host
    /// announces to forward it.
    pub endpoint: Option<Endpoint>,
    /// The framed connection its unary calls go on, and the object's id
    /// there (see [`crate::goplugin::framed`]), when both sides frame.
    pub framed: Option<(crate::goplugin::framed::Channel, u32)>,
}

/// A routed object's place: the shared server's unix socket and the
/// object's id there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The shared server's socket.
    pub address: String,
    /// The object's id on that server.
    pub id: u32,
    /// The socket of that process's framed server, if it has one.
    pub framed: Option<String>,
}

impl Conn {
    /// A connection to object `id` on a shared server reached by `client`.
    pub fn routed(client: crate::goplugin::rpc::LazyClient, id: u32) -> Conn {
        let mut b = MetadataBuilder::with_capacity(1);
        b.add_str(ROUTE_HEADER, &id.to_string())
            .expect("a valid header name and value");
        Conn {
            client,
            route: Some(b.build()),
            endpoint: None,
            framed: None,
        }
    }

    /// As [`Conn::routed`], to `at` (reached by `client`), which it keeps;
    /// its unary calls go on `framed`, if given.
    pub fn routed_at(
        client: crate::goplugin::rpc::LazyClient,
        at: Endpoint,
        framed: Option<crate::goplugin::framed::Channel>,
    ) -> Conn {
        Conn {
            framed: framed.map(|c| (c, at.id)),
            endpoint: Some(at.clone()),
            ..Conn::routed(client, at.id)
        }
    }
}

impl From<crate::goplugin::rpc::LazyClient> for Conn {
    fn from(client: crate::goplugin::rpc::LazyClient) -> Conn {
        Conn {
            client,
            route: None,
            endpoint: None,
            framed: None,
        }
    }
}

impl From<Channel> for Conn {
    fn from(channel: Channel) -> Conn {
        Conn::from(crate::goplugin::rpc::LazyClient::of(channel))
    }
}

/// One served implementation of service trait `T` (`dyn X + Send`), with
/// the lane its calls run in. Calls take the lock only to dispatch: the
/// handlers hand their work to the pool or answer at once.
pub struct Routed<T: ?Sized> {
    /// The lane that was ambient when it was offered.
    pub lane: Option<Lane>,
    inner: Mutex<Box<T>>,
}

impl<T: ?Sized> Routed<T> {
    /// `inner`, whose calls run in `lane`.
    pub fn new(lane: Option<Lane>, inner: Box<T>) -> Routed<T> {
        Routed {
            lane,
            inner: Mutex::new(inner),
        }
    }

    /// The implementation, for one call.
    pub fn lock(&self) -> MutexGuard<'_, Box<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Erased = Arc<dyn Any + Send + Sync>;

/// By broker id: each service offered for it, by full name.
type Routes = HashMap<u32, Vec<(&'static str, Erased)>>;

/// A service implementation offered for a broker id, made by the generated
/// `offer_<service>`: the broker serves it on a server of its own
/// ([`Offer::into_service`]) or routes to it on its shared server.
pub struct Offer {
    service: &'static str,
    routed: Erased,
    direct: Box<dyn FnOnce() -> Service + Send>,
}

impl Offer {
    /// `service` (its full name), served through `routed` (a
    /// [`Routed`] of its trait) or as made by `direct`.
    pub fn new(
        service: &'static str,
        routed: Erased,
        direct: Box<dyn FnOnce() -> Service + Send>,
    ) -> Offer {
        Offer {
            service,
            routed,
            direct,
        }
    }

    /// The implementation as a grpcio service of its own.
    pub fn into_service(self) -> Service {
        (self.direct)()
    }
}

/// The objects a shared server routes to, by broker id and service name.
/// Cheap to clone; clones share the table.
#[derive(Clone, Default)]
pub struct Table {
    routes: Arc<RwLock<Routes>>,
}

impl Table {
    /// Routes `id` to `offers`, replacing whatever it routed to; whether
    /// `id` is new.
    pub fn insert(&self, id: u32, offers: Vec<Offer>) -> bool {
        let entry = offers.into_iter().map(|o| (o.service, o.routed)).collect();
        self.write().insert(id, entry).is_none()
    }

    /// Routes `id` to `offers` too (beside what it routes to already),
    /// leaving them whole, to be served as servers of their own as well.
    pub fn add(&self, id: u32, offers: &[Offer]) {
        self.write()
            .entry(id)
            .or_default()
            .extend(offers.iter().map(|o| (o.service, o.routed.clone())));
    }

    /// Stops routing `id`; calls for it then fail UNAVAILABLE.
    pub fn remove(&self, id: u32) -> bool {
        self.write().remove(&id).is_some()
    }

    /// Stops routing every id; how many there were.
    pub fn clear(&self) -> usize {
        let mut routes = self.write();
        let n = routes.len();
        routes.clear();
        n
    }

    /// Whether `id` is routed.
    pub fn contains(&self, id: u32) -> bool {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&id)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Routes> {
        self.routes.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The implementation of `service` that the call's route header names.
    pub fn find<T: Any + Send + Sync>(
        &self,
        ctx: &RpcContext,
        service: &str,
    ) -> Result<Arc<T>, RpcStatus> {
        self.find_id(route_of(ctx)?, service)
    }

    /// The implementation of `service` routed as `id`.
    pub fn find_id<T: Any + Send + Sync>(
        &self,
        id: u32,
        service: &str,
    ) -> Result<Arc<T>, RpcStatus> {
        self.find_erased(id, service)?.downcast::<T>().map_err(|_| {
            RpcStatus::with_message(
                RpcStatusCode::INTERNAL,
                format!("broker id {id}: {service} was offered with another type"),
            )
        })
    }

    /// [`Table::find_id`] before the downcast: one copy for every service.
    #[inline(never)]
    fn find_erased(&self, id: u32, service: &str) -> Result<Erased, RpcStatus> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        let Some(offers) = routes.get(&id) else {
            return Err(RpcStatus::with_message(
                RpcStatusCode::UNAVAILABLE,
                format!("broker id {id} serves no {service} here: closed, or never served"),
            ));
        };
        // An object that does not serve it: as a server without the
        // service answers (a plugin without `loop.Service`, say).
        offers
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, o)| o.clone())
            .ok_or_else(|| {
                RpcStatus::with_message(
                    RpcStatusCode::UNIMPLEMENTED,
                    format!("broker id {id} does not serve {service}"),
                )
            })
    }

    /// The shared server's services: every method of `proto/`, routed
    /// here (the unary ones through the framed transport's glue).
    pub fn services(&self) -> Vec<Service> {
        let mut all = vec![crate::goplugin::framed::server::routed_unary_service(self)];
        all.extend(crate::proto::routers(self));
        all
    }
}

/// The broker id a call's [`ROUTE_HEADER`] names.
pub fn route_of(ctx: &RpcContext) -> Result<u32, RpcStatus> {
    let value = ctx
        .request_headers()
        .iter()
        .find(|(k, _)| *k == ROUTE_HEADER)
        .map(|(_, v)| v);
    let Some(value) = value else {
        return Err(RpcStatus::with_message(
            RpcStatusCode::INVALID_ARGUMENT,
            format!("this is a routed broker server: send the object's broker id in the {ROUTE_HEADER} header"),
        ));
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            RpcStatus::with_message(
                RpcStatusCode::INVALID_ARGUMENT,
                format!(
                    "{ROUTE_HEADER}: {:?} is not a broker id (a number)",
                    String::from_utf8_lossy(value)
                ),
            )
        })
}
