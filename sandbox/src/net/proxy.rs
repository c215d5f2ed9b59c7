//! Network mode `allowlist`: an HTTP(S) proxy run by `pinfold exec` (the
//! parent, outside the container) for the job inside.
//!
//! The container keeps only loopback. Its child creates a listening TCP
//! socket on [`PROXY_ADDR`] inside the container's network namespace and
//! hands the fd to the parent over a unix socket pair (SCM_RIGHTS); a socket
//! stays in the namespace it was made in, so the parent accepts the job's
//! connections there and dials the destinations from the host's network.
//!
//! Per connection (one thread each; a few hundred at most):
//! * `CONNECT host:port` → a tunnel (TLS is not inspected: the name in the
//!   CONNECT line is what is checked);
//! * `GET http://host[:port]/path` (any method with an absolute `http://`
//!   URI) → the request is forwarded in origin form with `Connection: close`;
//! * anything else → 400; a destination refused by the allowlist → 403, and
//!   one warning line on pinfold's stderr naming host:port and the policy.
//!
//! Plain threads, not tokio: the sandbox crate has no async runtime and a
//! CI job opens few connections. Hand-written HTTP parsing: only the request
//! head of two request forms is read, which no lean crate does with a
//! blocking relay.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::allowlist::{Allowlist, AllowlistError};

/// Where the job finds the proxy, inside the container.
pub(crate) const PROXY_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 3128);

/// The proxy URL given to the job.
fn proxy_url() -> String {
    let ([a, b, c, d], port) = PROXY_ADDR;
    format!("http://{a}.{b}.{c}.{d}:{port}")
}

/// The environment an `allowlist` job starts with (its own entries win):
/// the proxy for HTTP and HTTPS, none for loopback.
pub(crate) fn job_env() -> Vec<(String, String)> {
    let url = proxy_url();
    let mut env: Vec<(String, String)> = ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"]
        .into_iter()
        .map(|k| (k.into(), url.clone()))
        .collect();
    for k in ["no_proxy", "NO_PROXY"] {
        env.push((k.into(), "localhost,127.0.0.1,::1".into()));
    }
    env
}

/// The longest request head read before answering 431.
const MAX_HEAD: usize = 16 * 1024;
/// Concurrent connections; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;
/// Time allowed for the request head and for each dial.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

struct Shared {
    allow: Allowlist,
    /// How refusals name the policy.
    policy: String,
    stopping: AtomicBool,
    active: AtomicUsize,
    /// The open sockets of each live connection (by id), to cut them at stop.
    streams: Mutex<std::collections::HashMap<u64, Vec<TcpStream>>>,
}

/// A running proxy; [`Proxy::stop`] ends it.
pub(crate) struct Proxy {
    listener: Arc<TcpListener>,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// Starts serving `listener` (already listening, in the container's netns).
pub(crate) fn start(listener: OwnedFd, allow: Allowlist, policy: String) -> std::io::Result<Proxy> {
    let listener = Arc::new(TcpListener::from(listener));
    let shared = Arc::new(Shared {
        allow,
        policy,
        stopping: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        streams: Mutex::new(Default::default()),
    });
    let (l, s) = (listener.clone(), shared.clone());
    let acceptor = std::thread::Builder::new()
        .name("proxy-accept".into())
        .spawn(move || accept_loop(&l, &s))?;
    Ok(Proxy {
        listener,
        shared,
        acceptor: Some(acceptor),
    })
}

impl Proxy {
    /// Closes the listener and every connection; returns once the accept
    /// thread is gone (connection threads end on their cut sockets).
    pub(crate) fn stop(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // shutdown(2) on a listening socket wakes a blocked accept(2) (EINVAL).
        // SAFETY: shutdown on an fd the TcpListener owns and keeps open.
        unsafe {
            libc::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(&*self.listener),
                libc::SHUT_RDWR,
            )
        };
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for s in lock(&self.shared.streams).drain().flat_map(|(_, v)| v) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for id in 0u64.. {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) if shared.stopping.load(Ordering::SeqCst) => return,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e) => {
                tracing::debug!("proxy accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if shared.active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = respond(&stream, 503, "too many proxy connections from this job");
            continue;
        }
        shared.active.fetch_add(1, Ordering::SeqCst);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("proxy-conn".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                serve(id, stream, &s);
                lock(&s.streams).remove(&id);
                s.active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Registers a socket of connection `id` for the cut at stop; false when
/// the proxy is stopping already.
fn register(shared: &Shared, id: u64, s: &TcpStream) -> bool {
    let mut streams = lock(&shared.streams);
    if shared.stopping.load(Ordering::SeqCst) {
        return false;
    }
    if let Ok(c) = s.try_clone() {
        streams.entry(id).or_default().push(c);
    }
    true
}

fn respond(mut s: &TcpStream, code: u16, message: &str) -> std::io::Result<()> {
    let reason = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = format!("pinfold proxy: {message}\n");
    write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    /// `host` as written (brackets kept for IPv6), and the port.
    host: String,
    port: u16,
    /// `None` for CONNECT; else the head to send upstream.
    forward: Option<Vec<u8>>,
}

/// Reads until the end of the head; returns (head, bytes read past it).
fn read_head(s: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), (u16, String)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let deadline = std::time::Instant::now() + HEAD_TIMEOUT;
    loop {
        // A client dripping bytes must not hold a thread past the deadline.
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return Err((408, "request head not sent in time".into()));
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err((431, format!("request head over {MAX_HEAD} bytes")));
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err((400, "connection closed before the request head".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err((408, "request head not sent in time".into()));
            }
            Err(e) => return Err((400, format!("reading the request: {e}"))),
        }
    }
}

fn split_authority(auth: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = auth.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (format!("[{inner}]"), port)
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (auth.to_owned(), default_port),
        }
    };
    if host.is_empty() || host.contains('@') || port == 0 {
        return None;
    }
    Some((host, port))
}

