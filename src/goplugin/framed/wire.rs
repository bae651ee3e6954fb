//! The framed transport's bytes on the socket.
//!
//! A connection starts with the client's [`PREFACE`], which the server
//! writes back once it accepts the connection (a server with all the
//! connections it keeps closes it instead). Then each side writes frames,
//! all integers big-endian:
//!
//! ```text
//! frame  = length:u32  kind:u8  call:u32  body        (length: of kind, call and body)
//! CALL   body = object:u32  timeout_us:u64  method_len:u8  method  message
//! ANSWER body = code:u32  detail_len:u16  detail  message   (code 0: OK; else no message)
//! ```
//!
//! `object` is the broker id the call is for, `method` gRPC's full method
//! name (`/package.Service/Method`), `message` the protobuf encoding gRPC
//! would carry, `code` and `detail` a gRPC status. A client sends only
//! CALLs, a server only ANSWERs, each to a CALL of the same `call` number
//! on that connection, in any order. A frame longer than its reader's
//! bound, or one that does not parse, ends the connection: what follows it
//! cannot be found.

use std::io::{self, Read};
use std::time::Duration;

use grpcio::{RpcStatus, RpcStatusCode};

/// What a client writes first, and the server back: the protocol and its
/// version.
pub const PREFACE: &[u8] = b"loopp-framed/1\n";

const CALL: u8 = 1;
const ANSWER: u8 = 2;

/// The most a frame carries besides its message: kind, call number, and a
/// call's object, timeout and method (at most 255 bytes) or an answer's
/// code and detail (at most 64 KiB - 1).
pub const OVERHEAD: usize = 1 + 4 + 4 + 2 + u16::MAX as usize;

/// One frame read.
#[derive(Debug)]
pub enum Frame {
    /// A call of `method` on `object`.
    Call {
        /// The call's number on its connection.
        call: u32,
        /// The broker id it is for.
        object: u32,
        /// How long the caller waits.
        timeout: Duration,
        /// `/package.Service/Method`.
        method: String,
        /// The request's encoding.
        message: Vec<u8>,
    },
    /// The answer to call `call`: its message, or its error.
    Answer {
        /// The number of the call it answers.
        call: u32,
        /// The reply's encoding, or the call's error.
        result: Result<Vec<u8>, RpcStatus>,
    },
}

/// Why a connection's frames could no longer be read.
#[derive(Debug)]
pub enum WireError {
    /// The socket failed or ended (`UnexpectedEof` at a frame's start: the
    /// peer closed between frames, the usual end).
    Io(io::Error),
    /// A frame over the reader's bound.
    TooLong {
        /// The frame's length.
        length: usize,
        /// The reader's bound.
        bound: usize,
    },
    /// A frame that does not parse.
    Malformed(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "{e}"),
            WireError::TooLong { length, bound } => write!(
                f,
                "a frame of {length} bytes, over this side's bound of {bound} (the message bound, {}, plus {OVERHEAD}); raise {} on both sides if such messages are expected",
                bound - OVERHEAD,
                crate::goplugin::rpc::MAX_MESSAGE_VAR
            ),
            WireError::Malformed(what) => write!(f, "a frame that does not parse: {what}"),
        }
    }
}

impl WireError {
    /// Whether the peer simply closed the connection between frames.
    pub fn is_end(&self) -> bool {
        matches!(self, WireError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof)
    }
}

/// A CALL frame.
pub fn call(call: u32, object: u32, timeout: Duration, method: &str, message: &[u8]) -> Vec<u8> {
    let method = &method.as_bytes()[..method.len().min(u8::MAX as usize)];
    let length = 1 + 4 + 4 + 8 + 1 + method.len() + message.len();
    let mut out = Vec::with_capacity(4 + length);
    out.extend_from_slice(&(length as u32).to_be_bytes());
    out.push(CALL);
    out.extend_from_slice(&call.to_be_bytes());
    out.extend_from_slice(&object.to_be_bytes());
    let us = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
    out.extend_from_slice(&us.to_be_bytes());
    out.push(method.len() as u8);
    out.extend_from_slice(method);
    out.extend_from_slice(message);
    out
}

