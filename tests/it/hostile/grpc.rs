//! Every LOOP server, plugin side and node side, answers any request bytes
//! with INVALID_ARGUMENT (bytes that are not the method's request message) or
//! a normal answer (OK or a status of the handler), within a deadline, without
//! a panic; and still answers a normal call afterwards.
//!
//! Requests go as raw bytes ([`raw`]: a pass-through marshaller) over real
//! gRPC channels on unix sockets, and, for an object reached framed (a
//! loopp plugin's routed objects), the same bytes over its framed
//! connection too (`loopp::goplugin::framed`). Each case is a batch of [`BATCH`] requests
//! sent at once (handlers that dial the broker wait up to its 5 s dial
//! timeout; at once, they wait together). Inputs: random bytes, random
//! well-typed messages built from the method's descriptor, the valid
//! requests of each method, and mutations of both. Whether the bytes decode
//! is predicted locally from the descriptor, so an undecodable request must
//! get exactly INVALID_ARGUMENT.
//!
//! A panic is seen in-process by a panic hook (node-side servers), and for
//! plugin processes by their exit or a `panic` in their log (the plugin's
//! panic hook logs one).
//!
//! Which methods are covered is checked against every method of `proto/`
//! ([`loopp::proto::ALL_METHODS`], from the same descriptors): a new method
//! fails [`hostile_grpc_every_method_is_covered`] until it is fuzzed here or
//! excluded with a reason.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use grpcio::{CallOption, GrpcSlice, MessageReader, Method, MethodType, RpcStatusCode};
use loopp::goplugin::route::{Conn, Offer};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestCaseResult};
use protobuf::reflect::{
    FileDescriptor, MessageDescriptor, ReflectValueBox, RuntimeFieldType, RuntimeType,
};
use protobuf::{Message, MessageDyn, MessageField};

use loopp::goplugin::broker::{Broker, Lease};
use loopp::goplugin::handshake::Cookie;
use loopp::goplugin::host::{Client, HostConfig};
use loopp::goplugin::sockdir::SocketDir;
use loopp::proto;

use super::{check, hostile, GRPC_CASES};
use crate::util::*;

/// Requests per case, sent at once.
pub const BATCH: usize = 16;
/// Deadline of every call: above the broker's 5 s dial timeout, so only a
/// hang reaches it.
const DEADLINE: Duration = Duration::from_secs(10);
/// Deadline of the typed calls that set a world up.
const T: Duration = Duration::from_secs(10);

// ---- raw bytes over gRPC --------------------------------------------------

// The marshaller's signature is fixed by grpcio: `&T` with T = Vec<u8>.
#[allow(clippy::ptr_arg)]
fn raw_ser(bytes: &Vec<u8>, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    *buf = GrpcSlice::from(bytes.clone());
    Ok(())
}

fn raw_de(mut reader: MessageReader) -> grpcio::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(out)
}

/// `name` (`/pkg.Service/Method`) as a unary method of bytes.
fn raw(name: &'static str) -> Method<Vec<u8>, Vec<u8>> {
    Method {
        ty: MethodType::Unary,
        name,
        req_mar: grpcio::Marshaller {
            ser: raw_ser,
            de: raw_de,
        },
        resp_mar: grpcio::Marshaller {
            ser: raw_ser,
            de: raw_de,
        },
    }
}

// ---- descriptors ------------------------------------------------------------

fn files() -> Vec<&'static FileDescriptor> {
    vec![
        proto::capabilities_registry::file_descriptor(),
        proto::error_log::file_descriptor(),
        proto::example::file_descriptor(),
        proto::grpc_broker::file_descriptor(),
        proto::grpc_controller::file_descriptor(),
        proto::grpc_stdio::file_descriptor(),
        proto::health::file_descriptor(),
        proto::keystore::file_descriptor(),
        proto::loop_service::file_descriptor(),
        proto::loopp_broker::file_descriptor(),
        proto::median::file_descriptor(),
        proto::median_datasource::file_descriptor(),
        proto::median_plugin::file_descriptor(),
        proto::provider::file_descriptor(),
        proto::relayer::file_descriptor(),
        proto::reporting::file_descriptor(),
    ]
}

/// The request type of `method`.
fn request_type(method: &str) -> MessageDescriptor {
    for f in files() {
        for s in f.services() {
            for m in s.methods() {
                let name = format!("/{}.{}/{}", f.package(), s.proto().name(), m.proto().name());
                if name == method {
                    return m.input_type();
                }
            }
        }
    }
    panic!("no method {method} in proto/")
}

// ---- random well-typed messages ---------------------------------------------

const STRINGS: &[&str] = &[
    "",
    "0",
    "-1",
    "median",
    "test",
    "devchain",
    "{}",
    "null",
    "{\"chainFile\":\"/nonexistent/x.jsonl\"}",
    "{\"chainFile\":\"\"}",
    "0x",
    "plugin",
    "\u{0}\u{ffff}",
];

