//! The HTTP listener: the router served over HTTP/1.1 with the limits
//! `axum::serve` does not have. A request's headers must arrive within the
//! header timeout (counted from the connection's start or the end of the
//! previous response, so it also closes idle keep-alive connections), its
//! body within the body timeout; connections are capped in total and per
//! client address, and at the total cap the connection idle longest makes
//! room for the new one, so a flood of idle or slow-header connections
//! cannot lock out `/healthz` or anyone else. Only a listener full of
//! requests in progress answers a new connection `503`.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use posthorn_smtp::listen::{
    AcceptBackoff, BusyGuard, ConnectionLimiter, ConnectionLimits, ListenerStats, Refusal,
};
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

/// The HTTP listener's limits.
#[derive(Clone)]
pub struct HttpLimits {
    pub connections: ConnectionLimits,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Addresses counted only towards the total (trusted reverse proxies).
    pub exempt: Option<Arc<dyn Fn(IpAddr) -> bool + Send + Sync>>,
}

/// What a connection over the limits is told before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain\r\n\
content-length: 21\r\n\
retry-after: 1\r\n\
connection: close\r\n\r\n\
too many connections\n";

/// Serves `router` on `listener` until `shutdown` resolves, then lets the
/// requests in progress finish (as `axum::serve`'s graceful shutdown did).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    stats: Arc<ListenerStats>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut limiter =
        ConnectionLimiter::new("http", limits.connections, stats.clone()).evicting_idle();
    if let Some(exempt) = limits.exempt.clone() {
        limiter = limiter.with_exempt(exempt);
    }
    let limiter = Arc::new(limiter);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Each connection task holds a sender; `recv` answers `None` once all
    // of them have ended.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = posthorn_smtp::listen::accept(&listener, &mut backoff, "http", &stats) => accepted,
        };
        let permit = match limiter.admit(peer.ip()) {
            Ok(permit) => Arc::new(permit),
            Err(Refusal::Total | Refusal::PerIp) => {
                // A new socket's send buffer is empty: this does not block.
                let _ = tcp.try_write(REFUSED);
                continue;
            }
        };
        // Whether a request body was left unread (refused before its end,
        // as a too-large one is): then the connection lingers at its close.
        let body_unread = Arc::new(AtomicBool::new(false));
        let service = {
            let (router, permit) = (router.clone(), permit.clone());
            let body_unread = body_unread.clone();
            let body_timeout = limits.body_timeout;
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                // Busy from the request's head until its response has been
                // sent (the guard travels into the response body).
                let guard = permit.busy();
                let mut request = request.map(|body| {
                    // Most requests (tracker hits, GETs) have no body: no
                    // timer for them.
                    if body.is_end_stream() {
                        axum::body::Body::new(body)
                    } else {
                        body_unread.store(true, Ordering::Relaxed);
                        axum::body::Body::new(DeadlineBody::new(
                            body,
                            body_timeout,
                            body_unread.clone(),
                        ))
                    }
                });
                request.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                // Boxed: `poll_without_shutdown` needs an `Unpin` future.
                Box::pin(async move {
                    let response = router.call(request).await?;
                    Ok::<_, Infallible>(response.map(|body| BusyBody {
                        inner: body,
                        _guard: guard,
                    }))
                })
            })
        };
        let mut connection = builder.serve_connection(TokioIo::new(tcp), service);
        let (mut stop, done) = (stop_rx.clone(), done_tx.clone());
        tokio::spawn(async move {
            let mut closing = false;
            let result = loop {
                tokio::select! {
                    result = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => {
                        break result;
                    }
                    // Made room for a newer connection, or shutting down:
                    // an idle connection closes at once, a busy one after
                    // its response.
                    _ = permit.evicted(), if !closing => {
                        Pin::new(&mut connection).graceful_shutdown();
                        closing = true;
                    }
                    _ = stop.wait_for(|stop| *stop), if !closing => {
                        Pin::new(&mut connection).graceful_shutdown();
                        closing = true;
                    }
                }
            };
            match result {
                Ok(()) => {
                    let tcp = connection.into_parts().io.into_inner();
                    close(tcp, body_unread.load(Ordering::Relaxed)).await;
                }
                Err(e) => tracing::debug!(%peer, error = %e, "HTTP connection ended"),
            }
            drop(permit);
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    let _ = done_rx.recv().await;
    Ok(())
}

/// How long a connection that answered before reading its request body
/// keeps reading (and discarding) what the client still sends.
const LINGER: Duration = Duration::from_secs(5);

/// Closes a connection whose last response has been sent. When a request
/// body was left unread (refused early: too large, unauthorised), closing
/// at once would make the kernel answer the client's remaining bytes with
/// a reset, which can destroy the response before the client reads it.
/// So the connection says it is done sending and reads what is still
/// coming, for a short while, as nginx's lingering close does.
async fn close(mut tcp: TcpStream, body_unread: bool) {
    if !body_unread {
        return;
    }
    if tcp.shutdown().await.is_err() {
        return;
    }
    let mut discard = [0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = tcp.read(&mut discard).await {}
    })
    .await;
}

