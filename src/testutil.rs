//! Helpers for the unit tests: a tiny deterministic PRNG for property tests,
//! fresh temporary directories, a configured devchain contract and the
//! names of the threads a call ran on.

/// xorshift64*: deterministic, good enough to generate test inputs.
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A fresh, empty directory for the test called `name` (whatever an earlier
/// run left there is removed first).
pub fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("loopp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A devchain contract in `dir` with a config (no signers, f = 1, medians
/// in `min..=max`), and that config's digest.
pub fn configured_contract(
    dir: &std::path::Path,
    min: i128,
    max: i128,
) -> (std::sync::Arc<crate::devchain::contract::Contract>, Vec<u8>) {
    use crate::devchain::contract::{ConfigInput, Contract};
    let c = std::sync::Arc::new(Contract::open(&dir.join("chain.jsonl")).unwrap());
    let digest = c
        .set_config(&ConfigInput {
            signers: vec![],
            transmitters: vec![],
            f: 1,
            min_answer: min,
            max_answer: max,
        })
        .unwrap();
    (c, digest.to_vec())
}

/// The medians on `c`'s chain, in the order transmitted.
pub fn medians_on_chain(c: &crate::devchain::contract::Contract) -> Vec<i128> {
    c.transmissions()
        .unwrap()
        .iter()
        .map(|t| t.median)
        .collect()
}

/// A [`fresh_dir`] removed when dropped, so a test leaves nothing behind
/// even when an assertion fails.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A fresh directory for the test called `name`.
    pub fn new(name: &str) -> TempDir {
        TempDir(fresh_dir(name))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The names of the threads something ran on, in order: whether a
/// served call ran on a pool thread or on the thread that received it.
#[derive(Default)]
pub struct ThreadNames(std::sync::Mutex<Vec<String>>);

impl ThreadNames {
    /// Notes the current thread.
    pub fn record(&self) {
        let name = std::thread::current().name().unwrap_or("").to_string();
        self.0.lock().unwrap().push(name);
    }

    /// Every thread noted so far.
    pub fn seen(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}
