//! The HTTP front end's connection loop: HTTP/1.1 on hyper (with upgrades,
//! for the console's WebSocket), bounded against slow and numerous
//! clients, none of whom needs credentials to connect:
//!
//! - a request's headers must arrive within the header timeout, which also
//!   closes a keep-alive connection idle that long (hyper starts the timer
//!   whenever it waits for a request);
//! - a request's body must arrive within the body timeout (408);
//! - past the connection cap a new connection is answered 503, with a
//!   message that names the cap, and closed;
//! - on shutdown, connections finish their requests for a grace period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// How the HTTP front end bounds its clients (`fastvmd serve` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to send a request's headers; also the keep-alive idle limit.
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
    /// Connections open at once (WebSocket consoles included).
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

/// Refusals being written at once; past it a connection is just closed.
const MAX_REFUSALS: usize = 64;
/// Time a refusal may take to write.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Time connections get to finish once the daemon stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How often the connection count is looked at for [`give_back_memory`].
const TRIM_INTERVAL: Duration = Duration::from_secs(5);
/// A burst of at least this many connections is worth giving memory back for.
const TRIM_BURST: usize = 256;

/// Once a burst of connections (a flood of slow clients, say) has ended,
/// gives the memory its buffers took back to the system: the allocator
/// keeps freed memory for reuse otherwise, and the daemon would stay at
/// its peak.
async fn give_back_memory(connections: Arc<Semaphore>, max: usize) {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    let mut peak = 0;
    loop {
        tick.tick().await;
        let open = max.saturating_sub(connections.available_permits());
        peak = peak.max(open);
        if peak >= TRIM_BURST && open <= peak / 4 {
            // SAFETY: malloc_trim only returns free heap memory to the
            // system; no pointer is passed.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
            peak = open;
        }
    }
}

/// A connection's place under the connection cap, in each of its requests'
/// extensions: a handler that upgrades the connection keeps it for as long
/// as the upgraded stream lives.
#[derive(Debug, Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

/// Serves `app` on `listener` within `limits` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let trimmer = tokio::spawn(give_back_memory(
        connections.clone(),
        limits.max_connections,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("HTTP accept: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                let cap = limits.max_connections;
                tokio::spawn(async move {
                    refuse(stream, cap).await;
                    drop(permit);
                });
            }
            continue;
        };
        // The connection's place under the cap stays taken while it
        // lives, and while a WebSocket it was upgraded to lives.
        let slot = ConnectionSlot(Arc::new(permit));
        let service = TowerToHyperService::new(app.clone().map_request({
            let slot = slot.clone();
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(slot.clone());
                request
            }
        }));
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let stopping = tokio::select! {
                _ = conn.as_mut() => false,
                stopped = stop.wait_for(|stop| *stop) => stopped.is_ok(),
            };
            if stopping {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            drop(slot);
        });
    }
    trimmer.abort();
    let _ = stop_tx.send(true);
    // Every permit back means every connection has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.acquire_many(all)).await;
}

/// Answers a connection past the cap and closes it.
async fn refuse(mut stream: TcpStream, cap: usize) {
    let body = format!(
        "{{\"error\":\"the daemon serves {cap} connections at once (fastvmd serve \
         --max-connections); try again\"}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
