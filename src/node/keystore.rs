//! The node's keystore: development keys for the devchain, served to
//! relayers as `loop.Keystore` ([`crate::services::keystore`]). Each
//! account's key is derived from a node secret kept in the data directory,
//! and a signature is HMAC-SHA256(key, data). That authenticates data
//! between the node's own parts; it is not an on-chain signature scheme.

use hmac::{KeyInit, Mac};

use crate::services::keystore::Keystore;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Development keys derived from a secret (see the module docs).
pub struct DevKeystore {
    secret: Vec<u8>,
    accounts: Vec<String>,
}

/// The node secret's file name under the data directory.
pub const SECRET_FILE: &str = "keystore.secret";

/// The CSA key's secret file name under the data directory.
pub const CSA_SECRET_FILE: &str = "csa.secret";

impl DevKeystore {
    /// A keystore for `accounts` with the node secret kept in `path`: read
    /// if it exists, else 32 random bytes written there (mode 0600), so keys
    /// stay the same across restarts.
    pub fn open(path: &std::path::Path, accounts: Vec<String>) -> Result<DevKeystore, String> {
        use std::io::{Read, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let named = |e: std::io::Error| format!("keystore secret {}: {e}", path.display());
        let secret = match std::fs::read(path) {
            Ok(s) if s.len() >= 16 => s,
            Ok(s) => {
                return Err(format!(
                "keystore secret {}: {} bytes, need at least 16; remove the file to make a new one",
                path.display(),
                s.len()
            ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = vec![0u8; 32];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut r| r.read_exact(&mut secret))
                    .map_err(|e| format!("reading /dev/urandom: {e}"))?;
                // Written beside it and renamed into place: a write that
                // fails (a full disk, the file size limit) leaves no
                // partial secret that a later start would take for the key.
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .and_then(|mut f| f.write_all(&secret).and_then(|_| f.sync_all()))
                    .and_then(|_| std::fs::hard_link(&tmp, path));
                let _ = std::fs::remove_file(&tmp);
                written.map_err(|e| {
                    format!(
                        "keystore secret {}: cannot write it: {e}; the node needs its data directory writable, with space free",
                        path.display()
                    )
                })?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(named)?;
                }
                secret
            }
            Err(e) => return Err(named(e)),
        };
        Ok(DevKeystore::new(&secret, accounts))
    }

    /// The node's CSA keystore (its identity towards other services, e.g.
    /// the signer of telemetry auth headers), its secret kept in `path` like
    /// [`DevKeystore::open`]'s. Its one account is the key's id: hex of the
    /// key derived from the secret, stable across restarts.
    pub fn open_csa(path: &std::path::Path) -> Result<DevKeystore, String> {
        let ks = DevKeystore::open(path, Vec::new())?;
        let mut mac = HmacSha256::new_from_slice(&ks.secret).map_err(|e| e.to_string())?;
        mac.update(b"csa key id");
        let id = crate::services::wire::hex(&mac.finalize().into_bytes());
        Ok(DevKeystore::new(&ks.secret, vec![id]))
    }

    /// A keystore for `accounts` with keys derived from `secret`.
    pub fn new(secret: &[u8], accounts: Vec<String>) -> DevKeystore {
        DevKeystore {
            secret: secret.to_vec(),
            accounts,
        }
    }
}

impl Keystore for DevKeystore {
    fn accounts(&self) -> Result<Vec<String>, String> {
        Ok(self.accounts.clone())
    }