/// The request body must arrive in full before a deadline: a client that
/// trickles its upload (slow loris) is cut off, not kept for ever.
/// It also notes on its connection when it has been read to its end.
struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    unread: Arc<AtomicBool>,
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, timeout: Duration, unread: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            unread,
        }
    }
}

/// The request body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            if frame.is_none() {
                self.unread.store(false, Ordering::Relaxed);
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.unread.store(false, Ordering::Relaxed);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its connection marked busy until it has been
/// sent (or dropped).
struct BusyBody {
    inner: axum::body::Body,
    _guard: BusyGuard,
}

impl HttpBody for BusyBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    //! Real sockets with short timeouts; each wait has a generous deadline
    //! and nothing asserts how long anything took.

    use super::*;
    use axum::routing::{get as route_get, post};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Long enough to wait for anything the server should do by itself.
    const DEADLINE: Duration = Duration::from_secs(20);
    const SHORT: Duration = Duration::from_millis(300);
    const LONG: Duration = Duration::from_secs(600);

    /// A server whose timeouts are `timeouts` (short ones to see them act,
    /// long ones where they must not interfere).
    async fn start(max_connections: usize, max_per_ip: usize, timeouts: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route("/healthz", route_get(|| async { "ok" }))
            .route("/echo", post(|body: String| async move { body }))
            .route(
                "/small",
                post(|body: axum::body::Body| async move {
                    match axum::body::to_bytes(body, 1024).await {
                        Ok(_) => axum::http::StatusCode::OK,
                        Err(_) => axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    }
                }),
            )
            .route(
                "/peer",
                route_get(
                    |ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() },
                ),
            );
        let limits = HttpLimits {
            connections: ConnectionLimits {
                max_connections,
                max_per_ip,
            },
            header_timeout: timeouts,
            body_timeout: timeouts,
            exempt: None,
        };
        tokio::spawn(serve(
            listener,
            router,
            limits,
            Arc::default(),
            std::future::pending(),
        ));
        addr
    }

    /// Everything the server sends until it closes (or the deadline).
    async fn read_all(tcp: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        read_all(&mut tcp).await
    }

    /// True when the server closed `tcp` before the deadline.
    async fn closed_by_server(tcp: &mut TcpStream) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(DEADLINE, tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    #[tokio::test]
    async fn requests_are_served_with_the_clients_address() {
        let addr = start(10, 10, SHORT).await;
        let answer = get(addr, "/peer").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("127.0.0.1:"), "{answer}");
    }

    #[tokio::test]
    async fn idle_and_slow_header_connections_are_closed() {
        let addr = start(10, 10, SHORT).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost:")
            .await
            .unwrap();
        assert!(closed_by_server(&mut idle).await, "idle connection kept");
        assert!(closed_by_server(&mut slow).await, "slow headers kept");
    }

    #[tokio::test]
    async fn a_body_that_trickles_is_cut_off() {
        let addr = start(10, 10, SHORT).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        // The rest never comes: the server answers an error and closes.
        let answer = read_all(&mut tcp).await;
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer:?}");
        // A body sent at once is echoed.
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            .await
            .unwrap();
        let answer = read_all(&mut tcp).await;
        assert!(answer.ends_with("hello"), "{answer:?}");
    }

    #[tokio::test]
    async fn a_body_refused_before_its_end_still_gets_its_answer() {
        let addr = start(10, 10, LONG).await;
        // Far more than the socket buffers hold: the route refuses it after
        // its first kilobyte, while the client is still sending.
        let body = vec![b'x'; 8 * 1024 * 1024];
        for _ in 0..3 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            // The whole body can be written: the server reads and discards
            // it rather than resetting the connection...
            tcp.write_all(&body).await.expect("the body is taken");
            // ...and the answer is there to read.
            let answer = read_all(&mut tcp).await;
            assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
        }
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let addr = start(2, 10, LONG).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        // Full of idle connections: a request still gets through...
        let answer = get(addr, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // ...and the oldest idle connection is the one closed for it.
        assert!(closed_by_server(&mut first).await, "the oldest idle went");
        second
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_all(&mut second).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn over_the_per_address_cap_a_connection_is_told_503() {
        let addr = start(10, 2, LONG).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let refused = get(addr, "/healthz").await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.ends_with("too many connections\n"), "{refused}");
    }
}
