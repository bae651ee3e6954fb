//! The library's error type: one enum whose variants name what went wrong, with
//! the plugin, the cause and, where there is one, the fix.
//!
//! Messages are lower-case without a trailing period; causes are kept (see
//! [`std::error::Error::source`]) and grpcio's `Debug` output never reaches text
//! meant for people: [`rpc_status_text`] renders a gRPC failure as `CODE: message`.

use std::fmt;
use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use crate::goplugin::handshake::HandshakeError;

/// What a panic said (its `&str` or `String` payload), for a log line or
/// an error made of it.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Everything the host and plugin sides can fail with.
#[derive(Debug)]
pub enum Error {
    /// The plugin command could not be started.
    Spawn {
        /// Plugin name.
        plugin: String,
        /// The command as given.
        command: String,
        /// The OS error.
        source: io::Error,
    },
    /// The executable's SHA-256 is not the pinned one: it was not started.
    Pinned {
        /// Plugin name.
        plugin: String,
        /// The executable.
        path: String,
        /// The pinned hash (hex).
        expected: String,
        /// The executable's hash (hex).
        actual: String,
    },
    /// No handshake line within the start timeout.
    StartTimeout {
        /// Plugin name.
        plugin: String,
        /// The timeout that ran out.
        after: Duration,
        /// The last lines the plugin wrote to stderr.
        stderr_tail: String,
    },
    /// The plugin exited (or closed stdout) before printing its handshake.
    ExitedBeforeHandshake {
        /// Plugin name.
        plugin: String,
        /// Its exit status, if it had exited.
        status: Option<ExitStatus>,
        /// The last lines the plugin wrote to stderr.
        stderr_tail: String,
    },
    /// The start was cancelled (the node is stopping).
    Cancelled {
        /// Plugin name.
        plugin: String,
    },
    /// The plugin is between processes (restarting); calls fail fast.
    Restarting {
        /// Plugin name.
        plugin: String,
        /// Its state and last error, for the message.
        detail: String,
    },
    /// The first stdout line was not an acceptable handshake.
    Handshake {
        /// Plugin name.
        plugin: String,
        /// The line as read (cut to a readable length).
        line: String,
        /// What is wrong with it.
        problem: HandshakeError,
    },
    /// The plugin negotiated an app version the host does not speak.
    IncompatibleVersion {
        /// Plugin name.
        plugin: String,
        /// What the plugin chose.
        plugin_version: u32,
        /// What the host offered.
        host_versions: Vec<u32>,
    },
    /// The plugin asks for something loopp does not do (AutoMTLS, multiplexing).
    Unsupported {
        /// Plugin name.
        plugin: String,
        /// What and why.
        what: String,
    },
    /// The plugin printed a handshake but does not answer at its address.
    Unreachable {
        /// Plugin name.
        plugin: String,
        /// `network:address` from the handshake.
        address: String,
        /// Why the first health check failed, `CODE: message`.
        status: String,
    },
    /// A gRPC call failed (including deadline exceeded and unreachable peers).
    Rpc {
        /// Plugin name.
        plugin: String,
        /// Full method name, e.g. `/grpc.health.v1.Health/Check`.
        method: &'static str,
        /// `CODE: message`.
        status: String,
    },
    /// A broker id was not announced by the other side in time.
    BrokerTimeout {
        /// The id dialed.
        id: u32,
        /// How long we waited.
        after: Duration,
    },
    /// The broker is closed (the plugin is gone or shutting down).
    BrokerClosed,
    /// The plugin side could not start serving.
    Serve {
        /// What failed, with the setting to change where there is one.
        what: String,
        /// The cause, if an OS or gRPC error.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Any other I/O failure, with what we were doing.
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a grpcio error from calling `method` on `plugin`.
    pub fn rpc(plugin: &str, method: &'static str, e: &grpcio::Error) -> Error {
        let mut status = rpc_status_text(e);
        if status.starts_with("RESOURCE_EXHAUSTED") && status.contains("larger than max") {
            status.push_str(
                "; the message bound is the plugin's rpc.max_message_bytes in the job file \
                 (LOOPP_MAX_MESSAGE_BYTES in a loopp plugin's environment): raise it if such \
                 messages are expected",
            );
        }
        Error::Rpc {
            plugin: plugin.to_string(),
            method,
            status,
        }
    }

    /// Whether this is a gRPC DeadlineExceeded.
    pub fn is_deadline_exceeded(&self) -> bool {
        matches!(self, Error::Rpc { status, .. } if status.starts_with("DEADLINE_EXCEEDED"))
    }
}

/// `CODE: message` for a grpcio error, without grpcio's Debug formatting.
pub fn rpc_status_text(e: &grpcio::Error) -> String {
    match e {
        grpcio::Error::RpcFailure(s) => {
            let code = format!("{:?}", s.code());
            let code = code_name(s.code()).unwrap_or(&code);
            if s.message().is_empty() {
                code.to_string()
            } else {
                format!("{code}: {}", s.message())
            }
        }
        grpcio::Error::RpcFinished(Some(s)) => format!("finished: {}", s.message()),
        grpcio::Error::RpcFinished(None) => "the call was already finished".to_string(),
        grpcio::Error::RemoteStopped => "the remote side stopped".to_string(),
        grpcio::Error::ShutdownFailed => "the server failed to shut down".to_string(),
        grpcio::Error::BindFail(addr) => format!("could not bind {}", addr.to_string_lossy()),
        grpcio::Error::QueueShutdown => "the completion queue is shut down".to_string(),
        grpcio::Error::GoogleAuthenticationFailed => "authentication failed".to_string(),
        grpcio::Error::InvalidMetadata(m) => format!("invalid metadata: {m}"),
        grpcio::Error::Codec(e) => format!("codec: {e}"),
        grpcio::Error::CallFailure(c) => format!("call failure: {c:?}"),
    }
}

/// The name of a gRPC status code (`DEADLINE_EXCEEDED`), `UNKNOWN` for codes
/// outside the standard set. No allocation: it labels every RPC's metrics.
pub fn status_code_name(code: grpcio::RpcStatusCode) -> &'static str {
    code_name(code).unwrap_or("UNKNOWN")
}

