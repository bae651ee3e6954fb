//! The node's keystore (`loop.Keystore`), served to relayers, and the error
//! log (`loop.ErrorLog`), served to the median plugin: one trait each, an
//! in-process implementation, and gRPC server and client adapters.
//!
//! The in-process keystore holds development keys for the devchain: each
//! account's key is derived from a node secret, and a signature is
//! HMAC-SHA256(key, data). That authenticates data between the node's own
//! parts; it is not an on-chain signature scheme.

use std::time::Duration;

use grpcio::{RpcContext, RpcStatusCode, UnarySink};
use hmac::{KeyInit, Mac};
use protobuf::well_known_types::empty::Empty;

use crate::proto::error_log::SaveErrorRequest;
use crate::proto::keystore::{AccountsReply, SignReply, SignRequest};
use crate::proto::{error_log_grpc, keystore_grpc};
use crate::rpc;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Accounts and signatures.
pub trait Keystore: Send + Sync {
    /// The accounts it can sign for.
    fn accounts(&self) -> Result<Vec<String>, String>;
    /// Signs `data` with `account`'s key.
    fn sign(&self, account: &str, data: &[u8]) -> Result<Vec<u8>, String>;
}

/// Development keys derived from a secret (see the module docs).
pub struct DevKeystore {
    secret: Vec<u8>,
    accounts: Vec<String>,
}

/// The node secret's file name under the data directory.
pub const SECRET_FILE: &str = "keystore.secret";

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
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(named)?;
                f.write_all(&secret)
                    .and_then(|_| f.sync_all())
                    .map_err(named)?;
                secret
            }
            Err(e) => return Err(named(e)),
        };
        Ok(DevKeystore::new(&secret, accounts))
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
}

/// Serves a keystore as `loop.Keystore`.
pub fn keystore_server(ks: std::sync::Arc<dyn Keystore>) -> grpcio::Service {
    keystore_grpc::create_keystore(KeystoreServer(ks))
}

#[derive(Clone)]
struct KeystoreServer(std::sync::Arc<dyn Keystore>);

impl keystore_grpc::Keystore for KeystoreServer {
    fn accounts(&mut self, ctx: RpcContext, _req: Empty, sink: UnarySink<AccountsReply>) {
        // Off the completion-queue thread: the keystore may itself be remote.
        let ks = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            ks.accounts()
                .map(|accounts| AccountsReply {
                    accounts,
                    ..Default::default()
                })
                .map_err(|e| rpc::status(RpcStatusCode::UNAVAILABLE, e))
        });
    }

    fn sign(&mut self, ctx: RpcContext, req: SignRequest, sink: UnarySink<SignReply>) {
        let ks = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            ks.sign(&req.account, &req.data)
                .map(|signed| SignReply {
                    signedData: signed,
                    ..Default::default()
                })
                .map_err(|e| rpc::status(RpcStatusCode::INVALID_ARGUMENT, e))
        });
    }
}

/// A keystore over gRPC; each call has `timeout`.
pub struct KeystoreClient {
    client: keystore_grpc::KeystoreClient,
    timeout: Duration,
}

impl KeystoreClient {
    /// The keystore served on `channel`.
    pub fn new(channel: grpcio::Channel, timeout: Duration) -> KeystoreClient {
        KeystoreClient {
            client: keystore_grpc::KeystoreClient::new(channel),
            timeout,
        }
    }
}

impl Keystore for KeystoreClient {
    fn accounts(&self) -> Result<Vec<String>, String> {
        self.client
            .accounts(&Empty::new(), self.timeout)
            .map(|r| r.accounts)
            .map_err(|e| format!("Keystore/Accounts: {}", crate::error::rpc_status_text(&e)))
    }

    fn sign(&self, account: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        let req = SignRequest {
            account: account.to_string(),
            data: data.to_vec(),
            ..Default::default()
        };
        self.client
            .sign(&req, self.timeout)
            .map(|r| r.signedData)
            .map_err(|e| format!("Keystore/Sign: {}", crate::error::rpc_status_text(&e)))
    }
}

/// Where plugin errors go.
pub trait ErrorLog: Send + Sync {
    /// Records one error.
    fn save_error(&self, message: &str) -> Result<(), String>;
}

/// The node's error log: each error is logged under `source` at error level.
pub struct LogErrors {
    /// Logged as the record's target.
    pub source: String,
}

impl ErrorLog for LogErrors {
    fn save_error(&self, message: &str) -> Result<(), String> {
        log::error!(target: &self.source, "{message}");
        Ok(())
    }
}

/// Serves an error log as `loop.ErrorLog`.
pub fn error_log_server(log: std::sync::Arc<dyn ErrorLog>) -> grpcio::Service {
    error_log_grpc::create_error_log(ErrorLogServer(log))
}

#[derive(Clone)]
struct ErrorLogServer(std::sync::Arc<dyn ErrorLog>);

impl error_log_grpc::ErrorLog for ErrorLogServer {
    fn save_error(&mut self, ctx: RpcContext, req: SaveErrorRequest, sink: UnarySink<Empty>) {
        let log = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            log.save_error(&req.message)
                .map(|()| Empty::new())
                .map_err(|e| rpc::status(RpcStatusCode::UNAVAILABLE, e))
        });
    }
}

/// An error log over gRPC; each call has `timeout`.
pub struct ErrorLogClient {
    client: error_log_grpc::ErrorLogClient,
    timeout: Duration,
}

impl ErrorLogClient {
    /// The error log served on `channel`.
    pub fn new(channel: grpcio::Channel, timeout: Duration) -> ErrorLogClient {
        ErrorLogClient {
            client: error_log_grpc::ErrorLogClient::new(channel),
            timeout,
        }
    }
}

impl ErrorLog for ErrorLogClient {
    fn save_error(&self, message: &str) -> Result<(), String> {
        let req = SaveErrorRequest {
            message: message.to_string(),
            ..Default::default()
        };
        self.client
            .save_error(&req, self.timeout)
            .map(|_| ())
            .map_err(|e| format!("ErrorLog/SaveError: {}", crate::error::rpc_status_text(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Collect(Mutex<Vec<String>>);

    impl ErrorLog for Collect {
        fn save_error(&self, message: &str) -> Result<(), String> {
            self.0.lock().unwrap().push(message.to_string());
            Ok(())
        }
    }

    /// Both services over a real socket give what the in-process ones give.
    #[test]
    fn keystore_and_error_log_cross_a_socket() {
        let ks = Arc::new(DevKeystore::new(
            b"node secret",
            vec!["t0".into(), "t1".into()],
        ));
        let errors = Arc::new(Collect(Mutex::new(vec![])));
        let broker = crate::broker::Broker::new(crate::sockdir::SocketDir::create().unwrap());
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
