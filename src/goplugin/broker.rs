//! The go-plugin gRPC broker, on either side of the connection.
//!
//! The host opens one `plugin.GRPCBroker/StartStream` on the plugin; both sides
//! then send a `ConnInfo{service_id, network, address}` for every extra server
//! they start, and receive the other side's. [`Broker::serve`] starts such a
//! server on a fresh unix socket and announces it; [`Broker::dial`] waits (up to
//! a deadline) for the other side's announcement of an id and connects to it.
//! This is how sub-services (providers, data sources, callbacks) cross processes.
//!
//! Routed (see [`crate::goplugin::route`]; both sides loopp, agreed at the
//! handshake): every id is served on one shared server per broker and
//! announced at its address; [`Broker::dial`] keeps one channel per address
//! (its gRPC channel made at its first gRPC call) and returns a [`Conn`]
//! that names the id in each call's header. Framing too, the shared
//! server is a framed one that also takes gRPC's connections, its gRPC
//! server built at the first. When the plugin frames its own services,
//! there is no stream: the host announces with `loopp.Broker/Announce`
//! ([`Broker::attach_framed`]) and watches the plugin's announcements with
//! `loopp.Broker/Watch`, a numbered long poll the plugin answers from its
//! outbox ([`Broker::watch`]).
//!
//! Threads: one sender and one receiver per stream, both ending when the stream
//! or the broker closes; framed, one watcher in the host (none in the plugin). Invariants: announcements received but never dialed are
//! capped at [`MAX_PENDING`]; every socket a broker created is removed by
//! [`Broker::close`] (or drop), with its private directory; the unix sockets
//! the other side announced are remembered (at most [`MAX_PENDING`]), so a
//! host can remove what a plugin that is gone left ([`Broker::peer_sockets`]:
//! go-plugin's servers make them beside their own socket and leave them when
//! the process ends).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use futures_util::{SinkExt, StreamExt};
use grpcio::{Server, ServerCredentials, WriteFlags};

use crate::goplugin::error::{Error, Result};
use crate::goplugin::framed;
use crate::goplugin::handshake::Network;
use crate::goplugin::metrics::BROKER_OBJECTS;
use crate::goplugin::route::{Conn, Endpoint, Offer, Table};
use crate::goplugin::rpc;
use crate::goplugin::sockdir::SocketDir;
use crate::proto::grpc_broker::ConnInfo;

/// How long [`Broker::dial`] waits for an announcement by default (go-plugin: 5 s).
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The deadline of a host's framed announcement (`loopp.Broker/Announce`).
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long stopping one brokered server may take.
const SERVER_STOP_GRACE: Duration = Duration::from_secs(1);

/// Announcements kept for ids nobody dialed yet; older ones are dropped beyond it.
pub const MAX_PENDING: usize = 1024;

/// Servers one client started on a broker (callbacks it hands to the other
/// side: a keystore, data sources, a proxied provider), stopped when the
/// lease is dropped, so a client rebuilt after a failure leaves none behind.
pub struct Lease {
    broker: Broker,
    ids: Vec<u32>,
}

impl Lease {
    /// Serves `services` on a fresh id held by this lease; returns the id.
    pub fn serve(&mut self, services: Vec<Offer>) -> Result<u32> {
        let id = self.broker.next_id();
        self.broker.serve(id, services)?;
        self.ids.push(id);
        Ok(id)
    }

    /// Announces a fresh id for the object at `at` ([`Broker::forward`]).
    pub fn forward(&mut self, at: &Endpoint) -> Result<u32> {
        let id = self.broker.next_id();
        self.broker.forward(id, at)?;
        Ok(id)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            self.broker.stop(id);
        }
    }
}

/// One side's broker. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    next_id: AtomicU32,
    /// Largest message of a brokered server or channel.
    max_message: usize,
    /// The lane of the services this side serves the other (the host's:
    /// that plugin's bound), entered with [`Broker::enter_lane`].
    lane: Option<crate::goplugin::pool::Lane>,
    state: Mutex<State>,
    announced: Condvar,
    sockets: SocketDir,
}

struct State {
    closed: bool,
    /// Announcements from the other side not yet dialed, by id (insertion order kept).
    pending: HashMap<u32, ConnInfo>,
    order: VecDeque<u32>,
    /// Our announcements waiting for a stream, or the host's next
    /// [`Broker::watch`], to carry them, numbered.
    outbox: VecDeque<(u64, ConnInfo)>,
    /// The number of our last announcement.
    announced: u64,
    /// The current stream's sender thread, fed by `outbox`.
    stream_tx: Option<Sender<ConnInfo>>,
    /// A plugin's: the host's [`Broker::watch`] waiting for an announcement.
    watcher: Option<Watcher>,
    /// A host's, when the plugin frames its own services: where its
    /// announcements go (`loopp.Broker/Announce`, framed), instead of a
    /// stream.
    announce_to: Option<crate::proto::loopp_broker_grpc::BrokerClient>,
    servers: Vec<(u32, Server, PathBuf)>,
    /// Set once both sides agreed to route.
    routing: Option<Routing>,
    /// The unix socket paths the other side announced (at most
    /// [`MAX_PENDING`]; later ones are not remembered).
    peer_sockets: BTreeSet<PathBuf>,
}