/// A number from one choice: often small, sometimes at the edges.
fn number(c: u64) -> u64 {
    match c % 4 {
        0 => (c >> 2) % 8,
        1 => u64::MAX - (c >> 2) % 4,
        2 => 1 << ((c >> 2) % 64),
        _ => c >> 2,
    }
}

fn value(t: &RuntimeType, choices: &mut std::slice::Iter<'_, u64>, depth: u32) -> ReflectValueBox {
    let c = choices.next().copied().unwrap_or(0);
    let n = number(c);
    match t {
        RuntimeType::I32 => ReflectValueBox::I32(n as i32),
        RuntimeType::I64 => ReflectValueBox::I64(n as i64),
        RuntimeType::U32 => ReflectValueBox::U32(n as u32),
        RuntimeType::U64 => ReflectValueBox::U64(n),
        RuntimeType::F32 => ReflectValueBox::F32(f32::from_bits(c as u32)),
        RuntimeType::F64 => ReflectValueBox::F64(f64::from_bits(c)),
        RuntimeType::Bool => ReflectValueBox::Bool(c & 1 == 1),
        RuntimeType::String => ReflectValueBox::String(if c % 3 == 0 {
            (0..(c >> 2) % 40)
                .filter_map(|i| char::from_u32(((c >> (i % 32)) % 0x2_0000) as u32))
                .collect()
        } else {
            STRINGS[(c >> 2) as usize % STRINGS.len()].to_string()
        }),
        RuntimeType::VecU8 => {
            let len = (c >> 56) as usize % 48;
            ReflectValueBox::Bytes((0..len).map(|i| (c >> (i % 8 * 8)) as u8).collect())
        }
        RuntimeType::Enum(e) => ReflectValueBox::Enum(e.clone(), n as i32),
        RuntimeType::Message(d) if depth < 4 => {
            ReflectValueBox::Message(message(d, choices, depth + 1))
        }
        RuntimeType::Message(d) => ReflectValueBox::Message(d.new_instance()),
    }
}

/// A message of type `desc` whose every field is decided by `choices`.
fn message(
    desc: &MessageDescriptor,
    choices: &mut std::slice::Iter<'_, u64>,
    depth: u32,
) -> Box<dyn MessageDyn> {
    let mut m = desc.new_instance();
    for f in desc.fields() {
        let Some(&c) = choices.next() else { break };
        if c % 3 == 0 {
            continue;
        }
        match f.runtime_field_type() {
            RuntimeFieldType::Singular(t) => {
                let v = value(&t, choices, depth);
                f.set_singular_field(&mut *m, v);
            }
            RuntimeFieldType::Repeated(t) => {
                for _ in 0..(c >> 2) % 4 {
                    let v = value(&t, choices, depth);
                    f.mut_repeated(&mut *m).push(v);
                }
            }
            RuntimeFieldType::Map(k, t) => {
                for _ in 0..(c >> 2) % 3 {
                    let (k, v) = (value(&k, choices, depth), value(&t, choices, depth));
                    f.mut_map(&mut *m).insert(k, v);
                }
            }
        }
    }
    m
}

/// Encodings of random messages of type `desc`.
fn typed(desc: MessageDescriptor) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u64>(), 0..48).prop_map(move |choices| {
        message(&desc, &mut choices.iter(), 0)
            .write_to_bytes_dyn()
            .expect("a built message encodes")
    })
}

/// What to send `method`: hostile bytes around `valid` and typed messages.
fn requests(method: &str, valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let desc = request_type(method);
    let mut corpus = valid;
    corpus.push(Vec::new());
    prop_oneof![
        3 => hostile(corpus.clone()),
        1 => typed(desc.clone()),
        2 => (typed(desc), prop::collection::vec(super::edit(), 1..4))
            .prop_map(|(bytes, edits)| super::apply(bytes, &edits)),
    ]
}

// ---- panics ---------------------------------------------------------------------

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts this process's panics (and keeps printing them).
fn count_panics() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

// ---- the property -----------------------------------------------------------------

/// A set of servers under test.
trait World {
    /// Why the servers are broken (a panic, a dead process), if they are.
    fn broken(&self) -> Option<String>;
}