fn parse_request(head: &[u8]) -> Result<Request, (u16, String)> {
    let text = std::str::from_utf8(head).map_err(|_| (400, "request head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if v.starts_with("HTTP/1.") => (m, t, v),
        _ => return Err((400, format!("malformed request line {first:?}"))),
    };
    if method == "CONNECT" {
        let (host, port) = split_authority(target, 443)
            .filter(|_| target.contains(':'))
            .ok_or_else(|| (400, format!("CONNECT needs host:port, got {target:?}")))?;
        return Ok(Request {
            host,
            port,
            forward: None,
        });
    }
    let Some(rest) = target.strip_prefix("http://") else {
        return Err((
            400,
            format!(
                "{method} {target}: this proxy takes CONNECT host:port or an absolute http:// URI (use CONNECT for https)"
            ),
        ));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    let (host, port) =
        split_authority(authority, 80).ok_or_else(|| (400, format!("bad host in {target:?}")))?;
    let mut out = format!("{method} {path} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if name == "connection" || name == "keep-alive" || name.starts_with("proxy-") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    Ok(Request {
        host,
        port,
        forward: Some(out.into_bytes()),
    })
}

/// The request-head parser as the fuzz target `proxy_head` drives it: the
/// destination `(host, port)` and the head to send upstream (`None` for
/// CONNECT), or the status and message the proxy answers with.
#[doc(hidden)]
pub type ParsedHead = Result<(String, u16, Option<Vec<u8>>), (u16, String)>;

/// See [`ParsedHead`].
#[doc(hidden)]
pub fn parse_head(head: &[u8]) -> ParsedHead {
    parse_request(head).map(|r| (r.host, r.port, r.forward))
}

fn serve(id: u64, mut client: TcpStream, shared: &Shared) {
    if !register(shared, id, &client) {
        return;
    }
    let request = read_head(&mut client).and_then(|(head, rest)| Ok((parse_request(&head)?, rest)));
    let (req, rest) = match request {
        Ok(r) => r,
        Err((code, message)) => {
            let _ = respond(&client, code, &message);
            return;
        }
    };
    let addrs = match shared.allow.check(&req.host, req.port) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(
                "network allowlist: refused {}:{} ({}) under policy {}",
                req.host,
                req.port,
                reason(&e),
                shared.policy
            );
            let _ = respond(&client, 403, &e.to_string());
            return;
        }
    };
    let mut upstream = None;
    let mut last_err = String::new();
    for a in &addrs {
        match TcpStream::connect_timeout(a, DIAL_TIMEOUT) {
            Ok(s) => {
                upstream = Some(s);
                break;
            }
            Err(e) => last_err = format!("{a}: {e}"),
        }
    }
    let Some(mut upstream) = upstream else {
        let _ = respond(
            &client,
            502,
            &format!("{}:{}: cannot connect ({last_err})", req.host, req.port),
        );
        return;
    };
    if !register(shared, id, &upstream) {
        return;
    }
    tracing::debug!(host = %req.host, port = req.port, "proxy: allowed");
    let _ = client.set_read_timeout(None);
    let sent = match &req.forward {
        None => client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n"),
        Some(head) => upstream.write_all(head),
    };
    if sent.is_err() || (!rest.is_empty() && upstream.write_all(&rest).is_err()) {
        return;
    }
    relay(client, upstream);
}