impl State {
    /// Ends every object served (uncounting them) and the channels dialed;
    /// returns the servers to stop, the shared one included.
    fn take_servers(&mut self) -> Vec<(u32, Server, PathBuf)> {
        let mut servers = std::mem::take(&mut self.servers);
        BROKER_OBJECTS.sub(servers.len() as i64);
        if let Some(r) = &mut self.routing {
            BROKER_OBJECTS.sub(r.table.clear() as i64);
            r.channels.clear();
            r.framed_channels.clear();
            // Stopped at once (its socket removed); its connections end,
            // and the gRPC server built for gRPC's, if any, stops with the
            // others.
            if let Some(f) = r.framed_server.take() {
                if let Some(grpc) = f.take_grpc() {
                    servers.push((0, grpc, f.path().to_path_buf()));
                }
            }
            if let Some((server, path)) = r.server.take() {
                servers.push((0, server, path));
            }
        }
        servers
    }
}

/// A routed broker's shared server and the channels it dialed.
struct Routing {
    table: Table,
    /// Started at the first [`Broker::serve`].
    server: Option<(Server, PathBuf)>,
    /// One client (channel) per address the other side announced.
    channels: HashMap<String, rpc::LazyClient>,
    /// Both sides frame routed objects' unary calls (see
    /// [`crate::goplugin::framed`]).
    framed: bool,
    /// The framed server next to the shared one, started with it.
    framed_server: Option<framed::Server>,
    /// One framed connection per framed address the other side announced.
    framed_channels: HashMap<String, framed::Channel>,
}

impl Broker {
    /// A broker whose servers listen on sockets in `sockets`, with this
    /// process's message bound and no lane.
    pub fn new(sockets: SocketDir) -> Broker {
        Broker::bounded(sockets, rpc::max_message(), None)
    }

    /// A broker with a message bound for its servers and channels, and a
    /// lane for what is served through it.
    pub fn bounded(
        sockets: SocketDir,
        max_message: usize,
        lane: Option<crate::goplugin::pool::Lane>,
    ) -> Broker {
        // Shown from the start, at 0.
        LazyLock::force(&BROKER_OBJECTS);
        LazyLock::force(&crate::goplugin::metrics::FRAMED_CONNECTIONS);
        Broker {
            inner: Arc::new(Inner {
                next_id: AtomicU32::new(1),
                max_message,
                lane,
                state: Mutex::new(State {
                    closed: false,
                    pending: HashMap::new(),
                    order: VecDeque::new(),
                    outbox: VecDeque::new(),
                    announced: 0,
                    stream_tx: None,
                    watcher: None,
                    announce_to: None,
                    servers: Vec::new(),
                    routing: None,
                    peer_sockets: BTreeSet::new(),
                }),
                announced: Condvar::new(),
                sockets,
            }),
        }
    }

    /// Makes this broker's lane ambient while the guard lives: services
    /// created meanwhile run their blocking handlers in it (see
    /// [`crate::goplugin::pool::Lane`]).
    pub fn enter_lane(&self) -> Option<crate::goplugin::pool::Entered> {
        self.inner.lane.as_ref().map(|l| l.enter())
    }