fn code_name(code: grpcio::RpcStatusCode) -> Option<&'static str> {
    use grpcio::RpcStatusCode as C;
    Some(match code {
        C::OK => "OK",
        C::CANCELLED => "CANCELLED",
        C::UNKNOWN => "UNKNOWN",
        C::INVALID_ARGUMENT => "INVALID_ARGUMENT",
        C::DEADLINE_EXCEEDED => "DEADLINE_EXCEEDED",
        C::NOT_FOUND => "NOT_FOUND",
        C::ALREADY_EXISTS => "ALREADY_EXISTS",
        C::PERMISSION_DENIED => "PERMISSION_DENIED",
        C::RESOURCE_EXHAUSTED => "RESOURCE_EXHAUSTED",
        C::FAILED_PRECONDITION => "FAILED_PRECONDITION",
        C::ABORTED => "ABORTED",
        C::OUT_OF_RANGE => "OUT_OF_RANGE",
        C::UNIMPLEMENTED => "UNIMPLEMENTED",
        C::INTERNAL => "INTERNAL",
        C::UNAVAILABLE => "UNAVAILABLE",
        C::DATA_LOSS => "DATA_LOSS",
        C::UNAUTHENTICATED => "UNAUTHENTICATED",
        _ => return None,
    })
}

fn tail(stderr_tail: &str) -> String {
    if stderr_tail.trim().is_empty() {
        "; it wrote nothing on stderr".to_string()
    } else {
        format!("; its last stderr lines:\n{}", stderr_tail.trim_end())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Pinned {
                plugin,
                path,
                expected,
                actual,
            } => write!(
                f,
                "plugin {plugin}: {path} has SHA-256 {actual}, not the pinned {expected}; not started (install the pinned build, or update the plugin's sha256)"
            ),
            Error::Spawn {
                plugin,
                command,
                source,
            } => {
                write!(f, "plugin {plugin}: cannot start {command:?}: {source}")?;
                // An OS error says only what failed; a reason of loopp's
                // own (the program lookup's) already says what to do.
                if source.raw_os_error().is_some() {
                    f.write_str(" (check the command is installed and executable)")?;
                }
                Ok(())
            }
            Error::StartTimeout {
                plugin,
                after,
                stderr_tail,
            } => write!(
                f,
                "plugin {plugin}: no handshake within {after:?}; is it a go-plugin gRPC plugin of the right kind?{}",
                tail(stderr_tail)
            ),
            Error::ExitedBeforeHandshake {
                plugin,
                status,
                stderr_tail,
            } => {
                match status {
                    Some(s) => write!(f, "plugin {plugin}: plugin exited before we could connect ({s})")?,
                    None => write!(f, "plugin {plugin}: plugin closed stdout before its handshake")?,
                }
                f.write_str(&tail(stderr_tail))
            }
            Error::Cancelled { plugin } => {
                write!(f, "plugin {plugin}: start cancelled (the node is stopping)")
            }
            Error::Restarting { plugin, detail } => write!(
                f,
                "plugin {plugin} is restarting ({detail}); the call was not made, try again shortly"
            ),
            Error::Handshake {
                plugin,
                line,
                problem,
            } => write!(f, "plugin {plugin}: bad handshake line {line:?}: {problem}"),
            Error::IncompatibleVersion {
                plugin,
                plugin_version,
                host_versions,
            } => write!(
                f,
                "plugin {plugin}: it speaks app protocol version {plugin_version}, this host speaks {host_versions:?}; upgrade the older side"
            ),
            Error::Unsupported { plugin, what } => write!(f, "plugin {plugin}: {what}"),
            Error::Unreachable {
                plugin,
                address,
                status,
            } => write!(
                f,
                "plugin {plugin}: does not answer at {address} it announced: {status}"
            ),
            Error::Rpc {
                plugin,
                method,
                status,
            } => write!(f, "plugin {plugin}: {method} failed: {status}"),
            Error::BrokerTimeout { id, after } => write!(
                f,
                "broker: service id {id} was not announced within {after:?}; the other side must serve it before it is dialed"
            ),
            Error::BrokerClosed => f.write_str("broker: closed (the plugin is shutting down)"),
            Error::Serve { what, source } => match source {
                Some(s) => write!(f, "{what}: {s}"),
                None => f.write_str(what),
            },
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn { source, .. } | Error::Io { source, .. } => Some(source),
            Error::Handshake { problem, .. } => Some(problem),
            Error::Serve {
                source: Some(s), ..
            } => Some(s.as_ref()),
            _ => None,
        }
    }
}