/// Why, in a few words, for the one-line warning.
fn reason(e: &AllowlistError) -> &'static str {
    match e {
        AllowlistError::NotListed { .. } => "not in network.allow",
        AllowlistError::Unresolved { .. } => "name does not resolve",
        AllowlistError::RefusedAddress { .. } => {
            "the name resolves only to refused addresses (loopback, private, special-use, metadata)"
        }
        AllowlistError::BadEntry { .. } => "bad entry",
    }
}

/// Copies both ways until both directions end.
fn relay(client: TcpStream, upstream: TcpStream) {
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::Builder::new()
        .name("proxy-up".into())
        .stack_size(64 * 1024)
        .spawn(move || pipe(c2, u2));
    pipe(upstream, client);
    if let Ok(t) = up {
        let _ = t.join();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    if splice_all(&from, &to).is_err() {
        // No pipe to splice through (fd limit): copy through a buffer.
        let _ = std::io::copy(&mut from, &mut to);
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// Moves bytes from `from` to `to` through a pipe with splice(2), so they
/// never enter user space (std::io::copy between two sockets reads and
/// writes through an 8 KiB buffer: a quarter of the throughput, measured in
/// bench/network.sh). Err only when the pipe cannot be made; ends quietly
/// at EOF or on any socket error.
fn splice_all(from: &TcpStream, to: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::{AsFd, AsRawFd};
    let (pr, pw) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let splice = |src: i32, dst: i32, len: usize| {
        // SAFETY: splice between fds this function borrows or owns, with
        // null offsets (sockets and pipes have none).
        let n = unsafe {
            libc::splice(
                src,
                std::ptr::null_mut(),
                dst,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    };
    let (src, dst) = (from.as_fd().as_raw_fd(), to.as_fd().as_raw_fd());
    loop {
        let n = match splice(src, pw.as_raw_fd(), 1 << 20) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Ok(()),
        };
        let mut left = n;
        while left > 0 {
            match splice(pr.as_raw_fd(), dst, left) {
                Ok(0) => return Ok(()),
                Ok(m) => left -= m,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_and_absolute_uris() {
        let r = parse_request(b"CONNECT deb.debian.org:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.forward),
            ("deb.debian.org", 443, None)
        );
        let r = parse_request(b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("[2001:db8::1]", 8443));
        let r = parse_request(
            b"GET http://198.51.100.1:8080/marker.txt HTTP/1.1\r\nHost: 198.51.100.1:8080\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive\r\nUser-Agent: t\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.host.as_str(), r.port), ("198.51.100.1", 8080));
        assert_eq!(
            String::from_utf8(r.forward.unwrap()).unwrap(),
            "GET /marker.txt HTTP/1.1\r\nHost: 198.51.100.1:8080\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"
        );
        let r = parse_request(b"GET http://example.org HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("example.org", 80));
        assert!(
            String::from_utf8(r.forward.unwrap())
                .unwrap()
                .starts_with("GET / HTTP/1.0\r\n")
        );
    }

    #[test]
    fn bad_requests_are_400() {
        for head in [
            &b"GET /local HTTP/1.1\r\n\r\n"[..],
            b"GET https://example.org/ HTTP/1.1\r\n\r\n",
            b"CONNECT example.org HTTP/1.1\r\n\r\n",
            b"CONNECT example.org:0 HTTP/1.1\r\n\r\n",
            b"GET http://user@example.org/ HTTP/1.1\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            let e = parse_request(head).unwrap_err();
            assert_eq!(e.0, 400, "{}", String::from_utf8_lossy(head));
        }
    }
}