    /// A fresh id for [`Broker::serve`]. Ids are unique per side; both sides
    /// count from 1, as go-plugin does, and the id spaces are separate.
    pub fn next_id(&self) -> u32 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Routes every id this broker serves or dials from now on (see
    /// [`crate::goplugin::route`]): both sides agreed at the handshake.
    /// Call it before the first [`Broker::serve`] or [`Broker::dial`].
    pub fn route(&self) {
        let mut st = self.inner.state.lock().unwrap();
        if st.routing.is_none() {
            st.routing = Some(Routing {
                table: Table::default(),
                server: None,
                channels: HashMap::new(),
                framed: false,
                framed_server: None,
                framed_channels: HashMap::new(),
            });
        }
    }

    /// Also carries routed objects' unary calls framed (see
    /// [`crate::goplugin::framed`]), both ways: both sides agreed at the
    /// handshake. Routes too. Call it before the first [`Broker::serve`]
    /// or [`Broker::dial`].
    pub fn frame(&self) {
        self.route();
        if let Some(r) = &mut self.inner.state.lock().unwrap().routing {
            r.framed = true;
        }
    }

    /// Whether this broker routes.
    pub fn routed(&self) -> bool {
        self.inner.state.lock().unwrap().routing.is_some()
    }

    /// Serves `services` as `id` and announces it: on a new socket, or
    /// routed on the shared server. It is served until [`Broker::stop`] of
    /// that id or [`Broker::close`].
    pub fn serve(&self, id: u32, services: Vec<Offer>) -> Result<()> {
        if self.routed() {
            return self.serve_routed(id, services);
        }
        let path = self.socket(&format!("id-{id}"))?;
        let server = start_server(
            services.into_iter().map(Offer::into_service).collect(),
            &path,
            self.inner.max_message,
            true,
        )?;
        let mut st = self.inner.state.lock().unwrap();
        if st.closed {
            drop(st);
            let _ = std::fs::remove_file(&path);
            return Err(Error::BrokerClosed);
        }
        st.servers.push((id, server, path.clone()));
        BROKER_OBJECTS.inc();
        let delivery = announce(&mut st, id, &path);
        drop(st);
        deliver(delivery);
        Ok(())
    }

    fn serve_routed(&self, id: u32, services: Vec<Offer>) -> Result<()> {
        let mut st = self.inner.state.lock().unwrap();
        if st.closed {
            return Err(Error::BrokerClosed);
        }
        let routing = st.routing.as_mut().expect("a routed broker");
        let path = match (&routing.server, &routing.framed_server) {
            (Some((_, path)), _) => path.clone(),
            (None, Some(f)) => f.path().to_path_buf(),
            // Once per broker, under the lock: a second serve waits for
            // the server rather than starting another.
            (None, None) => {
                let path = self.socket("broker.sock")?;
                let framed = routing.framed.then(|| {
                    // Framed and gRPC's connections on one socket; gRPC's
                    // server only if one comes.
                    let (table, max) = (routing.table.clone(), self.inner.max_message);
                    let what = path.display().to_string();
                    let grpc: framed::server::BuildGrpc = Box::new(move || {
                        start_server(table.services(), Path::new(&what), max, false)
                            .map_err(|e| log::error!("{e}; gRPC calls of its objects fail"))
                            .ok()
                    });
                    framed::Server::start_with_grpc(
                        &path,
                        routing.table.clone(),
                        self.inner.max_message,
                        framed::server::MAX_CONNECTIONS,
                        Some(grpc),
                    )
                });
                match framed {
                    Some(Ok(server)) => routing.framed_server = Some(server),
                    other => {
                        if let Some(Err(e)) = other {
                            // Calls then go over gRPC, as with a peer that
                            // does not frame.
                            log::warn!(
                                "broker: cannot serve framed calls on {}: {e}; routed objects are served over gRPC only",
                                path.display()
                            );
                        }
                        let server = start_server(
                            routing.table.services(),
                            &path,
                            self.inner.max_message,
                            true,
                        )?;
                        routing.server = Some((server, path.clone()));
                    }
                }
                path
            }
        };
        let framed = routing
            .framed_server
            .as_ref()
            .map(|f| f.path().to_string_lossy().into_owned());
        if routing.table.insert(id, services) {
            BROKER_OBJECTS.inc();
        }
        let delivery = send(
            &mut st,
            ConnInfo {
                service_id: id,
                network: "unix".to_string(),
                address: path.to_string_lossy().into_owned(),
                loopp_framed_address: framed.unwrap_or_default(),
                ..Default::default()
            },
        );
        drop(st);
        deliver(delivery);
        Ok(())
    }

    fn socket(&self, name: &str) -> Result<PathBuf> {
        self.inner
            .sockets
            .path(name)
            .map_err(|e| Error::io("broker: no socket directory", e))
    }

    /// The socket of the server this side serves as `id`, if any.
    pub fn served_address(&self, id: u32) -> Option<PathBuf> {
        let st = self.inner.state.lock().unwrap();
        if let Some(r) = &st.routing {
            let shared = match (&r.server, &r.framed_server) {
                (Some((_, p)), _) => Some(p.clone()),
                (None, Some(f)) => Some(f.path().to_path_buf()),
                (None, None) => None,
            };
            return shared.filter(|_| r.table.contains(id));
        }
        st.servers
            .iter()
            .find(|(sid, _, _)| *sid == id)
            .map(|(_, _, p)| p.clone())
    }

    /// A connection to this side's own object `id`, as the other side
    /// reaches it (tests call their own objects with it).
    pub fn local_channel(&self, id: u32) -> Conn {
        let path = self.served_address(id).expect("a server on that id");
        let channel = rpc::connect_bounded(
            Network::Unix,
            &path.to_string_lossy(),
            self.inner.max_message,
        );
        if self.routed() {
            Conn::routed(rpc::LazyClient::of(channel), id)
        } else {
            channel.into()
        }
    }

    /// Stops serving `id`: stops its server and removes its socket, or
    /// (routed) drops its routes, so calls for it fail UNAVAILABLE.
    pub fn stop(&self, id: u32) {
        let found = {
            let mut st = self.inner.state.lock().unwrap();
            if let Some(r) = &st.routing {
                if r.table.remove(id) {
                    BROKER_OBJECTS.dec();
                }
                return;
            }
            let i = st.servers.iter().position(|(sid, _, _)| *sid == id);
            i.map(|i| st.servers.swap_remove(i))
        };
        if let Some((_, server, path)) = found {
            BROKER_OBJECTS.dec();
            shutdown_server(server, &path);
        }
    }

    /// Announces `id` as the object at `at`, another process's routed
    /// object this side dialed (see [`crate::goplugin::route`]): the other
    /// side calls it there, not through this process. Only a routed broker
    /// forwards (its peer knows the field that says so); nothing is served
    /// here, so [`Broker::stop`] of `id` has nothing to stop.
    pub fn forward(&self, id: u32, at: &Endpoint) -> Result<()> {
        let mut st = self.inner.state.lock().unwrap();
        if st.closed {
            return Err(Error::BrokerClosed);
        }
        if st.routing.is_none() {
            return Err(Error::Unsupported {
                plugin: "broker".into(),
                what: format!(
                    "forwarding broker id {id}: the other side does not route, so it can only dial what this side serves"
                ),
            });
        }
        let delivery = send(
            &mut st,
            ConnInfo {
                service_id: id,
                network: "unix".to_string(),
                address: at.address.clone(),
                loopp_route_id: at.id,
                loopp_framed_address: at.framed.clone().unwrap_or_default(),
                ..Default::default()
            },
        );
        drop(st);
        deliver(delivery);
        Ok(())
    }

    /// A [`Lease`] on this broker.
    pub fn lease(&self) -> Lease {
        Lease {
            broker: self.clone(),
            ids: Vec::new(),
        }
    }

    /// Waits up to `timeout` for the other side to announce `id`, then
    /// connects (routed: on the one channel to that address).
    pub fn dial(&self, id: u32, timeout: Duration) -> Result<Conn> {
        let deadline = Instant::now() + timeout;
        let mut st = self.inner.state.lock().unwrap();
        loop {
            if let Some(info) = st.pending.remove(&id) {
                st.order.retain(|i| *i != id);
                if let Some(r) = &mut st.routing {
                    let max = self.inner.max_message;
                    let channel = r
                        .channels
                        .entry(info.address.clone())
                        .or_insert_with(|| rpc::LazyClient::to(Network::Unix, &info.address, max))
                        .clone();
                    let framed_at = Some(info.loopp_framed_address).filter(|a| !a.is_empty());
                    let framed = match &framed_at {
                        Some(a) if r.framed => framed_channel(r, a, max),
                        _ => None,
                    };
                    // A forwarded object has an id of its own there.
                    let at = Endpoint {
                        id: match info.loopp_route_id {
                            0 => id,
                            there => there,
                        },
                        address: info.address,
                        framed: framed_at,
                    };
                    return Ok(Conn::routed_at(channel, at, framed));
                }
                drop(st);
                let network = Network::parse(&info.network).ok_or_else(|| Error::Unsupported {
                    plugin: "broker".into(),
                    what: format!(
                        "service id {id} announced unknown network {:?}",
                        info.network
                    ),
                })?;
                return Ok(
                    rpc::connect_bounded(network, &info.address, self.inner.max_message).into(),
                );
            }
            if st.closed {
                return Err(Error::BrokerClosed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::BrokerTimeout { id, after: timeout });
            }
            st = self
                .inner
                .announced
                .wait_timeout(st, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Stops every brokered server, removes their sockets, ends the stream and
    /// wakes dialers with [`Error::BrokerClosed`]. Idempotent.
    pub fn close(&self) {
        self.close_by(Instant::now() + SERVER_STOP_GRACE);
    }

    /// The unix sockets the other side announced on this broker: what a
    /// host removes once its plugin is gone (see `host::Client::kill`).
    pub fn peer_sockets(&self) -> Vec<PathBuf> {
        let st = self.inner.state.lock().unwrap();
        st.peer_sockets.iter().cloned().collect()
    }

    /// As [`Broker::close`], with every served server stopped together by
    /// `deadline`.
    pub fn close_by(&self, deadline: Instant) {
        let servers = {
            let mut st = self.inner.state.lock().unwrap();
            st.closed = true;
            st.stream_tx = None;
            st.announce_to = None;
            st.outbox.clear();
            (st.take_servers(), st.watcher.take())
        };
        let (servers, watcher) = servers;
        // The host's watch ends now, not at its deadline.
        if let Some(w) = watcher {
            w(Err(Error::BrokerClosed));
        }
        self.inner.announced.notify_all();
        let mut paths = Vec::new();
        let servers = servers
            .into_iter()
            .map(|(_, server, path)| {
                paths.push(path);
                server
            })
            .collect();
        rpc::shutdown_servers(servers, deadline);
        for path in paths {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Runs one StartStream: `tx` carries our announcements, `rx` brings the
    /// other side's. Used by the host (client stream) and the plugin (server
    /// stream). Returns at once; two threads carry the stream.
    pub fn attach<Tx, Rx>(&self, tx: Tx, rx: Rx)
    where
        Tx: futures_util::Sink<(ConnInfo, WriteFlags), Error = grpcio::Error>
            + Unpin
            + Send
            + 'static,
        Rx: futures_util::Stream<Item = grpcio::Result<ConnInfo>> + Unpin + Send + 'static,
    {
        let (out_tx, out_rx) = crossbeam_channel::unbounded();
        {
            let mut st = self.inner.state.lock().unwrap();
            if st.closed {
                return;
            }
            for (_, info) in st.outbox.drain(..) {
                let _ = out_tx.send(info);
            }
            st.stream_tx = Some(out_tx);
        }
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
                log::error!("broker: cannot spawn {name} thread: {e}");
            }
        };
        spawn("broker-send", Box::new(move || send_loop(tx, out_rx)));
        let inner = self.inner.clone();
        spawn("broker-recv", Box::new(move || recv_loop(rx, &inner)));
    }
}

impl Broker {
    /// The other side's announcement, come framed (`loopp.Broker/Announce`,
    /// a plugin's, from a host that frames its own services).
    pub fn received(&self, info: ConnInfo) -> Result<()> {
        if self.inner.received(info) {
            Ok(())
        } else {
            Err(Error::BrokerClosed)
        }
    }

    /// A plugin's: answers with its announcements after number `after`
    /// (the host has those up to it), at once if there are some, else when
    /// it makes one; [`Error::BrokerClosed`] when it closes. A newer watch
    /// replaces one still waiting, which is answered with nothing new.
    pub fn watch(&self, after: u64, answer: Watcher) {
        let mut st = self.inner.state.lock().unwrap();
        if st.closed {
            drop(st);
            return answer(Err(Error::BrokerClosed));
        }
        let got = outbox_after(&mut st, after);
        if !got.0.is_empty() {
            drop(st);
            return answer(Ok(got));
        }
        let old = st.watcher.replace(answer);
        drop(st);
        if let Some(old) = old {
            old(Ok((Vec::new(), after)));
        }
    }

    /// A host's, for a plugin that frames its own services: announces to
    /// `plugin` (what waited, then each as it is made) and watches for its
    /// announcements on a thread of its own, until the broker closes or
    /// the connection ends.
    pub fn attach_framed(&self, plugin: crate::proto::loopp_broker_grpc::BrokerClient) {
        let waiting: Vec<Delivery> = {
            let mut st = self.inner.state.lock().unwrap();
            if st.closed {
                return;
            }
            st.announce_to = Some(plugin.clone());
            st.outbox
                .drain(..)
                .map(|(_, info)| Delivery::Announce(plugin.clone(), info))
                .collect()
        };
        for d in waiting {
            deliver(Some(d));
        }
        let inner = self.inner.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("broker-watch".into())
            .spawn(move || watch_loop(&inner, &plugin))
        {
            log::error!("broker: cannot spawn the watch thread: {e}");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut paths = Vec::new();
        let servers = self
            .state
            .get_mut()
            .unwrap()
            .take_servers()
            .into_iter()
            .map(|(_, server, path)| {
                paths.push(path);
                server
            })
            .collect();
        rpc::shutdown_servers(servers, Instant::now() + SERVER_STOP_GRACE);
        for path in paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A started server of `services` for the unix socket `path`: listening
/// there itself with `listen`, else handed its connections by whoever
/// listens there.
fn start_server(
    services: Vec<grpcio::Service>,
    path: &Path,
    max_message: usize,
    listen: bool,
) -> Result<Server> {
    let mut builder = rpc::server_builder_bounded(max_message);
    for s in services {
        builder = builder.register_service(s);
    }
    let mut server = builder.build().map_err(|e| Error::Serve {
        what: format!(
            "broker: cannot build the gRPC server for {}",
            path.display()
        ),
        source: Some(Box::new(e)),
    })?;
    if listen {
        let target = rpc::target(Network::Unix, &path.to_string_lossy());
        server
            .add_listening_port(&target, ServerCredentials::insecure())
            .map_err(|e| Error::Serve {
                what: format!("broker: cannot listen on {}", path.display()),
                source: Some(Box::new(e)),
            })?;
    }
    server.start();
    Ok(server)
}

/// The framed connection to `address`, made at its first use, and again
/// if it has ended (a client rebuilt after failures gets a live one); None
/// (calls go over gRPC) if it cannot be made.
fn framed_channel(r: &mut Routing, address: &str, max_message: usize) -> Option<framed::Channel> {
    if let Some(c) = r.framed_channels.get(address).filter(|c| c.is_open()) {
        return Some(c.clone());
    }
    match framed::Channel::connect(address, max_message) {
        Ok(c) => {
            r.framed_channels.insert(address.to_string(), c.clone());
            Some(c)
        }
        Err(e) => {
            log::warn!("broker: cannot connect to the framed server {address}: {e}; its objects are called over gRPC");
            None
        }
    }
}

/// Announces `id` at `path`, now if a stream carries announcements, else
/// when one does.
fn announce(st: &mut State, id: u32, path: &Path) -> Option<Delivery> {
    let info = ConnInfo {
        service_id: id,
        network: "unix".to_string(),
        address: path.to_string_lossy().into_owned(),
        ..Default::default()
    };
    send(st, info)
}

/// Sends `info`: to the plugin framed (a host's, when the plugin frames
/// its own services), on the stream, or keeps it for the next stream or
/// the host's watch; what is to be delivered once the lock is let go.
fn send(st: &mut State, info: ConnInfo) -> Option<Delivery> {
    st.announced += 1;
    if let Some(to) = &st.announce_to {
        return Some(Delivery::Announce(to.clone(), info));
    }
    match &st.stream_tx {
        Some(tx) if tx.send(info.clone()).is_ok() => None,
        _ => {
            let n = st.announced;
            st.outbox.push_back((n, info));
            let watcher = st.watcher.take()?;
            Some(Delivery::Watched(watcher, outbox_after(st, 0)))
        }
    }
}

/// A plugin's announcements for the host's watch, and the last one's number.
pub type Announcements = (Vec<ConnInfo>, u64);

/// How a [`Broker::watch`] is answered.
pub type Watcher = Box<dyn FnOnce(Result<Announcements>) + Send>;

/// What an announcement still has to do once the broker's lock is let go.
enum Delivery {
    /// The plugin's: answer the host's watch.
    Watched(Watcher, Announcements),
    /// The host's: call the plugin.
    Announce(crate::proto::loopp_broker_grpc::BrokerClient, ConnInfo),
}

fn deliver(delivery: Option<Delivery>) {
    match delivery {
        None => {}
        Some(Delivery::Watched(w, announcements)) => w(Ok(announcements)),
        Some(Delivery::Announce(to, info)) => {
            // Sent before this returns, and in order with the calls that
            // name the id (one connection, read in order); the answer
            // says nothing the host waits for.
            if let Err(e) = to.announce_async(&info, ANNOUNCE_TIMEOUT) {
                log::warn!(
                    "broker: cannot announce id {} to the plugin: {}",
                    info.service_id,
                    crate::goplugin::error::rpc_status_text(&e)
                );
            }
        }
    }
}

/// The outbox's announcements after number `after` (those up to it are
/// dropped: the host has them), and the last one's number.
fn outbox_after(st: &mut State, after: u64) -> Announcements {
    while st.outbox.front().is_some_and(|(n, _)| *n <= after) {
        st.outbox.pop_front();
    }
    let infos = st.outbox.iter().map(|(_, i)| i.clone()).collect();
    let last = st.outbox.back().map_or(after, |(n, _)| *n);
    (infos, last)
}

fn send_loop<Tx>(mut tx: Tx, out: Receiver<ConnInfo>)
where
    Tx: futures_util::Sink<(ConnInfo, WriteFlags), Error = grpcio::Error> + Unpin,
{
    // Ends when the broker drops its sender (close) or the stream breaks.
    for info in out.iter() {
        if futures_executor::block_on(tx.send((info, WriteFlags::default()))).is_err() {
            return;
        }
    }
    let _ = futures_executor::block_on(tx.close());
}

fn recv_loop<Rx>(mut rx: Rx, inner: &Inner)
where
    Rx: futures_util::Stream<Item = grpcio::Result<ConnInfo>> + Unpin,
{
    while let Some(Ok(info)) = futures_executor::block_on(rx.next()) {
        if !inner.received(info) {
            return;
        }
    }
}

impl Inner {
    /// Keeps the other side's announcement for the dial of its id, and
    /// wakes dialers; false once the broker is closed.
    fn received(&self, info: ConnInfo) -> bool {
        let mut st = self.state.lock().unwrap();
        if st.closed {
            return false;
        }
        let id = info.service_id;
        if info.network == "unix" && st.peer_sockets.len() < MAX_PENDING {
            st.peer_sockets.insert(PathBuf::from(&info.address));
        }
        if st.pending.insert(id, info).is_none() {
            st.order.push_back(id);
        }
        while st.order.len() > MAX_PENDING {
            if let Some(old) = st.order.pop_front() {
                st.pending.remove(&old);
            }
        }
        drop(st);
        self.announced.notify_all();
        true
    }
}

/// The host's watch of a plugin that frames its own services: asks for
/// the plugin's announcements after the last it has, until the broker
/// closes or the connection ends.
fn watch_loop(inner: &Inner, plugin: &crate::proto::loopp_broker_grpc::BrokerClient) {
    use crate::proto::loopp_broker::WatchRequest;
    let mut after = 0;
    loop {
        let asked = WatchRequest {
            after,
            ..Default::default()
        };
        match plugin.watch(&asked, rpc::STREAM_DEADLINE) {
            Ok(got) => {
                for info in got.infos {
                    if !inner.received(info) {
                        return;
                    }
                }
                after = got.last.max(after);
            }
            Err(e) => {
                if !inner.state.lock().unwrap().closed {
                    log::debug!(
                        "broker: the watch of the plugin's announcements ended: {}",
                        crate::goplugin::error::rpc_status_text(&e)
                    );
                }
                return;
            }
        }
        if inner.state.lock().unwrap().closed {
            return;
        }
    }
}

fn shutdown_server(server: Server, path: &Path) {
    rpc::shutdown_server(server, SERVER_STOP_GRACE);
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::health::{
        health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse,
    };
    use crate::proto::health_grpc::{offer_health, Health, HealthClient};

    /// Answers SERVING for the service named `name`, UNKNOWN otherwise: a
    /// call reaching the wrong object shows.
    #[derive(Clone)]
    struct Named(&'static str);

    impl Health for Named {
        fn check(
            &mut self,
            ctx: crate::goplugin::call::Ctx,
            req: HealthCheckRequest,
            sink: crate::goplugin::call::Sink<HealthCheckResponse>,
        ) {
            let mut r = HealthCheckResponse::new();
            r.status = if req.service == self.0 {
                ServingStatus::SERVING
            } else {
                ServingStatus::UNKNOWN
            }
            .into();
            ctx.spawn(async move {
                let _ = sink.success(r).await;
            });
        }
    }

    #[test]
    fn the_unix_sockets_the_other_side_announces_are_remembered_up_to_the_cap() {
        let broker = Broker::new(SocketDir::lazy(None));
        let info = |id: u32, network: &str, address: String| {
            let mut i = ConnInfo::new();
            i.service_id = id;
            i.network = network.into();
            i.address = address;
            Ok(i)
        };
        let mut announced = vec![
            info(1, "unix", "/run/x/plugin1".into()),
            info(2, "tcp", "127.0.0.1:10001".into()),
            // Announced again (a loopp plugin routes every id to one socket).
            info(3, "unix", "/run/x/plugin1".into()),
        ];
        for id in 4..(4 + MAX_PENDING as u32 + 10) {
            announced.push(info(id, "unix", format!("/run/x/many{id}")));
        }
        recv_loop(futures_util::stream::iter(announced), &broker.inner);
        let sockets = broker.peer_sockets();
        assert_eq!(sockets.len(), MAX_PENDING, "bounded, whatever is announced");
        assert!(sockets.contains(&PathBuf::from("/run/x/plugin1")));
        assert!(!sockets
            .iter()
            .any(|p| p.to_string_lossy().contains("127.0.0.1")));
        assert!(!sockets.contains(&PathBuf::from(format!("/run/x/many{}", 4 + MAX_PENDING))));
    }

    fn check(conn: Conn, service: &str) -> grpcio::Result<ServingStatus> {
        let mut req = HealthCheckRequest::new();
        req.service = service.into();
        HealthClient::new(conn)
            .check(&req, Duration::from_secs(5))
            .map(|r| r.status.enum_value_or_default())
    }

    #[test]
    fn a_routed_broker_serves_every_id_on_one_socket_and_each_call_reaches_its_own() {
        let dir = SocketDir::create().unwrap();
        let broker = Broker::new(dir.clone());
        broker.route();
        let ids: Vec<u32> = ["a", "b", "c"]
            .iter()
            .map(|name| {
                let id = broker.next_id();
                broker.serve(id, vec![offer_health(Named(name))]).unwrap();
                id
            })
            .collect();
        let sockets: Vec<PathBuf> = ids
            .iter()
            .map(|id| broker.served_address(*id).unwrap())
            .collect();
        assert!(sockets.iter().all(|p| *p == sockets[0]), "{sockets:?}");
        let files = std::fs::read_dir(dir.dir().unwrap()).unwrap().count();
        assert!(files <= 2, "one socket (and the owner file): {files}");
        // One connection for all three, each call on its own object.
        let channel = rpc::connect(Network::Unix, &sockets[0].to_string_lossy());
        for (id, name) in ids.iter().zip(["a", "b", "c"]) {
            let conn = Conn::routed(rpc::LazyClient::of(channel.clone()), *id);
            assert_eq!(check(conn.clone(), name).unwrap(), ServingStatus::SERVING);
            assert_eq!(check(conn, "x").unwrap(), ServingStatus::UNKNOWN);
        }
        // Without the header: a clear refusal naming it.
        match check(channel.clone().into(), "a") {
            Err(grpcio::Error::RpcFailure(s)) => {
                assert_eq!(s.code(), grpcio::RpcStatusCode::INVALID_ARGUMENT);
                assert!(
                    s.message().contains(crate::goplugin::route::ROUTE_HEADER),
                    "{}",
                    s.message()
                );
            }
            other => panic!("{other:?}"),
        }
        // A stopped id is gone; the others still answer.
        broker.stop(ids[1]);
        assert_gone(
            check(
                Conn::routed(rpc::LazyClient::of(channel.clone()), ids[1]),
                "b",
            ),
            ids[1],
        );
        assert_eq!(
            check(
                Conn::routed(rpc::LazyClient::of(channel.clone()), ids[2]),
                "c"
            )
            .unwrap(),
            ServingStatus::SERVING
        );
        broker.close();
        assert!(!sockets[0].exists(), "the shared socket removed");
    }

    /// Joins two brokers as a plugin's StartStream joins host and plugin:
    /// what one announces, the other can dial.
    /// Two framing brokers: each object's unary calls go over the framed
    /// server (the gRPC one is not reached), on one connection for all,
    /// and reach their own object; a stopped object answers UNAVAILABLE,
    /// and closing the serving broker fails the next call at once.
    #[test]
    fn framing_brokers_carry_unary_calls_framed_to_each_object() {
        let plugin = Broker::new(SocketDir::create().unwrap());
        let host = Broker::new(SocketDir::create().unwrap());
        plugin.frame();
        host.frame();
        join(&plugin, &host);
        let ids: Vec<u32> = ["a", "b"]
            .iter()
            .map(|name| {
                let id = plugin.next_id();
                plugin.serve(id, vec![offer_health(Named(name))]).unwrap();
                id
            })
            .collect();
        // One socket takes both framed and gRPC's connections.
        let shared = plugin.served_address(ids[0]).unwrap();
        let beside = shared.clone();
        assert!(beside.exists(), "{beside:?}");
        let conns: Vec<Conn> = ids
            .iter()
            .map(|id| host.dial(*id, Duration::from_secs(5)).unwrap())
            .collect();
        for c in &conns {
            let (channel, _) = c.framed.as_ref().expect("dialed framed");
            assert_eq!(channel.address(), beside.to_string_lossy());
            assert_eq!(
                c.endpoint.as_ref().unwrap().framed.as_deref(),
                Some(channel.address())
            );
        }
        // Their gRPC channel made useless (a socket nobody serves): the
        // calls below can only go framed.
        let nowhere = rpc::LazyClient::of(rpc::connect(Network::Unix, "/nonexistent/loopp.sock"));
        let conns: Vec<Conn> = conns
            .into_iter()
            .map(|c| Conn {
                client: nowhere.clone(),
                ..c
            })
            .collect();
        for (conn, name) in conns.iter().zip(["a", "b"]) {
            assert_eq!(check(conn.clone(), name).unwrap(), ServingStatus::SERVING);
            assert_eq!(check(conn.clone(), "x").unwrap(), ServingStatus::UNKNOWN);
        }
        // gRPC's connections to the same socket (a peer that does not
        // frame) reach the same objects, on a server built for them.
        {
            let r = plugin.inner.state.lock().unwrap();
            assert!(
                r.routing.as_ref().unwrap().server.is_none(),
                "no gRPC listener"
            );
        }
        let grpc = rpc::LazyClient::of(rpc::connect(Network::Unix, &shared.to_string_lossy()));
        for (id, name) in ids.iter().zip(["a", "b"]) {
            let over_grpc = Conn::routed(grpc.clone(), *id);
            assert_eq!(check(over_grpc, name).unwrap(), ServingStatus::SERVING);
        }
        {
            let r = plugin.inner.state.lock().unwrap();
            let server = r.routing.as_ref().unwrap().framed_server.as_ref().unwrap();
            assert_eq!(server.connections(), 1, "one connection for both objects");
        }
        plugin.stop(ids[1]);
        assert_gone(check(conns[1].clone(), "b"), ids[1]);
        assert_eq!(
            check(conns[0].clone(), "a").unwrap(),
            ServingStatus::SERVING
        );
        // The framed connection ends (here: the server is started again);
        // an object dialed afterwards gets a new connection, not the dead one.
        let old = conns[0].framed.as_ref().unwrap().0.clone();
        {
            let mut st = plugin.inner.state.lock().unwrap();
            let r = st.routing.as_mut().unwrap();
            drop(r.framed_server.take());
            r.framed_server = Some(
                framed::Server::start(&beside, r.table.clone(), rpc::max_message(), 4).unwrap(),
            );
        }
        let t0 = Instant::now();
        while old.is_open() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!old.is_open(), "the old connection saw its server go");
        let c = plugin.next_id();
        plugin.serve(c, vec![offer_health(Named("c"))]).unwrap();
        let again = host.dial(c, Duration::from_secs(5)).unwrap();
        assert!(
            again.framed.as_ref().unwrap().0.is_open(),
            "a new connection"
        );
        let again = Conn {
            client: nowhere.clone(),
            ..again
        };
        assert_eq!(check(again, "c").unwrap(), ServingStatus::SERVING);
        plugin.close();
        assert!(!beside.exists(), "the framed socket removed");
        let t0 = Instant::now();
        match check(conns[0].clone(), "a") {
            Err(grpcio::Error::RpcFailure(s)) => {
                assert_eq!(
                    s.code(),
                    grpcio::RpcStatusCode::UNAVAILABLE,
                    "{}",
                    s.message()
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "failed at once, not at the deadline"
        );
        host.close();
    }

    /// A call of stopped object `id`: UNAVAILABLE, naming the id.
    #[track_caller]
    fn assert_gone(r: grpcio::Result<ServingStatus>, id: u32) {
        match r {
            Err(grpcio::Error::RpcFailure(s)) => {
                assert_eq!(s.code(), grpcio::RpcStatusCode::UNAVAILABLE);
                assert!(
                    s.message().contains(&format!("broker id {id}")),
                    "{}",
                    s.message()
                );
            }
            other => panic!("{other:?}"),
        }
    }

    fn join(a: &Broker, b: &Broker) {
        use futures_util::StreamExt;
        type Tx = futures_channel::mpsc::UnboundedSender<ConnInfo>;
        let sink = |tx: Tx| {
            Box::pin(futures_util::sink::unfold(
                tx,
                |tx, (info, _): (ConnInfo, WriteFlags)| async move {
                    tx.unbounded_send(info)
                        .map_err(|_| grpcio::Error::RemoteStopped)?;
                    Ok::<_, grpcio::Error>(tx)
                },
            ))
        };
        let (a_tx, b_rx) = futures_channel::mpsc::unbounded::<ConnInfo>();
        let (b_tx, a_rx) = futures_channel::mpsc::unbounded::<ConnInfo>();
        a.attach(sink(a_tx), a_rx.map(Ok));
        b.attach(sink(b_tx), b_rx.map(Ok));
    }

    #[test]
    fn a_host_forwards_another_plugins_routed_object_and_the_plugin_calls_it_there() {
        // A relayer's object, routed on its shared server.
        let relayer = Broker::new(SocketDir::create().unwrap());
        relayer.route();
        let id = relayer.next_id();
        relayer
            .serve(id, vec![offer_health(Named("relayer"))])
            .unwrap();
        let address = relayer.served_address(id).unwrap();
        let at = Endpoint {
            address: address.to_string_lossy().into_owned(),
            id,
            framed: None,
        };
        let host = Broker::new(SocketDir::create().unwrap());
        let plugin = Broker::new(SocketDir::create().unwrap());
        // A peer that does not route could not tell where to call: refused.
        match host.forward(host.next_id(), &at) {
            Err(e) => assert!(e.to_string().contains("does not route"), "{e}"),
            Ok(()) => panic!("forwarded to a peer that does not route"),
        }
        host.route();
        plugin.route();
        join(&host, &plugin);
        let mut lease = host.lease();
        let forwarded = lease.forward(&at).unwrap();
        assert_ne!(forwarded, id, "an id of the host's own");
        let conn = plugin.dial(forwarded, Duration::from_secs(5)).unwrap();
        assert_eq!(conn.endpoint.as_ref(), Some(&at), "dialed where it is");
        assert_eq!(
            check(conn.clone(), "relayer").unwrap(),
            ServingStatus::SERVING
        );
        assert_eq!(host.served_address(forwarded), None, "the host serves none");
        // The relayer's object ends: the plugin's calls find it gone.
        relayer.stop(id);
        match check(conn, "relayer") {
            Err(grpcio::Error::RpcFailure(s)) => {
                assert_eq!(s.code(), grpcio::RpcStatusCode::UNAVAILABLE, "{s:?}")
            }
            other => panic!("{other:?}"),
        }
        drop(lease);
        for b in [&plugin, &host, &relayer] {
            b.close();
        }
        assert!(!address.exists(), "the relayer's socket removed");
    }

    #[test]
    fn a_lease_stops_its_servers_and_removes_their_sockets_when_dropped() {
        let broker = Broker::new(SocketDir::create().unwrap());
        let mut lease = broker.lease();
        let a = lease.serve(vec![]).unwrap();
        let b = lease.serve(vec![]).unwrap();
        let other = broker.next_id();
        broker.serve(other, vec![]).unwrap();
        let paths: Vec<PathBuf> = [a, b]
            .iter()
            .map(|id| broker.served_address(*id).expect("served"))
            .collect();
        assert!(paths.iter().all(|p| p.exists()));
        drop(lease);
        assert_eq!(broker.served_address(a), None);
        assert_eq!(broker.served_address(b), None);
        assert!(paths.iter().all(|p| !p.exists()), "sockets removed");
        assert!(
            broker.served_address(other).is_some(),
            "servers outside the lease keep running"
        );
        broker.close();
    }
}