    fn sign(&self, account: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        if !self.accounts.iter().any(|a| a == account) {
            return Err(format!("no key for account {account:?}"));
        }
        let mut key = HmacSha256::new_from_slice(&self.secret).map_err(|e| e.to_string())?;
        key.update(account.as_bytes());
        let account_key = key.finalize().into_bytes();
        let mut mac = HmacSha256::new_from_slice(&account_key).map_err(|e| e.to_string())?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    /// Development keys sign; nothing is encrypted to them.
    fn decrypt(&self, account: &str, _data: &[u8]) -> Result<Vec<u8>, String> {
        if !self.accounts.iter().any(|a| a == account) {
            return Err(format!("no key for account {account:?}"));
        }
        Err(format!(
            "account {account:?}: the node's development keys sign but hold no decryption key"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::keystore::{
        error_log_server, keystore_server, ErrorLog, ErrorLogClient, KeystoreClient,
    };
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    struct Collect(Mutex<Vec<String>>);

    impl ErrorLog for Collect {
        fn save_error(&self, message: &str) -> Result<(), String> {
            self.0.lock().unwrap().push(message.to_string());
            Ok(())
        }
    }

    /// The keystore and error log services over a real socket give what the
    /// in-process ones give.
    #[test]
    fn keystore_and_error_log_cross_a_socket() {
        let ks = Arc::new(DevKeystore::new(
            b"node secret",
            vec!["t0".into(), "t1".into()],
        ));
        let errors = Arc::new(Collect(Mutex::new(vec![])));
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
        broker
            .serve(
                1,
                vec![
                    keystore_server(ks.clone()),
                    error_log_server(errors.clone()),
                ],
            )
            .unwrap();
        let ch = broker.local_channel(1);
        let t = Duration::from_secs(2);
        let remote_ks = KeystoreClient::new(ch.clone(), t);
        assert_eq!(
            remote_ks.accounts(),
            Ok(vec!["t0".to_string(), "t1".to_string()])
        );
        let sig = remote_ks.sign("t1", b"report").unwrap();
        assert_eq!(sig, ks.sign("t1", b"report").unwrap());
        assert_eq!(sig.len(), 32);
        assert_ne!(
            sig,
            ks.sign("t0", b"report").unwrap(),
            "keys differ per account"
        );
        assert!(remote_ks
            .sign("nobody", b"x")
            .unwrap_err()
            .contains("no key for account"));
        ErrorLogClient::new(ch, t)
            .save_error("observation failed: boom")
            .unwrap();
        assert_eq!(
            *errors.0.lock().unwrap(),
            vec!["observation failed: boom".to_string()]
        );
        broker.close();
    }

    /// Decrypt crosses the wire (loop.Keystore field numbers) and the
    /// development keys refuse it clearly, naming the account.
    #[test]
    fn decrypt_is_served_and_refused_by_signing_only_keys() {
        let ks = Arc::new(DevKeystore::new(b"node secret", vec!["t0".into()]));
        let broker = crate::goplugin::broker::Broker::new(
            crate::goplugin::sockdir::SocketDir::create().unwrap(),
        );
        broker.serve(1, vec![keystore_server(ks)]).unwrap();
        let remote = KeystoreClient::new(broker.local_channel(1), Duration::from_secs(2));
        let err = remote.decrypt("t0", b"sealed").unwrap_err();
        assert!(
            err.starts_with("Keystore/Decrypt: FAILED_PRECONDITION"),
            "{err}"
        );
        assert!(
            err.contains("account \"t0\"") && err.contains("no decryption key"),
            "{err}"
        );
        let err = remote.decrypt("t9", b"sealed").unwrap_err();
        assert!(err.contains("no key for account \"t9\""), "{err}");
        broker.close();
    }

    /// The CSA key: one account, the same after a restart, its own secret.
    #[test]
    fn the_csa_key_is_its_own_and_kept() {
        let dir = crate::testutil::TempDir::new("csa-keystore");
        let a = DevKeystore::open_csa(&dir.0.join(CSA_SECRET_FILE)).unwrap();
        let b = DevKeystore::open_csa(&dir.0.join(CSA_SECRET_FILE)).unwrap();
        let id = a.accounts().unwrap();
        assert_eq!(id.len(), 1);
        assert_eq!(id[0].len(), 64, "{id:?}");
        assert_eq!(b.accounts().unwrap(), id);
        assert_eq!(a.sign(&id[0], b"x"), b.sign(&id[0], b"x"));
        let other = DevKeystore::open_csa(&dir.0.join("other.secret")).unwrap();
        assert_ne!(other.accounts().unwrap(), id, "a new secret, a new key");
    }

    #[test]
    fn the_node_secret_is_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::testutil::fresh_dir("keystore");
        let path = dir.join(SECRET_FILE);
        let a = DevKeystore::open(&path, vec!["t0".into()]).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = DevKeystore::open(&path, vec!["t0".into()]).unwrap();
        assert_eq!(
            a.sign("t0", b"x"),
            b.sign("t0", b"x"),
            "same keys after a restart"
        );
        std::fs::write(&path, b"short").unwrap();
        let e = DevKeystore::open(&path, vec![]).err().unwrap();
        assert!(
            e.contains("5 bytes") && e.contains("remove the file"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