/// An ANSWER frame: `message`, or `status` (its detail cut to 64 KiB - 1
/// bytes, at a character's boundary).
pub fn answer(call: u32, result: Result<&[u8], &RpcStatus>) -> Vec<u8> {
    let (code, detail, message): (u32, &str, &[u8]) = match result {
        Ok(m) => (0, "", m),
        Err(s) => (i32::from(s.code()) as u32, s.message(), &[]),
    };
    let mut cut = detail.len().min(u16::MAX as usize);
    while !detail.is_char_boundary(cut) {
        cut -= 1;
    }
    let detail = &detail.as_bytes()[..cut];
    let length = 1 + 4 + 4 + 2 + detail.len() + message.len();
    let mut out = Vec::with_capacity(4 + length);
    out.extend_from_slice(&(length as u32).to_be_bytes());
    out.push(ANSWER);
    out.extend_from_slice(&call.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(detail.len() as u16).to_be_bytes());
    out.extend_from_slice(detail);
    out.extend_from_slice(message);
    out
}

/// Reads one frame whose message is at most `max_message` bytes; nothing
/// longer is allocated.
pub fn read(r: &mut impl Read, max_message: usize) -> Result<Frame, WireError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(WireError::Io)?;
    let length = u32::from_be_bytes(len) as usize;
    let bound = max_message.saturating_add(OVERHEAD);
    if length > bound {
        return Err(WireError::TooLong { length, bound });
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).map_err(|e| {
        // The peer ended inside a frame: not the usual end.
        if e.kind() == io::ErrorKind::UnexpectedEof {
            WireError::Malformed(format!(
                "the connection ended inside a frame of {length} bytes"
            ))
        } else {
            WireError::Io(e)
        }
    })?;
    parse(body)
}

/// The fields of a frame's body, in order.
struct Fields {
    body: Vec<u8>,
    at: usize,
}

impl Fields {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], WireError> {
        if self.body.len() - self.at < n {
            return Err(WireError::Malformed(format!(
                "{} bytes, too short for its {what}",
                self.body.len()
            )));
        }
        self.at += n;
        Ok(&self.body[self.at - n..self.at])
    }

    fn u32(&mut self, what: &str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn rest(mut self) -> Vec<u8> {
        self.body.drain(..self.at);
        self.body
    }
}

