//! `loop.DataSource`: where an oracle's observation comes from, as a Rust
//! trait, served by the node to plugins on broker ids ([`server`]) and
//! called by them through [`DataSourceClient`]. The node's sources (static,
//! random walk, HTTP) are in `crate::sources`.

use crate::goplugin::call::{Ctx, Sink};
use std::time::Duration;

use crate::goplugin::rpc::Reply;
pub use crate::services::wire::ReportTimestamp;

/// One observation's source. Served to plugins over gRPC (`loop.DataSource`)
/// by [`server`]; [`DataSourceClient`] is the same trait over gRPC.
pub trait DataSource: Send + Sync {
    /// The value for the round `ts`, within `deadline`.
    fn observe(&self, ts: &ReportTimestamp, deadline: Duration) -> Result<i128, String>;

    /// The value for `ts` if it is at hand: computed from memory in
    /// microseconds, without I/O, a call, or waiting for a lock. `None`
    /// (the default): ask [`DataSource::observe`]. The gRPC [`server`]
    /// answers such a call on the completion-queue thread that received
    /// it, without handing it to a pool thread and back.
    fn observe_now(&self, ts: &ReportTimestamp) -> Option<Result<i128, String>> {
        let _ = ts;
        None
    }

    /// [`DataSource::observe`] as a future that never blocks the thread
    /// polling it: a source behind gRPC sends its call and returns; a
    /// value at hand ([`DataSource::observe_now`], the default) is ready.
    /// None: not at hand, call `observe` on a thread that may block.
    /// Dropping the future unawaited costs at most the call sent.
    fn observe_async(&self, ts: &ReportTimestamp, deadline: Duration) -> Option<Reply<i128>> {
        let _ = deadline;
        self.observe_now(ts).map(crate::goplugin::rpc::ready)
    }
}

/// How long the server side lets one Observe run (the caller's own deadline
/// ends the call for the caller earlier; this bounds the work behind it).
pub const SERVE_BOUND: Duration = Duration::from_secs(10);

/// A data source as the `loop.DataSource` gRPC service (served by the node to
/// plugins on a broker id).
pub fn server(source: std::sync::Arc<dyn DataSource>) -> crate::goplugin::route::Offer {
    crate::proto::median_datasource_grpc::offer_data_source(Server(source))
}

#[derive(Clone)]
struct Server(std::sync::Arc<dyn DataSource>);

impl crate::proto::median_datasource_grpc::DataSource for Server {
    fn observe(
        &mut self,
        ctx: Ctx,
        req: crate::proto::median_datasource::ObserveRequest,
        sink: Sink<crate::proto::median_datasource::ObserveReply>,
    ) {
        use crate::goplugin::rpc;
        let invalid = |e: String| rpc::status(grpcio::RpcStatusCode::INVALID_ARGUMENT, e);
        let ts = match req.reportTimestamp.as_ref() {
            Some(t) => ReportTimestamp::from_wire(t).map_err(invalid),
            None => Err(invalid("ObserveRequest without reportTimestamp".into())),
        };
        let ts = match ts {
            Ok(ts) => ts,
            Err(status) => return rpc::respond(&ctx, sink, Err(status)),
        };
        let reply = |value: Result<i128, String>| {
            let value = value.map_err(|e| rpc::status(grpcio::RpcStatusCode::UNAVAILABLE, e))?;
            Ok(crate::proto::median_datasource::ObserveReply {
                value: protobuf::MessageField::some(crate::services::wire::to_big(value)),
                ..Default::default()
            })
        };
        if let Some(value) = self.0.observe_now(&ts) {
            return rpc::respond(&ctx, sink, reply(value));
        }
        let source = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || reply(source.observe(&ts, SERVE_BOUND)));
    }
}

/// A [`DataSource`] reached over gRPC; each call carries its deadline.
pub struct DataSourceClient {
    name: String,
    client: crate::proto::median_datasource_grpc::DataSourceClient,
}

impl DataSourceClient {
    /// The data source served on `channel`, named `name` in errors and metrics.
    pub fn new(name: &str, channel: crate::goplugin::route::Conn) -> DataSourceClient {
        DataSourceClient {
            name: name.to_string(),
            client: crate::proto::median_datasource_grpc::DataSourceClient::new(channel),
        }
    }
}

const OBSERVE: &str = "/loop.DataSource/Observe";

fn observe_request(ts: &ReportTimestamp) -> crate::proto::median_datasource::ObserveRequest {
    crate::proto::median_datasource::ObserveRequest {
        reportTimestamp: protobuf::MessageField::some(ts.to_wire()),
        ..Default::default()
    }
}

