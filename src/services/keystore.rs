//! The keystore (`loop.Keystore`), served by the node to relayers, and the
//! error log (`loop.ErrorLog`), served to the median plugin: one trait each
//! with gRPC server and client adapters, and [`LogErrors`], an error log
//! that writes to the process's log. The node's keys are in
//! `crate::node::keystore`.

use crate::goplugin::call::{Ctx, Sink};
use std::time::Duration;

use grpcio::RpcStatusCode;
use protobuf::well_known_types::empty::Empty;

use crate::goplugin::rpc;
use crate::proto::error_log::SaveErrorRequest;
use crate::proto::keystore::{AccountsReply, DecryptReply, DecryptRequest, SignReply, SignRequest};
use crate::proto::{error_log_grpc, keystore_grpc};

/// Accounts and signatures.
pub trait Keystore: Send + Sync {
    /// The accounts it can sign for.
    fn accounts(&self) -> Result<Vec<String>, String>;
    /// Signs `data` with `account`'s key.
    fn sign(&self, account: &str, data: &[u8]) -> Result<Vec<u8>, String>;
    /// Decrypts `data` encrypted to `account`'s key.
    fn decrypt(&self, account: &str, data: &[u8]) -> Result<Vec<u8>, String>;
}

/// A keystore with no keys: what the host serves when it was given no
/// keystore, since a Go relayer dials every keystore id it is sent.
pub struct NoKeys;

impl Keystore for NoKeys {
    fn accounts(&self) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }

    fn sign(&self, account: &str, _data: &[u8]) -> Result<Vec<u8>, String> {
        Err(format!(
            "no key for account {account:?}: this keystore holds none"
        ))
    }

    fn decrypt(&self, account: &str, _data: &[u8]) -> Result<Vec<u8>, String> {
        Err(format!(
            "no key for account {account:?}: this keystore holds none"
        ))
    }
}

/// Serves a keystore as `loop.Keystore`.
pub fn keystore_server(ks: std::sync::Arc<dyn Keystore>) -> crate::goplugin::route::Offer {
    keystore_grpc::offer_keystore(KeystoreServer(ks))
}

#[derive(Clone)]
struct KeystoreServer(std::sync::Arc<dyn Keystore>);

impl keystore_grpc::Keystore for KeystoreServer {
    fn accounts(&mut self, ctx: Ctx, _req: Empty, sink: Sink<AccountsReply>) {
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

    fn sign(&mut self, ctx: Ctx, req: SignRequest, sink: Sink<SignReply>) {
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

    fn decrypt(&mut self, ctx: Ctx, req: DecryptRequest, sink: Sink<DecryptReply>) {
        let ks = self.0.clone();
        rpc::respond_blocking(&ctx, sink, move || {
            ks.decrypt(&req.account, &req.data)
                .map(|plain| DecryptReply {
                    decryptedData: plain,
                    ..Default::default()
                })
                .map_err(|e| rpc::status(RpcStatusCode::FAILED_PRECONDITION, e))
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
    pub fn new(channel: crate::goplugin::route::Conn, timeout: Duration) -> KeystoreClient {
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
            .map_err(|e| {
                format!(
                    "Keystore/Accounts: {}",
                    crate::goplugin::error::rpc_status_text(&e)
                )
            })
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
            .map_err(|e| {
                format!(
                    "Keystore/Sign: {}",
                    crate::goplugin::error::rpc_status_text(&e)
                )
            })
    }

    fn decrypt(&self, account: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        let req = DecryptRequest {
            account: account.to_string(),
            data: data.to_vec(),
            ..Default::default()
        };
        self.client
            .decrypt(&req, self.timeout)
            .map(|r| r.decryptedData)
            .map_err(|e| {
                format!(
                    "Keystore/Decrypt: {}",
                    crate::goplugin::error::rpc_status_text(&e)
                )
            })
    }
}

/// Where plugin errors go.
pub trait ErrorLog: Send + Sync {
    /// Records one error.
    fn save_error(&self, message: &str) -> Result<(), String>;

    /// [`ErrorLog::save_error`] as a future that never blocks the thread
    /// polling it (a call sent without waiting, or work done at once);
    /// None (the default): call `save_error` on a thread that may block.
    fn save_error_async(&self, message: &str) -> Option<crate::goplugin::rpc::Reply<()>> {
        let _ = message;
        None
    }
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

    fn save_error_async(&self, message: &str) -> Option<crate::goplugin::rpc::Reply<()>> {
        Some(crate::goplugin::rpc::ready(self.save_error(message)))
    }
}

/// Serves an error log as `loop.ErrorLog`.
pub fn error_log_server(log: std::sync::Arc<dyn ErrorLog>) -> crate::goplugin::route::Offer {
    error_log_grpc::offer_error_log(ErrorLogServer(log))
}

#[derive(Clone)]
struct ErrorLogServer(std::sync::Arc<dyn ErrorLog>);

impl error_log_grpc::ErrorLog for ErrorLogServer {
    fn save_error(&mut self, ctx: Ctx, req: SaveErrorRequest, sink: Sink<Empty>) {
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
    pub fn new(channel: crate::goplugin::route::Conn, timeout: Duration) -> ErrorLogClient {
        ErrorLogClient {
            client: error_log_grpc::ErrorLogClient::new(channel),
            timeout,
        }
    }
}

fn save_request(message: &str) -> SaveErrorRequest {
    SaveErrorRequest {
        message: message.to_string(),
        ..Default::default()
    }
}

fn save_failed(e: &grpcio::Error) -> String {
    format!(
        "ErrorLog/SaveError: {}",
        crate::goplugin::error::rpc_status_text(e)
    )
}

impl ErrorLog for ErrorLogClient {
    fn save_error(&self, message: &str) -> Result<(), String> {
        self.client
            .save_error(&save_request(message), self.timeout)
            .map(|_| ())
            .map_err(|e| save_failed(&e))
    }

    fn save_error_async(&self, message: &str) -> Option<crate::goplugin::rpc::Reply<()>> {
        let sent = self
            .client
            .save_error_async(&save_request(message), self.timeout);
        Some(Box::pin(async move {
            match sent {
                Ok(reply) => reply.await.map(|_| ()).map_err(|e| save_failed(&e)),
                Err(e) => Err(save_failed(&e)),
            }
        }))
    }
}
