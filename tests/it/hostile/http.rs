//! Hostile bytes to the node's HTTP server: random and mutated requests,
//! each on its own connection. Every answer is whole HTTP/1.1 responses
//! with a status the server means to send (never 500: no handler panicked),
//! or a close without a word; never a hang; and the server answers a normal
//! request after each case.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{check, hostile, PARSER_CASES};
use crate::util::*;

/// Writes `bytes`, closes the write side, reads to the end (bounded).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // The server may close before taking everything (431, 400): that is an
    // answer, not a failure.
    let _ = c.write_all(bytes);
    let _ = c.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    match c.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(out),
        Err(e) => Err(format!(
            "no answer and no close: {e} (after {} bytes)",
            out.len()
        )),
    }
}

/// The status of the first response in `raw` (later ones may follow a
/// HEAD, whose length says nothing of what follows).
fn status(raw: &[u8]) -> Option<u16> {
    std::str::from_utf8(raw.get(9..12)?).ok()?.parse().ok()
}

#[test]
fn hostile_http_requests_get_an_answer_or_a_close_never_a_panic() {
    let (config, _sandbox) = test_job("hostile-http", &[("p", "serve")], &[]);
    let node = loopp::node::Node::start(&config).expect("node starts");
    running_pid(&node, "p");
    let addr = node.http_addr().unwrap();
    let valid: Vec<Vec<u8>> = [
        "GET /discovery HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "GET /plugins/p/metrics HTTP/1.1\r\nAccept: text/plain\r\nX-Prometheus-Scrape-Timeout-Seconds: 2\r\n\r\n",
        "HEAD /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n",
        "POST /discovery HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        "GET /nope?x=%00 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let meant = [200, 400, 404, 405, 414, 431, 502, 503, 504];
    check("HTTP request", PARSER_CASES / 2, hostile(valid), |bytes| {
        let raw = exchange(addr, &bytes).map_err(TestCaseError::fail)?;
        prop_assert!(
            raw.is_empty() || raw.starts_with(b"HTTP/1.1 "),
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        );
        if let Some(code) = status(&raw) {
            prop_assert!(
                meant.contains(&code),
                "status {} in {:?}",
                code,
                String::from_utf8_lossy(&raw)
            );
        }
        // Still serving.
        let health =
            exchange(addr, b"GET /health HTTP/1.1\r\n\r\n").map_err(TestCaseError::fail)?;
        prop_assert_eq!(status(&health), Some(200));
        Ok(())
    });
    node.shutdown();
}
