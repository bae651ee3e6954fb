//! Hostile bytes (issue 11, "Hardening"): every LOOP request decoded from
//! random and mutated bytes by each server, plugin side and node side, ends in
//! INVALID_ARGUMENT or a normal answer, never a panic or a hang; the same for
//! the handshake line, plugin log lines, dotenv files and job files (never a
//! panic, an error message or a value), and HTTP requests to the node (an
//! answer or a close, never a panic or a hang).
//!
//! Property tests with `proptest`: failures shrink to a small input and print
//! the seed that found them. Runs are deterministic by default (a fixed seed,
//! as CI wants); two environment variables make longer or different runs:
//!
//! - `LOOPP_PROPTEST_CASES=N`: cases per property instead of each test's
//!   default (parsers: [`PARSER_CASES`]; gRPC: [`GRPC_CASES`] batches of
//!   [`grpc::BATCH`] requests per method, sent at once).
//! - `LOOPP_PROPTEST_SEED=N` (a u64) replays or varies a run;
//!   `LOOPP_PROPTEST_SEED=random` draws a seed and prints it (stderr) so a
//!   failure can be replayed with it.
//!
//! `LOOPP_HOSTILE_TRACE=1` prints every gRPC batch: each request as
//! decoded and its answer.
//!
//! A long run, without nextest's per-test timeout:
//! `LOOPP_PROPTEST_CASES=20000 LOOPP_PROPTEST_SEED=random cargo test --test it hostile`.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseResult, TestRunner};

mod grpc;
mod http;
mod parsers;

/// Default cases of a parser property.
pub const PARSER_CASES: u32 = 512;
/// Default cases (batches) of a gRPC method's property.
pub const GRPC_CASES: u32 = 4;
/// The seed of a default run.
const DEFAULT_SEED: u64 = 0x100b_9e11;

/// The seed of this run: `LOOPP_PROPTEST_SEED`, or the fixed default.
fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| match std::env::var("LOOPP_PROPTEST_SEED") {
        Err(_) => DEFAULT_SEED,
        Ok(v) if v == "random" => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            let s = t ^ (u64::from(std::process::id()) << 32);
            eprintln!("LOOPP_PROPTEST_SEED={s}");
            s
        }
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("LOOPP_PROPTEST_SEED={v:?}: expected a u64 or \"random\"")),
    })
}

/// Cases of a property: `LOOPP_PROPTEST_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    match std::env::var("LOOPP_PROPTEST_CASES") {
        Err(_) => default,
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("LOOPP_PROPTEST_CASES={v:?}: expected a number")),
    }
}

/// Checks `property` on `default_cases` values of `strategy` (see the knobs
/// above); panics with the shrunk input and the seed on a failure.
#[track_caller]
pub fn check<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> TestCaseResult,
) {
    let config = Config {
        cases: cases(default_cases),
        rng_seed: RngSeed::Fixed(seed()),
        // Never write regression files into the source tree.
        failure_persistence: None,
        max_shrink_iters: 256,
        // Some cases take seconds (broker dials wait 5 s): bound shrinking.
        max_shrink_time: 60_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, property) {
        panic!("{name}: {e} (replay with LOOPP_PROPTEST_SEED={})", seed());
    }
}

/// One change to a valid encoding.
#[derive(Clone, Debug)]
pub enum Edit {
    /// Flip bit `.1 % 8` of byte `.0`.
    Flip(usize, u8),
    /// Cut the input at `.0`.
    Truncate(usize),
    /// Insert bytes at `.0`.
    Insert(usize, Vec<u8>),
    /// Remove `.1` bytes at `.0`.
    Delete(usize, usize),
    /// Overwrite byte `.0` with `.1` (a tag, a wire type, a length).
    Set(usize, u8),
    /// A varint or length gone wrong at `.0`: continuation bits without end,
    /// an overlong varint, a huge length.
    Varint(usize, u8),
    /// Copy `.2` bytes from `.1` to `.0` (splice the input into itself).
    Splice(usize, usize, usize),
}