/// Sends `batch` to `method` on `channel` at once and checks every answer;
/// then that the world is whole and `method` still answers `normal`.
fn send_batch(
    world: &dyn World,
    channel: &Conn,
    method: &'static str,
    batch: &[Vec<u8>],
    normal: Option<&[u8]>,
    ends: bool,
) -> TestCaseResult {
    let desc = request_type(method);
    let m = raw(method);
    let client = channel.client.get().clone();
    let opt = || {
        let o = CallOption::default().timeout(DEADLINE);
        match &channel.route {
            Some(h) => o.headers(h.clone()),
            None => o,
        }
    };
    let calls: Vec<_> = batch
        .iter()
        .map(|req| {
            client
                .unary_call_async(&m, req, opt())
                .map_err(|e| TestCaseError::fail(format!("{method}: cannot start a call: {e}")))
        })
        .collect::<Result<_, _>>()?;
    // The same bytes framed, when the object is reached framed (both
    // sides loopp): the framed server must answer them as gRPC does.
    let framed: Vec<_> = match &channel.framed {
        Some((framed, object)) => batch
            .iter()
            .map(|req| framed.call(*object, method, req, DEADLINE))
            .collect(),
        None => Vec::new(),
    };
    let t0 = std::time::Instant::now();
    let (answers, framed) = futures_executor::block_on(futures_util::future::join(
        futures_util::future::join_all(calls),
        futures_util::future::join_all(framed),
    ));
    let answers: Vec<_> = answers
        .into_iter()
        .zip(batch)
        .chain(framed.into_iter().zip(batch))
        .collect();
    if std::env::var_os("LOOPP_HOSTILE_TRACE").is_some() {
        eprintln!("{method}: batch answered in {:?}", t0.elapsed());
        for (a, req) in &answers {
            eprintln!(
                "  {:?} -> {:?}",
                desc.parse_from_bytes(req).map(|m| format!("{m:?}")),
                a.as_ref().map(|_| ()).map_err(|e| e.to_string())
            );
        }
    }
    for (answer, req) in answers {
        let decodes = desc.parse_from_bytes(req).is_ok();
        match answer {
            Ok(_) => prop_assert!(decodes, "{}: OK for bytes that do not decode", method),
            Err(grpcio::Error::RpcFailure(s)) => {
                let code = s.code();
                // A Close that took: the server is gone.
                if ends && code == RpcStatusCode::UNAVAILABLE {
                    continue;
                }
                if !decodes {
                    prop_assert_eq!(
                        code,
                        RpcStatusCode::INVALID_ARGUMENT,
                        "{}: undecodable bytes answered {}",
                        method,
                        s.message()
                    );
                }
                // A hang, or a handler that dropped its reply (as a panic
                // on a handler thread does). UNKNOWN is what a reporting
                // plugin's errors are, as in Go; panics are seen by `broken`.
                prop_assert!(
                    ![RpcStatusCode::DEADLINE_EXCEEDED, RpcStatusCode::CANCELLED].contains(&code),
                    "{}: {:?} {:?} for {:?}",
                    method,
                    code,
                    s.message(),
                    req
                );
            }
            Err(e) => return Err(TestCaseError::fail(format!("{method}: {e}"))),
        }
    }
    if let Some(why) = world.broken() {
        return Err(TestCaseError::fail(format!("{method}: {why}")));
    }
    if let Some(normal) = normal {
        let r = client.unary_call(&m, &normal.to_vec(), opt());
        if let Err(grpcio::Error::RpcFailure(s)) = &r {
            prop_assert!(
                ![
                    RpcStatusCode::DEADLINE_EXCEEDED,
                    RpcStatusCode::UNAVAILABLE,
                    RpcStatusCode::CANCELLED,
                ]
                .contains(&s.code()),
                "{}: a normal call afterwards failed: {:?}",
                method,
                s
            );
        } else if let Err(e) = r {
            return Err(TestCaseError::fail(format!("{method}: normal call: {e}")));
        }
    }
    Ok(())
}

/// One method under test: where it is served and its valid requests.
struct Target {
    method: &'static str,
    channel: Conn,
    valid: Vec<Vec<u8>>,
    /// Whether a valid request may end what serves it (Close): then no
    /// normal call of the same method is expected to work afterwards.
    ends: bool,
    /// Whether the first valid request still works after the batch (not
    /// when it named broker ids that were dialed once already).
    repeatable: bool,
}

impl Target {
    fn new(
        method: &'static str,
        channel: &(impl Clone + Into<Conn>),
        valid: Vec<Vec<u8>>,
    ) -> Target {
        Target {
            method,
            channel: channel.clone().into(),
            valid,
            ends: false,
            repeatable: true,
        }
    }

    fn ending(mut self) -> Target {
        self.ends = true;
        self.repeatable = false;
        self
    }

    fn once(mut self) -> Target {
        self.repeatable = false;
        self
    }
}

/// Runs the property for every target, in order; returns the methods done.
/// The brokered objects of a loopp plugin are reached framed too (its
/// main server's methods are not brokered): both transports get fuzzed.
#[track_caller]
fn assert_framed(targets: &[Target]) {
    let brokered: Vec<_> = targets
        .iter()
        .filter(|t| t.channel.route.is_some())
        .map(|t| (t.method, t.channel.framed.is_some()))
        .collect();
    assert!(!brokered.is_empty());
    assert!(
        brokered.iter().all(|(_, framed)| *framed),
        "brokered objects not reached framed: {brokered:?}"
    );
}

fn fuzz(world: &dyn World, targets: Vec<Target>) -> BTreeSet<&'static str> {
    let mut done = BTreeSet::new();
    for t in targets {
        eprintln!("hostile bytes to {}", t.method);
        let normal = t
            .repeatable
            .then(|| t.valid.first().cloned().unwrap_or_default());
        let batches = prop::collection::vec(requests(t.method, t.valid.clone()), BATCH);
        check(t.method, GRPC_CASES, batches, |batch| {
            send_batch(
                world,
                &t.channel,
                t.method,
                &batch,
                normal.as_deref(),
                t.ends,
            )
        });
        done.insert(t.method);
    }
    done
}

