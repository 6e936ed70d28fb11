//! The HTTP server loop: hyper driven directly, so that a slow or hostile client cannot hold
//! the server.
//!
//! - **Header timeout.** A connection must send a request's headers within
//!   [`Limits::header_timeout`]. The clock also runs while a kept-alive connection waits
//!   for its next request, so it is the idle keep-alive timeout as well.
//! - **Idle timeout.** A connection on which nothing moves (a body trickled, a response
//!   not read) for [`Limits::idle_timeout`] is closed. The server's own work is not the
//!   client's idleness: from a request's whole body being read until its answer is ready,
//!   the clock stops (the request timeout bounds that time instead).
//! - **Connection cap.** Past [`Limits::max_connections`] open connections, a new one is
//!   answered 503 at once and closed; it is never left waiting in the accept queue. The
//!   process's open-file limit is raised to its hard limit, and the cap kept below it.
//! - **One error format.** hyper answers requests it cannot parse (a malformed request line,
//!   a URI over 64 KiB, headers over the limit) itself, with an empty body. Those answers
//!   are rewritten on the way out into the error table's body.
//!
//! Every connection carries its peer address (`ConnectInfo<SocketAddr>`) into its requests.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::kernel::error::ApiError;

/// What a connection may take.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time to send a request's headers (and to start the next one on a kept-alive
    /// connection).
    pub header_timeout: Duration,
    /// Time a connection may go without a byte read or written.
    pub idle_timeout: Duration,
    /// Open connections at most; more are answered 503.
    pub max_connections: usize,
    /// A request's head (request line and headers) at most, in bytes; more is a 431.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// hyper's own limit on a request URI (it answers 414 past it).
pub const MAX_URI_BYTES: usize = 65_534;

/// File descriptors kept for everything but client connections (the database, files, the
/// outbound webhook and SSO clients).
const RESERVED_FDS: u64 = 256;

/// Connections being turned away at once; past it, a connection is closed without an answer.
const TURNING_AWAY: usize = 512;

