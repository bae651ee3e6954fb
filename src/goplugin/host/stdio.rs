//! Host side of `plugin.GRPCStdio`: what the plugin writes on stdout and stderr
//! after the handshake arrives in chunks; it is split into lines (bounded) and
//! logged under the plugin's name. Stderr lines go through the same log-line
//! parser as the process's stderr. A plugin without the service (go-plugin
//! before 1.5) answers Unimplemented: that just means "no stdio".

use futures_util::StreamExt;
use grpcio::{Channel, RpcStatusCode};
use protobuf::well_known_types::empty::Empty;

use crate::goplugin::logline::{Line, Parser, Record, MAX_LINE};
use crate::goplugin::rpc;
use crate::proto::grpc_stdio::stdio_data::Channel as Chan;
use crate::proto::grpc_stdio_grpc::GRPCStdioClient;

/// Opens the stdio stream and relays it on a thread until the plugin ends it.
pub fn relay(name: &str, channel: Channel) {
    let name = name.to_string();
    let spawned = std::thread::Builder::new()
        .name(format!("{name}-stdio"))
        .spawn(move || {
            let mut stream = match GRPCStdioClient::new(channel)
                .stream_stdio(&Empty::new(), rpc::STREAM_DEADLINE)
            {
                Ok(s) => s,
                Err(e) => {
                    log::debug!(
                        "plugin {name}: no stdio stream: {}",
                        crate::goplugin::error::rpc_status_text(&e)
                    );
                    return;
                }
            };
            let mut out = Splitter::default();
            let mut err = Splitter::default();
            let mut parser = Parser::new();
            let out_target = format!("{name}::stdout");
            loop {
                match futures_executor::block_on(stream.next()) {
                    Some(Ok(data)) => match data.channel.enum_value() {
                        Ok(Chan::STDOUT) => out.push(&data.data, |l| {
                            let message = String::from_utf8_lossy(&l.bytes).into_owned();
                            let rec = Record {
                                level: log::Level::Info,
                                message,
                                fields: Vec::new(),
                            };
                            super::process::emit(&out_target, &rec);
                        }),
                        _ => err.push(&data.data, |l| {
                            super::process::emit(&name, &parser.parse(&l))
                        }),
                    },
                    Some(Err(grpcio::Error::RpcFailure(s)))
                        if s.code() == RpcStatusCode::UNIMPLEMENTED =>
                    {
                        log::debug!("plugin {name}: no stdio service (go-plugin before 1.5)");
                        return;
                    }
                    _ => return,
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("plugin: cannot spawn the stdio relay: {e}");
    }
}

/// Splits chunks into lines, holding at most [`MAX_LINE`] bytes of a partial one.
#[derive(Default)]
struct Splitter {
    partial: Vec<u8>,
    dropped: usize,
}

impl Splitter {
    fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(Line)) {
        while !data.is_empty() {
            let (chunk, rest, done) = match data.iter().position(|&b| b == b'\n') {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            let room = MAX_LINE.saturating_sub(self.partial.len());
            let keep = chunk.len().min(room);
            self.partial.extend_from_slice(&chunk[..keep]);
            self.dropped += chunk.len() - keep;
            if done {
                emit(Line {
                    bytes: std::mem::take(&mut self.partial),
                    dropped: std::mem::take(&mut self.dropped),
                });
            }
            data = rest;
        }
    }
}