fn bytes(m: &impl Message) -> Vec<u8> {
    m.write_to_bytes().unwrap()
}

/// Methods of `service` (`pkg.Service`) in [`proto::ALL_METHODS`].
fn methods_of(service: &str) -> BTreeSet<&'static str> {
    proto::ALL_METHODS
        .iter()
        .copied()
        .filter(|m| {
            m.strip_prefix('/')
                .and_then(|m| m.split_once('/'))
                .map(|(s, _)| s)
                == Some(service)
        })
        .collect()
}

#[track_caller]
fn assert_covers(done: &BTreeSet<&'static str>, services: &[&str]) {
    let want: BTreeSet<&str> = services.iter().flat_map(|s| methods_of(s)).collect();
    let missing: Vec<_> = want.difference(done).collect();
    assert!(missing.is_empty(), "methods not fuzzed: {missing:?}");
}

// ---- the node's servers, in-process -------------------------------------------------

/// Services the node serves to plugins: what the test covers in
/// [`hostile_grpc_node_services_answer_any_bytes`].
const NODE_SERVICES: &[&str] = &[
    "loop.Keystore",
    "loop.ErrorLog",
    "loop.DataSource",
    "loop.CapabilitiesRegistry",
    "loop.OffchainConfigDigester",
    "loop.ContractConfigTracker",
    "loop.ReportCodec",
    "loop.OnchainConfigCodec",
    "loop.ContractTransmitter",
    "loop.MedianContract",
];

struct InProcess;

impl World for InProcess {
    fn broken(&self) -> Option<String> {
        let n = PANICS.load(Ordering::SeqCst);
        (n > 0).then(|| format!("{n} panic(s) in this process (see above)"))
    }
}

/// A host broker's server for `services`, and a channel to it.
fn host_serve(broker: &Broker, lease: &mut Lease, services: Vec<Offer>) -> Conn {
    let id = lease.serve(services).expect("the host serves");
    broker.local_channel(id)
}

fn report_timestamp(digest: &[u8], epoch: u32) -> proto::loop_types::ReportTimestamp {
    loopp::services::datasource::ReportTimestamp {
        config_digest: digest.to_vec(),
        epoch,
        round: 1,
    }
    .to_wire()
}

fn big(v: i64) -> proto::loop_types::BigInt {
    let mut b = proto::loop_types::BigInt::new();
    b.negative = v < 0;
    let mag = v.unsigned_abs().to_be_bytes();
    let first = mag.iter().position(|b| *b != 0).unwrap_or(mag.len());
    b.value = mag[first..].to_vec();
    b
}

/// The provider's methods (the node re-serves a relayer's provider to the
/// median plugin; the relayer serves it to the node), with valid requests.
fn provider_targets(ch: &Conn, digest: &[u8], report: &[u8]) -> Vec<Target> {
    use proto::provider as pv;
    use proto::relayer as rl;
    let mut cfg = pv::ContractConfig::new();
    cfg.configDigest = digest.to_vec();
    cfg.configCount = 1;
    cfg.F = 1;
    cfg.transmitters = vec!["a".into(), "b".into(), "c".into(), "d".into()];
    let mut digest_req = pv::ConfigDigestRequest::new();
    digest_req.contractConfig = MessageField::some(cfg);
    let mut obs = pv::ParsedAttributedObservation::new();
    obs.value = MessageField::some(big(42));
    obs.julesPerFeeCoin = MessageField::some(big(1));
    obs.gasPriceSubunits = MessageField::some(big(2));
    obs.timestamp = 1;
    let mut build = pv::BuildReportRequest::new();
    build.observations = vec![obs.clone(), obs];
    let mut median_from = pv::MedianFromReportRequest::new();
    median_from.report = report.to_vec();
    let mut max_len = pv::MaxReportLengthRequest::new();
    max_len.n = 4;
    let mut onchain = pv::OnchainConfig::new();
    onchain.min = MessageField::some(big(-5));
    onchain.max = MessageField::some(big(5));
    let mut encode = pv::EncodeRequest::new();
    encode.onchainConfig = MessageField::some(onchain);
    let mut decode = pv::DecodeRequest::new();
    decode.encoded =
        loopp::services::median::value::encode_onchain_config(loopp::services::median::Bounds {
            min: -5,
            max: 5,
        })
        .unwrap();
    let mut latest = pv::LatestConfigRequest::new();
    latest.changedInBlock = 1;
    let mut ctx = rl::ReportContext::new();
    ctx.reportTimestamp = MessageField::some(report_timestamp(digest, 7));
    let mut transmit = rl::TransmitRequest::new();
    transmit.reportContext = MessageField::some(ctx);
    transmit.report = report.to_vec();
    let details = proto::median::LatestTransmissionDetailsRequest::new();
    vec![
        Target::new(
            "/loop.OffchainConfigDigester/ConfigDigest",
            ch,
            vec![bytes(&digest_req)],
        ),
        Target::new(
            "/loop.OffchainConfigDigester/ConfigDigestPrefix",
            ch,
            vec![],
        ),
        Target::new(
            "/loop.ContractConfigTracker/LatestConfigDetails",
            ch,
            vec![],
        ),
        Target::new(
            "/loop.ContractConfigTracker/LatestConfig",
            ch,
            vec![bytes(&latest)],
        ),
        Target::new("/loop.ContractConfigTracker/LatestBlockHeight", ch, vec![]),
        Target::new("/loop.ReportCodec/BuildReport", ch, vec![bytes(&build)]),
        Target::new(
            "/loop.ReportCodec/MedianFromReport",
            ch,
            vec![bytes(&median_from)],
        ),
        Target::new(
            "/loop.ReportCodec/MaxReportLength",
            ch,
            vec![bytes(&max_len)],
        ),
        Target::new("/loop.OnchainConfigCodec/Encode", ch, vec![bytes(&encode)]),
        Target::new("/loop.OnchainConfigCodec/Decode", ch, vec![bytes(&decode)]),
        Target::new(
            "/loop.ContractTransmitter/Transmit",
            ch,
            vec![bytes(&transmit)],
        ),
        Target::new(
            "/loop.ContractTransmitter/LatestConfigDigestAndEpoch",
            ch,
            vec![],
        ),
        Target::new("/loop.ContractTransmitter/FromAccount", ch, vec![]),
        Target::new(
            "/loop.MedianContract/LatestTransmissionDetails",
            ch,
            vec![bytes(&details)],
        ),
        Target::new(
            "/loop.MedianContract/LatestRoundRequested",
            ch,
            vec![bytes(&details)],
        ),
    ]
}