/// Raises the open-file limit to the hard limit and fits the connection cap under it.
/// Returns the cap in force.
pub fn fit_connection_cap(wanted: usize) -> usize {
    let soft = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let room = usize::try_from(soft.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX);
    let cap = wanted.clamp(1, room);
    if cap < wanted {
        tracing::warn!(
            wanted,
            cap,
            open_file_limit = soft,
            "the connection cap is lowered to fit the open-file limit (raise it with ulimit -n)"
        );
    }
    cap
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the connections finish
/// their requests (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let turning_away = Arc::new(Semaphore::new(TURNING_AWAY));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Room for a URI at hyper's limit (414) besides the headers, which are measured
        // against their own limit below (431).
        .max_buf_size(limits.max_header_bytes.max(8192) + MAX_URI_BYTES + 1024);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let open = metrics::gauge!("seatkeeper_http_connections_open");
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("seatkeeper_http_connections_refused_total").increment(1);
            note(
                &REFUSED,
                "connections answered 503: the connection cap is reached",
            );
            if let Ok(slot) = turning_away.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    turn_away(stream).await;
                    drop(slot);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = Guarded::new(stream, limits.max_header_bytes);
        let activity = io.activity.clone();
        let (app, max_header_bytes) = (router.clone(), limits.max_header_bytes);
        let requests = activity.clone();
        let service = TowerToHyperService::new(tower::service_fn(
            move |mut req: axum::http::Request<Incoming>| {
                let (app, activity) = (app.clone(), requests.clone());
                async move {
                    if header_bytes(&req) > max_header_bytes {
                        return Ok(ApiError::HeadersTooLarge(format!(
                            "the request's headers are larger than {max_header_bytes} bytes"
                        ))
                        .into_response());
                    }
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let work = Arc::new(Work::new(activity.clone()));
                    if req.body().is_end_stream() {
                        work.begin();
                    }
                    let req = req.map(|inner| Tracked {
                        inner,
                        work: work.clone(),
                    });
                    let mut resp = app.oneshot(req).await?;
                    work.end();
                    // A body left unread cannot be skipped to reach the next request: hyper
                    // closes the connection, and the client is told so rather than finding
                    // out on its next request.
                    if !work.body_read() {
                        resp.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            },
        ));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let idle = limits.idle_timeout;
        let open = open.clone();
        open.increment(1.0);
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(io), service);
            let conn = watcher.watch(conn.into_owned());
            tokio::select! {
                served = conn => {
                    if let Err(e) = served
                        && e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout)
                    {
                        metrics::counter!("seatkeeper_http_connections_timed_out_total", "phase" => "headers").increment(1);
                        note(&HEADER_TIMEOUTS, "connections closed: headers not sent within the header timeout");
                    }
                }
                () = activity.stalled(idle) => {
                    metrics::counter!("seatkeeper_http_connections_timed_out_total", "phase" => "idle").increment(1);
                    note(&IDLE_TIMEOUTS, "connections closed: nothing sent or read within the idle timeout");
                }
            }
            open.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One request's part in its connection's idle clock: once its body is read to the end
/// the server is working, not the client idling, until the answer is ready (or the request
/// is dropped).
struct Work {
    activity: Activity,
    body_read: AtomicBool,
    working: AtomicBool,
}

impl Work {
    fn new(activity: Activity) -> Work {
        Work {
            activity,
            body_read: AtomicBool::new(false),
            working: AtomicBool::new(false),
        }
    }

    /// The body is read: the server's turn.
    fn begin(&self) {
        self.body_read.store(true, Ordering::Relaxed);
        if !self.working.swap(true, Ordering::Relaxed) {
            self.activity.working.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The answer is ready (or the request gone): the client's turn again, from now.
    fn end(&self) {
        if self.working.swap(false, Ordering::Relaxed) {
            self.activity.touch();
            self.activity.working.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn body_read(&self) -> bool {
        self.body_read.load(Ordering::Relaxed)
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        self.end();
    }
}

/// A request body that tells its [`Work`] when it has been read to its end.
struct Tracked {
    inner: Incoming,
    work: Arc<Work>,
}

impl hyper::body::Body for Tracked {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.work.begin();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The size of a request's headers as sent (`name: value\r\n` each).
fn header_bytes<B>(req: &axum::http::Request<B>) -> usize {
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

/// An accept that failed: per-connection errors are the client's; running out of file
/// descriptors is waited out briefly rather than spun on.
async fn accept_failed(e: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    note(
        &ACCEPT_ERRORS,
        "accepting a connection failed (out of file descriptors?)",
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Answers a connection over the cap with a 503 and closes it.
async fn turn_away(mut stream: TcpStream) {
    let answer = bare_answer(&ApiError::Unavailable(
        "the server is at its connection limit; retry shortly".into(),
    ));
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        // Read what the client sent, briefly: closing with unread data would reset the
        // connection and lose the answer.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// A complete HTTP/1.1 answer carrying an error of the table, closing the connection.
fn bare_answer(e: &ApiError) -> Vec<u8> {
    let status = e.status();
    let body = serde_json::to_vec(&e.body()).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/scim+json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    if matches!(e, ApiError::Unavailable(_)) {
        out.extend_from_slice(b"retry-after: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

/// The answer hyper wrote itself for a request it could not parse (a head with an empty
/// body and one of these statuses), as an error of the table.
fn rewrite(buf: &[u8], max_header_bytes: usize) -> Option<Vec<u8>> {
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    if !buf.ends_with(b"\r\n\r\n")
        || buf.windows(4).position(|w| w == b"\r\n\r\n") != Some(buf.len() - 4)
        || !buf
            .windows(b"\r\ncontent-length: 0\r\n".len())
            .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"))
    {
        return None;
    }
    let e = match rest.get(..4)? {
        b"400 " => ApiError::Scim(scim::Error::InvalidSyntax(
            "the request is not well-formed HTTP".into(),
        )),
        b"414 " => ApiError::UriTooLong(format!(
            "the request URI is longer than {MAX_URI_BYTES} bytes"
        )),
        b"431 " => ApiError::HeadersTooLarge(format!(
            "the request's headers are larger than {max_header_bytes} bytes"
        )),
        _ => return None,
    };
    Some(bare_answer(&e))
}

/// Milliseconds since the process's first use of this clock: a connection's last activity
/// in one atomic word.
fn millis() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// When a connection last moved a byte, and how many of its requests the server is working
/// on (with their bodies read).
#[derive(Clone)]
struct Activity {
    last: Arc<AtomicU64>,
    working: Arc<AtomicUsize>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            last: Arc::new(AtomicU64::new(millis())),
            working: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn touch(&self) {
        self.last.store(millis(), Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `limit` while the server was not working on one
    /// of the connection's requests.
    async fn stalled(&self, limit: Duration) {
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        loop {
            let quiet = if self.working.load(Ordering::Relaxed) > 0 {
                0
            } else {
                millis().saturating_sub(self.last.load(Ordering::Relaxed))
            };
            if quiet >= limit_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(limit_ms - quiet)).await;
        }
    }
}

/// A client connection that records its activity and rewrites hyper's bare error answers.
struct Guarded {
    inner: TcpStream,
    activity: Activity,
    max_header_bytes: usize,
    /// A rewritten answer not yet fully written, and how much of it is.
    pending: Option<(Vec<u8>, usize)>,
}

impl Guarded {
    fn new(inner: TcpStream, max_header_bytes: usize) -> Guarded {
        let activity = Activity::new();
        Guarded {
            inner,
            activity,
            max_header_bytes,
            pending: None,
        }
    }

    /// Writes what is pending; ready once nothing is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((buf, done)) = &mut self.pending {
            if *done == buf.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
            self.activity.touch();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(answer) = rewrite(buf, self.max_header_bytes) {
            self.pending = Some((answer, 0));
            // The original bytes are taken whole; the answer goes out in their place.
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        if n > 0 {
            self.activity.touch();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts of connections closed or refused since they were last logged.
static HEADER_TIMEOUTS: Noted = Noted::new();
static IDLE_TIMEOUTS: Noted = Noted::new();
static REFUSED: Noted = Noted::new();
static ACCEPT_ERRORS: Noted = Noted::new();

/// A count logged at most every ten seconds, so a flood is reported without flooding the log.
struct Noted {
    count: AtomicU64,
    logged_at: AtomicU64,
}

impl Noted {
    const fn new() -> Noted {
        Noted {
            count: AtomicU64::new(0),
            logged_at: AtomicU64::new(0),
        }
    }
}

fn note(n: &Noted, what: &'static str) {
    n.count.fetch_add(1, Ordering::Relaxed);
    let now = millis();
    let last = n.logged_at.load(Ordering::Relaxed);
    if (last == 0 || now.saturating_sub(last) >= 10_000)
        && n.logged_at
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let count = n.count.swap(0, Ordering::Relaxed);
        tracing::warn!(count, "{what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bare_answers_are_rewritten_and_ours_are_not() {
        let bare = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Thu, 26 Nov 2026 10:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(bare, 65_536).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");
        let body: serde_json::Value =
            serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["status"], "414");
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(rewrite(bare, 1000).is_some());
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let out = String::from_utf8(rewrite(bare, 1000).unwrap()).unwrap();
        assert!(out.contains("invalidSyntax"), "{out}");
        // Our own answers (with a body, or another status) pass untouched.
        for ours in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\n\r\n{\"a\":\"b\"}"[..],
            b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            assert!(rewrite(ours, 1000).is_none());
        }
    }

    /// The server working on a request longer than the idle timeout (a plan change for a
    /// million users) is not the client idling: the answer arrives on the same connection.
    /// A body that stops arriving is still cut.
    #[tokio::test]
    async fn work_longer_than_the_idle_timeout_is_answered() {
        use axum::routing::post;
        let router = Router::new().route(
            "/slow",
            post(|body: String| async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                body
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            idle_timeout: Duration::from_secs(1),
            ..Limits::default()
        };
        tokio::spawn(serve(listener, router, limits, std::future::pending()));
        let mut s = TcpStream::connect(addr).await.unwrap();
        for _ in 0..2 {
            s.write_all(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
                .await
                .unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while !got.ends_with(b"hello") {
                let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
                    .await
                    .expect("an answer")
                    .unwrap();
                assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&b[..n]);
            }
            assert!(
                got.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&got)
            );
        }
        // The client's turn: a body that stops half way is cut after the idle timeout.
        s.write_all(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe")
            .await
            .unwrap();
        let mut b = [0u8; 1024];
        let t = Instant::now();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "{}", String::from_utf8_lossy(&b[..n]));
        assert!(
            t.elapsed() < Duration::from_millis(1900),
            "{:?}",
            t.elapsed()
        );
    }
}
