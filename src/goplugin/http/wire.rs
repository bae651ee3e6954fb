//! HTTP/1.x on the wire: a request head parsed from bytes (by `httparse`),
//! and a reply encoded to bytes. No I/O here.

/// Most header lines a request may carry; more is 431.
pub const MAX_HEADERS: usize = 64;

/// A request as the handlers see it: method, target and headers (bodies are
/// not read: the servers answer GET and HEAD).
#[derive(Clone, Debug)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
}

impl Request {
    /// A request built in code (for handler tests).
    pub fn new(method: &str, url: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.to_string(),
            url: url.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The method, as sent (`GET`, `HEAD`, ...).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request target, as sent (path and query).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a complete head says about the connection.
#[derive(Debug)]
pub struct Head {
    pub request: Request,
    /// Bytes of the head, to drop from the connection's buffer.
    pub len: usize,
    /// The client wants the connection kept open after the reply, and the
    /// request has no body (a body is never read, so such a connection
    /// closes after its reply).
    pub keep_alive: bool,
}

/// The outcome of parsing what a connection sent so far.
#[derive(Debug)]
pub enum Parsed {
    Complete(Head),
    /// More bytes are needed.
    Partial,
    /// The head is longer than allowed: 431.
    TooLarge,
    /// Not HTTP/1.x: 400 with the reason.
    Bad(String),
}

/// Parses a request head from the start of `buf`; a head that has not
/// ended within `max_head` bytes is [`Parsed::TooLarge`].
pub fn parse(buf: &[u8], max_head: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => {
            let version = req.version.unwrap_or(1);
            let mut keep_alive = version >= 1;
            let mut body = false;
            let mut list = Vec::with_capacity(req.headers.len());
            for h in req.headers.iter() {
                let value = String::from_utf8_lossy(h.value).into_owned();
                if h.name.eq_ignore_ascii_case("connection") {
                    for token in value.split(',').map(str::trim) {
                        if token.eq_ignore_ascii_case("close") {
                            keep_alive = false;
                        } else if token.eq_ignore_ascii_case("keep-alive") && version == 0 {
                            keep_alive = true;
                        }
                    }
                } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                    || (h.name.eq_ignore_ascii_case("content-length") && value.trim() != "0")
                {
                    body = true;
                }
                list.push((h.name.to_string(), value));
            }
            Parsed::Complete(Head {
                request: Request {
                    method: req.method.unwrap_or_default().to_string(),
                    url: req.path.unwrap_or_default().to_string(),
                    headers: list,
                },
                len,
                keep_alive: keep_alive && !body,
            })
        }
        Ok(httparse::Status::Complete(_)) => Parsed::TooLarge,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => Parsed::TooLarge,
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::TooLarge,
        Err(e) => Parsed::Bad(format!("malformed HTTP/1.x request: {e}")),
    }
}

/// A reply: status, headers and a body in memory.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<Header>,
    body: Vec<u8>,
}

/// One response header line.
#[derive(Clone, Debug)]
pub struct Header {
    name: String,
    value: String,
}

impl Header {
    /// A header; CR and LF are removed, so a value cannot end the head.
    pub fn new(name: &str, value: &str) -> Header {
        let clean = |s: &str| s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        Header {
            name: clean(name),
            value: clean(value),
        }
    }
}

impl Reply {
    /// A reply with `status` and `body`.
    pub fn new(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, h: Header) -> Reply {
        self.headers.push(h);
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The bytes on the wire: status line, headers (with `Content-Length`,
    /// `Date`, and `Connection: close` unless `keep_alive`) and, unless the
    /// request was HEAD, the body.
    pub fn encode(&self, head_only: bool, keep_alive: bool) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::with_capacity(256 + if head_only { 0 } else { self.body.len() });
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nDate: {}\r\n",
            self.status,
            reason(self.status),
            self.body.len(),
            jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S GMT"),
        );
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        for h in &self.headers {
            let _ = write!(out, "{}: {}\r\n", h.name, h.value);
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// The reason phrase of the codes loopp sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &str) -> Head {
        match parse(raw.as_bytes(), 16 << 10) {
            Parsed::Complete(h) => h,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_connection_header() {
        assert!(complete("GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!complete("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!complete("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        // A body is never read: the connection closes after the reply.
        assert!(!complete("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").keep_alive);
        assert!(complete("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").keep_alive);
    }

    #[test]
    fn the_head_is_parsed_and_its_length_counted() {
        let h = complete("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nACCEPT: text/plain\r\n\r\nGET /next");
        assert_eq!(h.request.method(), "GET");
        assert_eq!(h.request.url(), "/a?b=1");
        assert_eq!(h.request.header("accept"), Some("text/plain"));
        assert_eq!(h.request.header("missing"), None);
        assert_eq!(
            h.len,
            "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nACCEPT: text/plain\r\n\r\n".len()
        );
    }

    #[test]
    fn partial_too_large_and_bad_heads_are_told_apart() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHo", 1024),
            Parsed::Partial
        ));
        assert!(matches!(
            parse(&[b'a'; 64], 64),
            Parsed::Bad(_) | Parsed::TooLarge
        ));
        let long = format!("GET /{} HTTP/1.1\r\n", "x".repeat(100));
        assert!(matches!(parse(long.as_bytes(), 64), Parsed::TooLarge));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("H{i}: v\r\n"))
            .collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse(raw.as_bytes(), 1 << 20), Parsed::TooLarge));
        assert!(matches!(
            parse(b"\x16\x03\x01\x00\xa5\x01", 1024),
            Parsed::Bad(_)
        ));
    }

    #[test]
    fn replies_encode_length_connection_and_head_only() {
        let r =
            Reply::new(404, b"nope\n".to_vec()).with_header(Header::new("X-A", "1\r\nInjected: 2"));
        let text = String::from_utf8(r.encode(false, false)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n"),
            "{text}"
        );
        assert!(text.contains("Connection: close\r\n"));
        assert!(
            text.contains("X-A: 1Injected: 2\r\n"),
            "CR/LF stripped: {text}"
        );
        assert!(text.ends_with("\r\n\r\nnope\n"));
        let head = String::from_utf8(r.encode(true, true)).unwrap();
        assert!(head.ends_with("\r\n\r\n") && !head.contains("Connection: close"));
        assert!(head.contains("Content-Length: 5\r\n"));
    }
}