/// A report the devchain codec built, for valid requests that carry one.
fn a_report() -> Vec<u8> {
    use loopp::services::relay::provider::{ParsedObservation, ReportCodec};
    let o = ParsedObservation {
        timestamp: 1,
        value: 42,
        juels_per_fee_coin: 1,
        gas_price_subunits: 2,
        observer: 0,
    };
    loopp::devchain::provider::DevchainCodec
        .build_report(&[o, o])
        .expect("a report")
}

#[test]
fn hostile_grpc_node_services_answer_any_bytes() {
    use proto::keystore as ks;
    count_panics();
    let sandbox = Sandbox::new("hostile-node");
    let (contract, digest) = crate::median::chain(&sandbox);
    let provider = crate::median::devchain_provider(&contract);
    let broker = Broker::new(SocketDir::create_in(&sandbox.dir).unwrap());
    let mut lease = broker.lease();
    let keys = Arc::new(loopp::node::keystore::DevKeystore::new(
        b"hostile secret",
        vec!["acct".into()],
    ));
    let keystore = host_serve(
        &broker,
        &mut lease,
        vec![loopp::services::keystore::keystore_server(keys)],
    );
    let errors = host_serve(
        &broker,
        &mut lease,
        vec![loopp::services::keystore::error_log_server(Arc::new(
            loopp::services::keystore::LogErrors {
                source: "hostile".into(),
            },
        ))],
    );
    let walk = loopp::sources::build(&loopp::sources::Spec::Randomwalk {
        seed: 1,
        start: 1000,
        step_ppm: 100,
    })
    .unwrap();
    let source = host_serve(
        &broker,
        &mut lease,
        vec![loopp::services::datasource::server(Arc::from(walk))],
    );
    let registry = host_serve(
        &broker,
        &mut lease,
        vec![loopp::services::capabilities::empty_registry_server()],
    );
    let provided = host_serve(
        &broker,
        &mut lease,
        loopp::services::relay::grpc::median_provider_services(&provider),
    );

    let mut sign = ks::SignRequest::new();
    sign.account = "acct".into();
    sign.data = vec![1; 32];
    let mut decrypt = ks::DecryptRequest::new();
    decrypt.account = "acct".into();
    decrypt.data = vec![2; 48];
    let mut save = proto::error_log::SaveErrorRequest::new();
    save.message = "oops".into();
    let mut observe = proto::median_datasource::ObserveRequest::new();
    observe.reportTimestamp = MessageField::some(report_timestamp(&digest, 1));
    let cr = |name: &'static str, valid: Vec<Vec<u8>>| Target::new(name, &registry, valid);
    let mut targets = vec![
        Target::new("/loop.Keystore/Accounts", &keystore, vec![]),
        Target::new("/loop.Keystore/Sign", &keystore, vec![bytes(&sign)]),
        Target::new("/loop.Keystore/Decrypt", &keystore, vec![bytes(&decrypt)]),
        Target::new("/loop.ErrorLog/SaveError", &errors, vec![bytes(&save)]),
        Target::new("/loop.DataSource/Observe", &source, vec![bytes(&observe)]),
    ];
    for m in methods_of("loop.CapabilitiesRegistry") {
        targets.push(cr(m, vec![]));
    }
    targets.extend(provider_targets(&provided, &digest, &a_report()));
    let done = fuzz(&InProcess, targets);
    assert_covers(&done, NODE_SERVICES);
    drop(lease);
    broker.close();
}

// ---- the plugins' servers, in their processes ------------------------------------------