pub fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<usize>();
    prop_oneof![
        (at, any::<u8>()).prop_map(|(a, b)| Edit::Flip(a, b)),
        at.prop_map(Edit::Truncate),
        (at, prop::collection::vec(any::<u8>(), 1..12)).prop_map(|(a, b)| Edit::Insert(a, b)),
        (at, 1..16usize).prop_map(|(a, n)| Edit::Delete(a, n)),
        (at, any::<u8>()).prop_map(|(a, b)| Edit::Set(a, b)),
        (at, 0..4u8).prop_map(|(a, k)| Edit::Varint(a, k)),
        (at, at, 1..32usize).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
    ]
}

/// `input` with `edits` applied (positions taken modulo the length).
pub fn apply(mut input: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = input.len();
        let pos = |p: usize| if len == 0 { 0 } else { p % len };
        let pos_incl = |p: usize| p % (len + 1);
        match e {
            Edit::Flip(p, bit) if len > 0 => input[pos(*p)] ^= 1 << (bit % 8),
            Edit::Truncate(p) => input.truncate(pos_incl(*p)),
            Edit::Insert(p, bytes) => {
                let p = pos_incl(*p);
                input.splice(p..p, bytes.iter().copied());
            }
            Edit::Delete(p, n) if len > 0 => {
                let p = pos(*p);
                input.drain(p..(p + n).min(len));
            }
            Edit::Set(p, b) if len > 0 => input[pos(*p)] = *b,
            Edit::Varint(p, kind) => {
                let p = pos_incl(*p);
                let bytes: &[u8] = match kind {
                    0 => &[0xff; 11],                                       // never ends
                    1 => &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], // overlong zero
                    2 => &[0xff, 0xff, 0xff, 0xff, 0x0f],                   // length 4 GiB
                    _ => &[0x80],                                           // cut short
                };
                if p < len && *kind == 3 {
                    input[p] |= 0x80;
                } else {
                    input.splice(p..p, bytes.iter().copied());
                }
            }
            Edit::Splice(to, from, n) if len > 0 => {
                let from = pos(*from);
                let piece: Vec<u8> = input[from..(from + n).min(len)].to_vec();
                let to = pos_incl(*to);
                input.splice(to..to, piece);
            }
            _ => {}
        }
    }
    input
}

/// Fully random bytes, short and long.
pub fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..2048),
    ]
}

/// A mutation (1-6 edits) of one of `corpus`.
pub fn mutated(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(
        !corpus.is_empty(),
        "mutations need a valid input to start from"
    );
    (0..corpus.len(), prop::collection::vec(edit(), 1..6))
        .prop_map(move |(i, edits)| apply(corpus[i].clone(), &edits))
}

/// Random bytes, or a valid input of `corpus`, or a mutation of one.
pub fn hostile(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let valid = corpus.clone();
    prop_oneof![
        2 => random_bytes(),
        1 => (0..valid.len()).prop_map(move |i| valid[i].clone()),
        6 => mutated(corpus),
    ]
}

/// Text for parsers that take `&str`: the bytes, with what is not UTF-8
/// replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn hostile_edits_change_inputs_as_described() {
    let v = b"abcdef".to_vec();
    assert_eq!(apply(v.clone(), &[Edit::Truncate(3)]), b"abc");
    assert_eq!(apply(v.clone(), &[Edit::Flip(0, 0)]), b"`bcdef");
    assert_eq!(apply(v.clone(), &[Edit::Delete(1, 2)]), b"adef");
    assert_eq!(apply(v.clone(), &[Edit::Splice(0, 4, 2)]), b"efabcdef");
    assert_eq!(apply(v.clone(), &[Edit::Varint(1, 3)]), b"a\xe2cdef");
    assert_eq!(
        apply(Vec::new(), &[Edit::Flip(5, 1), Edit::Delete(0, 3)]),
        b""
    );
    assert_eq!(apply(Vec::new(), &[Edit::Insert(7, b"x".to_vec())]), b"x");
}