/// The value of `reply`, from the source named `name`.
fn value_of(
    name: &str,
    reply: &crate::proto::median_datasource::ObserveReply,
) -> Result<i128, String> {
    match reply.value.as_ref() {
        Some(v) => crate::services::wire::from_big(v),
        None => Err(format!("{name}: {OBSERVE} answered without a value")),
    }
}

impl DataSource for DataSourceClient {
    fn observe(&self, ts: &ReportTimestamp, deadline: Duration) -> Result<i128, String> {
        let req = observe_request(ts);
        let reply = crate::goplugin::rpc::observed(&self.name, OBSERVE, || {
            self.client.observe(&req, deadline)
        })?;
        value_of(&self.name, &reply)
    }

    fn observe_async(&self, ts: &ReportTimestamp, deadline: Duration) -> Option<Reply<i128>> {
        let req = observe_request(ts);
        let reply = crate::goplugin::rpc::observed_async(&self.name, OBSERVE, || {
            self.client.observe_async(&req, deadline)
        });
        let name = self.name.clone();
        Some(Box::pin(async move { value_of(&name, &reply.await?) }))
    }
}

#[cfg(test)]
mod grpc_tests {
    use super::*;
    use std::sync::Arc;

    use crate::sources::{build, Spec};

    struct Fixed(i128);

    impl DataSource for Fixed {
        fn observe(&self, _ts: &ReportTimestamp, _deadline: Duration) -> Result<i128, String> {
            Ok(self.0)
        }
    }

    struct Slow;

    impl DataSource for Slow {
        fn observe(&self, _ts: &ReportTimestamp, _deadline: Duration) -> Result<i128, String> {
            std::thread::sleep(Duration::from_secs(2));
            Ok(1)
        }
    }

    /// Over a real unix socket through a broker: the client sees what the
    /// source gives, huge and negative values intact, and a slow source
    /// fails with DEADLINE_EXCEEDED at the caller's deadline.
    #[test]
    fn served_on_a_broker_id_and_called_with_a_deadline() {
        let dir = crate::goplugin::sockdir::SocketDir::create().unwrap();
        let broker = crate::goplugin::broker::Broker::new(dir);
        let walk = Arc::<dyn DataSource>::from(
            build(&Spec::Randomwalk {
                seed: 7,
                start: 5000,
                step_ppm: 5000,
            })
            .unwrap(),
        );
        broker.serve(1, vec![server(walk.clone())]).unwrap();
        broker
            .serve(2, vec![server(Arc::new(Fixed(i128::MIN)))])
            .unwrap();
        broker.serve(3, vec![server(Arc::new(Slow))]).unwrap();
        let client = |id: u32| DataSourceClient::new("feed", broker.local_channel(id));
        let ts = ReportTimestamp {
            config_digest: vec![9; 32],
            epoch: 1,
            round: 2,
        };
        assert_eq!(client(1).observe(&ts, D), walk.observe(&ts, D));
        assert_eq!(client(2).observe(&ts, D), Ok(i128::MIN));
        let t = std::time::Instant::now();
        let err = client(3)
            .observe(&ts, Duration::from_millis(200))
            .unwrap_err();
        assert!(err.contains("DEADLINE_EXCEEDED"), "{err}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the caller's deadline, not the source's pace"
        );
        broker.close();
    }

    /// Answers at once when `now`, else only through `observe`; each
    /// keeps the name of the thread it ran on.
    struct Threads {
        now: bool,
        ran_on: crate::testutil::ThreadNames,
    }

    impl DataSource for Threads {
        fn observe(&self, _ts: &ReportTimestamp, _deadline: Duration) -> Result<i128, String> {
            self.ran_on.record();
            Ok(1)
        }

        fn observe_now(&self, _ts: &ReportTimestamp) -> Option<Result<i128, String>> {
            self.now.then(|| {
                self.ran_on.record();
                Ok(2)
            })
        }
    }

    /// A value at hand is answered by the thread that received the call,
    /// not handed to a pool thread; any other goes to a pool thread.
    #[test]
    fn a_value_at_hand_is_answered_without_a_pool_thread() {
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
        let ts = ReportTimestamp {
            config_digest: vec![9; 32],
            epoch: 1,
            round: 0,
        };
        for (id, now, value) in [(1, true, 2), (2, false, 1)] {
            let source = Arc::new(Threads {
                now,
                ran_on: Default::default(),
            });
            broker.serve(id, vec![server(source.clone())]).unwrap();
            let client = DataSourceClient::new("feed", broker.local_channel(id));
            assert_eq!(client.observe(&ts, D), Ok(value));
            let ran_on = source.ran_on.seen();
            assert_eq!(ran_on.len(), 1, "{ran_on:?}");
            let pooled = ran_on[0].starts_with("loopp-pool");
            assert_eq!(pooled, !now, "at hand {now}: ran on {ran_on:?}");
        }
        broker.close();
    }

    const D: Duration = Duration::from_secs(5);
}