/// A LOOPP under test: broken when it exited or logged a panic.
struct Plugin {
    client: Client,
}

impl World for Plugin {
    fn broken(&self) -> Option<String> {
        let name = &self.client.config().name;
        if let Some(status) = self.client.process().status() {
            return Some(format!(
                "plugin {name} exited ({status}): {}",
                self.client
                    .process()
                    .stderr_tail(Duration::from_millis(200))
            ));
        }
        let mut check = proto::health::HealthCheckRequest::new();
        check.service = "plugin".into();
        if let Err(e) =
            proto::health_grpc::HealthClient::new(self.client.channel().clone()).check(&check, T)
        {
            return Some(format!("plugin {name} does not answer a health check: {e}"));
        }
        let panics: Vec<String> = logs_for(name)
            .into_iter()
            .filter(|r| r.message.contains("panic"))
            .map(|r| r.message)
            .collect();
        (!panics.is_empty()).then(|| format!("plugin {name} panicked: {panics:?}"))
    }
}

fn start(sandbox: &Sandbox, name: &str, program: &str, cookie: Cookie) -> Plugin {
    capture_logs();
    let mut c = HostConfig::new(name, program, cookie);
    c.socket_dir = Some(sandbox.dir.clone());
    c.env = loopp::node::loopenv::plugin_env(crate::median::free_port(), &[]);
    Plugin {
        client: Client::start(&c).expect("the plugin starts"),
    }
}

/// `loop.Service` of a served object (or a plugin), `Close` last.
fn service_targets(ch: &Conn, closes: bool) -> Vec<Target> {
    let mut v = vec![
        Target::new("/loop.Service/Name", ch, vec![]),
        Target::new("/loop.Service/Ready", ch, vec![]),
        Target::new("/loop.Service/HealthReport", ch, vec![]),
    ];
    let close = Target::new("/loop.Service/Close", ch, vec![]);
    v.push(if closes { close.ending() } else { close });
    v
}

#[test]
fn hostile_grpc_relayer_plugin_answers_any_bytes() {
    use proto::relayer as rl;
    let sandbox = Sandbox::new("hostile-relayer");
    let (contract, digest) = crate::median::chain(&sandbox);
    drop(contract);
    let plugin = start(&sandbox, "devchain", devchain(), Cookie::relayer());
    let main = plugin.client.conn().clone();
    let config = serde_json::json!({"chainFile": sandbox.dir.join("chain.jsonl")}).to_string();
    let mut new_relayer = rl::NewRelayerRequest::new();
    new_relayer.config = config;
    let relayer_id = proto::relayer_grpc::PluginRelayerClient::new(main.clone())
        .new_relayer(&new_relayer, T)
        .expect("NewRelayer")
        .relayerID;
    let relayer = plugin.client.broker().dial(relayer_id, T).unwrap();
    let mut args = rl::RelayArgs::new();
    args.contractID = "test".into();
    args.providerType = "median".into();
    let mut new_provider = rl::NewPluginProviderRequest::new();
    new_provider.relayArgs = MessageField::some(args.clone());
    let provider_id = proto::relayer_grpc::RelayerClient::new(relayer.clone())
        .new_plugin_provider(&new_provider, T)
        .expect("NewPluginProvider")
        .pluginProviderID;
    let provider = plugin.client.broker().dial(provider_id, T).unwrap();
    let mut new_config = rl::NewConfigProviderRequest::new();
    new_config.relayArgs = MessageField::some(args);
    let mut list = rl::ListNodeStatusesRequest::new();
    list.page_size = 10;
    let mut transact = rl::TransactionRequest::new();
    transact.from = "a".into();
    transact.to = "b".into();
    transact.amount = MessageField::some(big(1));
    let mut replay = rl::ReplayRequest::new();
    replay.fromBlock = "1".into();
    let mut health = proto::health::HealthCheckRequest::new();
    health.service = "plugin".into();

    let mut targets = vec![
        Target::new("/grpc.health.v1.Health/Check", &main, vec![bytes(&health)]),
        Target::new(
            "/loop.PluginRelayer/NewRelayer",
            &main,
            vec![bytes(&new_relayer)],
        ),
        Target::new(
            "/loop.Relayer/NewConfigProvider",
            &relayer,
            vec![bytes(&new_config)],
        ),
        Target::new(
            "/loop.Relayer/NewPluginProvider",
            &relayer,
            vec![bytes(&new_provider)],
        ),
        Target::new("/loop.Relayer/GetChainStatus", &relayer, vec![]),
        Target::new(
            "/loop.Relayer/ListNodeStatuses",
            &relayer,
            vec![bytes(&list)],
        ),
        Target::new("/loop.Relayer/Transact", &relayer, vec![bytes(&transact)]),
        Target::new("/loop.Relayer/LatestHead", &relayer, vec![]),
        Target::new("/loop.Relayer/FinalizedHead", &relayer, vec![]),
        Target::new("/loop.Relayer/GetChainInfo", &relayer, vec![]),
        Target::new("/loop.Relayer/Replay", &relayer, vec![bytes(&replay)]),
    ];
    targets.extend(provider_targets(&provider, &digest, &a_report()));
    // The plugin's own loop.Service, then the provider's (closed last).
    targets.extend(service_targets(&main, false));
    targets.extend(service_targets(&provider, true));
    assert_framed(&targets);
    let done = fuzz(&plugin, targets);
    assert_covers(
        &done,
        &[
            "loop.PluginRelayer",
            "loop.Relayer",
            "loop.Service",
            "loop.OffchainConfigDigester",
            "loop.ContractConfigTracker",
            "loop.ReportCodec",
            "loop.OnchainConfigCodec",
            "loop.ContractTransmitter",
            "loop.MedianContract",
        ],
    );
    let mut client = plugin.client;
    client.kill();
}