fn parse(body: Vec<u8>) -> Result<Frame, WireError> {
    let mut f = Fields { body, at: 0 };
    let kind = f.take(1, "kind")?[0];
    let call = f.u32("call number")?;
    match kind {
        CALL => {
            let object = f.u32("object")?;
            let us = u64::from_be_bytes(f.take(8, "timeout")?.try_into().unwrap());
            let n = f.take(1, "method length")?[0] as usize;
            let method = std::str::from_utf8(f.take(n, "method")?)
                .map_err(|_| WireError::Malformed("a method name that is not UTF-8".into()))?
                .to_string();
            Ok(Frame::Call {
                call,
                object,
                timeout: Duration::from_micros(us),
                method,
                message: f.rest(),
            })
        }
        ANSWER => {
            let code = f.u32("status code")?;
            let n = u16::from_be_bytes(f.take(2, "detail length")?.try_into().unwrap()) as usize;
            let detail = String::from_utf8_lossy(f.take(n, "detail")?).into_owned();
            let result = match code {
                0 => Ok(f.rest()),
                c => {
                    let code = i32::try_from(c)
                        .ok()
                        .filter(|c| (1..=16).contains(c))
                        .ok_or_else(|| {
                            WireError::Malformed(format!(
                                "status code {c}, not a gRPC status (1-16)"
                            ))
                        })?;
                    Err(RpcStatus::with_message(RpcStatusCode::from(code), detail))
                }
            };
            Ok(Frame::Answer { call, result })
        }
        k => Err(WireError::Malformed(format!(
            "kind {k} (1: call, 2: answer)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8], max: usize) -> Result<Frame, WireError> {
        read(&mut &bytes[..], max)
    }

    #[test]
    fn a_call_and_an_answer_read_back_as_written() {
        let c = call(
            7,
            3,
            Duration::from_micros(1_500),
            "/loop.X/Y",
            b"\x0a\x01z",
        );
        match read_all(&c, 16).unwrap() {
            Frame::Call {
                call,
                object,
                timeout,
                method,
                message,
            } => {
                assert_eq!((call, object), (7, 3));
                assert_eq!(timeout, Duration::from_micros(1_500));
                assert_eq!(method, "/loop.X/Y");
                assert_eq!(message, b"\x0a\x01z");
            }
            other => panic!("{other:?}"),
        }
        let ok = answer(7, Ok(b"abc"));
        match read_all(&ok, 16).unwrap() {
            Frame::Answer {
                call: 7,
                result: Ok(m),
            } => assert_eq!(m, b"abc"),
            other => panic!("{other:?}"),
        }
        let status = RpcStatus::with_message(RpcStatusCode::NOT_FOUND, "no such feed".into());
        match read_all(&answer(9, Err(&status)), 16).unwrap() {
            Frame::Answer {
                call: 9,
                result: Err(s),
            } => {
                assert_eq!(s.code(), RpcStatusCode::NOT_FOUND);
                assert_eq!(s.message(), "no such feed");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_frame_over_the_bound_is_refused_before_it_is_read() {
        // Only the length is there: nothing more is read or allocated.
        let huge = u32::MAX.to_be_bytes();
        match read_all(&huge, 1024) {
            Err(e @ WireError::TooLong { .. }) => {
                assert!(e.to_string().contains("LOOPP_MAX_MESSAGE_BYTES"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        // The bound is the message bound plus what a frame carries
        // besides: a message just over the bound plus all that is refused.
        let c = call(1, 1, Duration::ZERO, "/a/b", &[0; 100 + OVERHEAD]);
        assert!(matches!(read_all(&c, 100), Err(WireError::TooLong { .. })));
        assert!(read_all(&c, 200).is_ok());
    }

    #[test]
    fn frames_that_do_not_parse_say_what_is_wrong() {
        let cases: [(&[u8], &str); 5] = [
            (&[0, 0, 0, 5, 9, 0, 0, 0, 1], "kind 9"),
            (&[0, 0, 0, 3, 1, 0, 0], "too short for its call number"),
            (
                &[0, 0, 0, 9, 1, 0, 0, 0, 1, 0, 0, 0, 1],
                "too short for its timeout",
            ),
            (
                &[0, 0, 0, 11, 2, 0, 0, 0, 1, 0, 0, 0, 99, 0, 0],
                "status code 99",
            ),
            (&[0, 0, 0, 20, 2, 0, 0], "ended inside a frame of 20 bytes"),
        ];
        for (bytes, says) in cases {
            let e = read_all(bytes, 64).unwrap_err();
            assert!(!e.is_end());
            assert!(e.to_string().contains(says), "{e} (expected {says:?})");
        }
        // Nothing at all: the peer closed between frames.
        assert!(read_all(&[], 64).unwrap_err().is_end());
    }

    #[test]
    fn a_long_detail_is_cut_at_a_character() {
        let long = "é".repeat(40_000);
        let s = RpcStatus::with_message(RpcStatusCode::INTERNAL, long);
        match read_all(&answer(1, Err(&s)), 0).unwrap() {
            Frame::Answer { result: Err(s), .. } => {
                assert!(s.message().len() <= u16::MAX as usize && s.message().len() > 65_000);
                assert!(s.message().chars().all(|c| c == 'é'));
            }
            other => panic!("{other:?}"),
        }
    }
}
