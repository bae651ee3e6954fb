//! The HTTP server: tiny_http with a fixed pool of worker threads, and the
//! reply helpers. Used by plugins (their own `/metrics`,
//! [`crate::goplugin::plugin::metrics`]) and by the node (discovery, metrics
//! proxy, health: `crate::node::http`); nothing else touches tiny_http.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Method, Request, Response};

/// A response with a body in memory.
pub type Reply = Response<Cursor<Vec<u8>>>;

/// A running HTTP server; [`HttpServer::stop`] (or drop) ends its workers.
pub struct HttpServer {
    server: Arc<tiny_http::Server>,
    workers: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

impl HttpServer {
    /// Listens on `addr` and answers with `handle` on `workers` threads.
    pub fn start<H>(
        addr: &str,
        workers: usize,
        name: &str,
        handle: H,
    ) -> std::io::Result<HttpServer>
    where
        H: Fn(&Request) -> Reply + Send + Sync + 'static,
    {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        // Accepted sockets inherit TCP_NODELAY on Linux. tiny_http writes a
        // response in 1 KiB pieces; with Nagle's algorithm and the client's
        // delayed ACKs, a keep-alive scrape of a few KiB then stalls ~40 ms.
        set_nodelay(&listener)?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| std::io::Error::other(format!("cannot serve on {addr}: {e}")))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("not an IP listener"))?;
        let server = Arc::new(server);
        let handle = Arc::new(handle);
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let (server, handle) = (server.clone(), handle.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        for request in server.incoming_requests() {
                            let reply = handle(&request);
                            let _ = request.respond(reply);
                        }
                    })?,
            );
        }
        Ok(HttpServer {
            server,
            workers: threads,
            addr: bound,
        })
    }

    /// The bound address (the port is real even if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the workers.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        for _ in &self.workers {
            self.server.unblock();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn set_nodelay(listener: &std::net::TcpListener) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a valid socket with a pointer to a live c_int.
    let r = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A plain-text reply.
pub fn text(status: u16, body: impl Into<String>) -> Reply {
    let mut body: String = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    Response::from_data(body.into_bytes())
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

/// A reply with a body and content type.
pub fn body(status: u16, content_type: &str, data: Vec<u8>) -> Reply {
    Response::from_data(data)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
}

/// A header from known-good ASCII.
pub fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .unwrap_or_else(|_| Header::from_bytes(&b"X-Invalid"[..], &b"1"[..]).unwrap())
}

/// GET and HEAD are served; anything else gets 405 with an `Allow` header.
pub fn method_allowed(r: &Request) -> Result<(), Reply> {
    match r.method() {
        Method::Get | Method::Head => Ok(()),
        other => Err(text(405, format!("method {other} not allowed; use GET"))
            .with_header(header("Allow", "GET, HEAD"))),
    }
}

/// A request header's value.
pub fn request_header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
    r.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}