#[test]
fn hostile_grpc_median_plugin_answers_any_bytes() {
    use proto::median_plugin as mp;
    use proto::reporting as rp;
    let sandbox = Sandbox::new("hostile-median");
    let (contract, digest) = crate::median::chain(&sandbox);
    let provider = crate::median::devchain_provider(&contract);
    let plugin = start(&sandbox, "median", median(), Cookie::median());
    let main = plugin.client.conn().clone();
    let broker = plugin.client.broker().clone();
    let mut lease = broker.lease();
    let source = || {
        let s = loopp::sources::build(&loopp::sources::Spec::Static { value: 42 }).unwrap();
        loopp::services::datasource::server(Arc::from(s))
    };
    let mut serve = |services| lease.serve(services).expect("the host serves");
    let mut new_factory = mp::NewMedianFactoryRequest::new();
    new_factory.contractID = "test".into();
    new_factory.medianProviderID = serve(loopp::services::relay::grpc::median_provider_services(
        &provider,
    ));
    new_factory.dataSourceID = serve(vec![source()]);
    new_factory.juelsPerFeeCoinDataSourceID = serve(vec![source()]);
    new_factory.gasPriceSubunitsDataSourceID = serve(vec![source()]);
    new_factory.errorLogID = serve(vec![loopp::services::keystore::error_log_server(Arc::new(
        loopp::services::keystore::LogErrors {
            source: "hostile".into(),
        },
    ))]);
    let factory_id = proto::median_plugin_grpc::PluginMedianClient::new(main.clone())
        .new_median_factory(&new_factory, T)
        .expect("NewMedianFactory")
        .reportingPluginFactoryID;
    let factory = broker.dial(factory_id, T).unwrap();
    let settings = loopp::median::plugin::FeedSettings {
        deviation_ppb: 0,
        heartbeat: Duration::from_secs(3600),
    };
    let config = loopp::services::median::factory::ReportingPluginConfig {
        config_digest: digest.clone(),
        oracle_id: 0,
        n: 4,
        f: 1,
        onchain_config: loopp::services::median::value::encode_onchain_config(
            loopp::services::median::Bounds {
                min: -1_000_000_000,
                max: 1_000_000_000,
            },
        )
        .unwrap(),
        offchain_config: loopp::median::libocr::OffchainConfig::from(settings).encode(),
        estimated_round_interval: Duration::from_secs(1),
        max: crate::median::max(2000),
    };
    let mut new_plugin = mp::NewReportingPluginRequest::new();
    new_plugin.reportingPluginConfig = MessageField::some(
        loopp::services::median::factory_grpc::config_to_wire(&config),
    );
    let plugin_id = proto::median_plugin_grpc::ReportingPluginFactoryClient::new(factory.clone())
        .new_reporting_plugin(&new_plugin, T)
        .expect("NewReportingPlugin")
        .reportingPluginID;
    let reporting = broker.dial(plugin_id, T).unwrap();
    let ts = || MessageField::some(report_timestamp(&digest, 3));
    let mut query = rp::QueryRequest::new();
    query.reportTimestamp = ts();
    let observation_bytes = proto::reporting_grpc::ReportingPluginClient::new(reporting.clone())
        .observation(
            &{
                let mut o = rp::ObservationRequest::new();
                o.reportTimestamp = ts();
                o
            },
            T,
        )
        .expect("Observation")
        .observation;
    let mut observation = rp::ObservationRequest::new();
    observation.reportTimestamp = ts();
    let mut report = rp::ReportRequest::new();
    report.reportTimestamp = ts();
    report.observations = (0..3)
        .map(|i| {
            let mut o = rp::AttributedObservation::new();
            o.observation = observation_bytes.clone();
            o.observer = i;
            o
        })
        .collect();
    let mut accept = rp::ShouldAcceptFinalizedReportRequest::new();
    accept.reportTimestamp = ts();
    accept.report = a_report();
    let mut transmit = rp::ShouldTransmitAcceptedReportRequest::new();
    transmit.reportTimestamp = ts();
    transmit.report = a_report();

    let mut targets = vec![
        // Its ids were dialed by the setup: it waits for them (5 s) and fails.
        Target::new(
            "/loop.PluginMedian/NewMedianFactory",
            &main,
            vec![bytes(&new_factory)],
        )
        .once(),
        Target::new(
            "/loop.ReportingPluginFactory/NewReportingPlugin",
            &factory,
            vec![bytes(&new_plugin)],
        ),
        Target::new(
            "/loop.ReportingPlugin/Query",
            &reporting,
            vec![bytes(&query)],
        ),
        Target::new(
            "/loop.ReportingPlugin/Observation",
            &reporting,
            vec![bytes(&observation)],
        ),
        Target::new(
            "/loop.ReportingPlugin/Report",
            &reporting,
            vec![bytes(&report)],
        ),
        Target::new(
            "/loop.ReportingPlugin/ShouldAcceptFinalizedReport",
            &reporting,
            vec![bytes(&accept)],
        ),
        Target::new(
            "/loop.ReportingPlugin/ShouldTransmitAcceptedReport",
            &reporting,
            vec![bytes(&transmit)],
        ),
    ];
    targets.extend(service_targets(&factory, true));
    targets.push(Target::new("/loop.ReportingPlugin/Close", &reporting, vec![]).ending());
    assert_framed(&targets);
    let done = fuzz(&plugin, targets);
    assert_covers(
        &done,
        &[
            "loop.PluginMedian",
            "loop.ReportingPluginFactory",
            "loop.ReportingPlugin",
        ],
    );
    drop(lease);
    let mut client = plugin.client;
    client.kill();
}

#[test]
fn hostile_grpc_example_plugin_answers_any_bytes() {
    let sandbox = Sandbox::new("hostile-example");
    let plugin = start(&sandbox, "example", example(), Cookie::example());
    let main = plugin.client.conn().clone();
    let mut text = proto::example::Text::new();
    text.value = "hello".into();
    let mut id = proto::example::BrokerId::new();
    id.value = 1;
    let mut announced = proto::grpc_broker::ConnInfo::new();
    announced.service_id = 7;
    announced.network = "unix".into();
    announced.address = sandbox.dir.join("nothing.sock").display().to_string();
    let targets = vec![
        Target::new("/loopp.example.Example/Echo", &main, vec![bytes(&text)]),
        Target::new("/loopp.example.Example/ServeEcho", &main, vec![]),
        // An id the plugin's broker keeps for a dial that never comes.
        Target::new("/loopp.Broker/Announce", &main, vec![bytes(&announced)]),
        // Id 1 is never served by this host: the plugin waits 5 s for it.
        Target::new("/loopp.example.Example/CallEcho", &main, vec![bytes(&id)]).once(),
    ];
    let done = fuzz(&plugin, targets);
    assert_covers(&done, &["loopp.example.Example"]);
    assert!(done.contains("/loopp.Broker/Announce"));
    let mut client = plugin.client;
    client.kill();
}

/// Methods not fuzzed here, and why.
const NOT_COVERED: &[(&str, &str)] = &[
    (
        "/plugin.GRPCController/Shutdown",
        "its request is Empty: nearly any bytes decode and stop the plugin, as asked",
    ),
    (
        "/plugin.GRPCBroker/StartStream",
        "a duplex stream: the one broker stream of a plugin, taken by its host",
    ),
    (
        "/plugin.GRPCStdio/StreamStdio",
        "a server stream with one subscriber, taken by the host",
    ),
    (
        "/loopp.Broker/Watch",
        "a long poll, the host's one watch of the plugin's announcements (as the broker stream is): answered at the next one; its request, one number, decodes from nearly any bytes",
    ),
    (
        "/grpc.health.v1.Health/Watch",
        "a server stream (the glue decodes its request as for Check, which is covered)",
    ),
];

/// What the tests above fuzz: the services each covers.
const COVERED_SERVICES: &[&str] = &[
    "grpc.health.v1.Health/Check",
    "loopp.Broker/Announce",
    "loopp.example.Example",
    "loop.PluginRelayer",
    "loop.Relayer",
    "loop.Service",
    "loop.PluginMedian",
    "loop.ReportingPluginFactory",
    "loop.ReportingPlugin",
];

#[test]
fn hostile_grpc_every_method_is_covered() {
    // The list the build made is every method of the descriptors.
    let mut described = BTreeSet::new();
    for f in files() {
        for s in f.services() {
            for m in s.methods() {
                described.insert(format!(
                    "/{}.{}/{}",
                    f.package(),
                    s.proto().name(),
                    m.proto().name()
                ));
            }
        }
    }
    let listed: BTreeSet<String> = proto::ALL_METHODS.iter().map(|m| m.to_string()).collect();
    assert_eq!(described, listed, "files() misses a proto file");
    let covered = |m: &str| {
        NODE_SERVICES
            .iter()
            .chain(COVERED_SERVICES)
            .any(|s| m.starts_with(&format!("/{s}/")) || m == format!("/{s}"))
            || NOT_COVERED.iter().any(|(n, _)| *n == m)
    };
    let missing: Vec<_> = proto::ALL_METHODS.iter().filter(|m| !covered(m)).collect();
    assert!(
        missing.is_empty(),
        "methods no hostile test sends bytes to (fuzz them or say why not): {missing:?}"
    );
}
