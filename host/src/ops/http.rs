//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz` and `/status`, on a thread of its own
//! with a single-threaded tokio runtime, so that neither routing nor consuming ever waits on it.
//!
//! Anyone who can reach the pod can open connections to it, so no client may hold the probes
//! up or use up the process ([`HttpLimits`]): each connection serves one request (no
//! keep-alive, so a connection's life is one request's); its request headers must arrive
//! within the header timeout (hyper's `header_read_timeout`, counted from the accept, so a
//! header sent a byte at a time gains nothing) and be at most 16 KiB; the whole exchange
//! must end within the request timeout; no handler reads a request body. At most
//! `max_connections` are open at once. At that cap a new connection takes the place of the
//! one that has waited longest for its request headers, idle or trickling, which is closed:
//! a probe, whose request comes at once, gets in however many idle connections a client
//! holds, and those are the ones that go. Only when every open connection is in the middle of
//! a request is a new one closed at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, oneshot};

use super::OpsState;
use crate::lock;

/// What one client may take of the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// From accepting a connection to the end of its request headers.
    pub header_timeout: Duration,
    /// From accepting a connection to the last byte of its response.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// hyper's smallest read buffer, which bounds the request line and headers: 256 connections
/// hold at most a few MiB.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The running endpoint; stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `listen` (port 0 picks a free port) and serves until dropped.
    pub fn start(
        listen: SocketAddr,
        state: Arc<OpsState>,
        limits: HttpLimits,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            limits.max_connections > 0,
            "the HTTP endpoint needs room for a connection"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .context("starting the HTTP runtime")?;
        let listener = runtime
            .block_on(async { bind(listen) })
            .with_context(|| format!("listening for HTTP on {listen}"))?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/status", get(status))
            .with_state(state);
        let thread = std::thread::Builder::new()
            .name("fanout-http".into())
            .spawn(move || runtime.block_on(serve(listener, app, limits, stopped)))
            .context("starting the HTTP thread")?;
        tracing::info!(%addr, "HTTP endpoint listening (/metrics, /healthz, /readyz, /status)");
        Ok(Self {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connections the kernel completes before they are accepted. tokio's default (128, the
/// standard library's) overflows in a burst of connections, and the kernel then drops new ones'
/// SYNs, probes' among them, which retry only after a second.
const ACCEPT_BACKLOG: u32 = 4096;

fn bind(listen: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match listen {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// The connections still waiting for their request headers, oldest first, each with the way
/// to close it.
#[derive(Default)]
struct Waiting {
    next: u64,
    connections: BTreeMap<u64, oneshot::Sender<()>>,
}

/// Accepts until `stopped`; connections still open then are dropped with the runtime.
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: HttpLimits,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let waiting = Arc::new(Mutex::new(Waiting::default()));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(false)
        .max_buf_size(MAX_HEADER_BYTES);
    let mut accept_errors_logged = 0u32;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: the connection waits in the
                    // backlog, and accepting again at once would spin.
                    if accept_errors_logged < 10 {
                        accept_errors_logged += 1;
                        tracing::warn!("HTTP endpoint: accepting a connection: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopped => return,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let oldest = lock(&waiting).connections.pop_first();
                let Some((_, close)) = oldest else {
                    // Every connection is mid-request: this one is closed (dropped) at once.
                    continue;
                };
                let _ = close.send(());
                // The closed connection's task gives its slot back when it next runs, which
                // is before this one-thread runtime comes back here.
                match tokio::time::timeout(Duration::from_secs(1), slots.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(slot)) => slot,
                    _ => continue,
                }
            }
        };
        let (close, closed) = oneshot::channel::<()>();
        let id = {
            let mut waiting = lock(&waiting);
            let id = waiting.next;
            waiting.next += 1;
            waiting.connections.insert(id, close);
            id
        };
        let router = TowerToHyperService::new(app.clone());
        let arrived = waiting.clone();
        let service = hyper::service::service_fn(move |request| {
            // The headers are in: no longer a connection that may be closed to make room.
            lock(&arrived).connections.remove(&id);
            hyper::service::Service::call(&router, request)
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let request_timeout = limits.request_timeout;
        let waiting = waiting.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let made_room = async {
                // An error means the request arrived (the sender was removed): never close.
                if closed.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                // hyper ends the connection itself on a header timeout or a bad request.
                _ = tokio::time::timeout(request_timeout, connection) => {}
                () = made_room => {}
            }
            lock(&waiting).connections.remove(&id);
        });
    }
}

async fn metrics(State(state): State<Arc<OpsState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        super::metrics::render(&state),
    )
        .into_response()
}

async fn healthz(State(state): State<Arc<OpsState>>) -> Response {
    match state.health() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(state): State<Arc<OpsState>>) -> Response {
    match state.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n- {}\n", reasons.join("\n- ")),
        )
            .into_response(),
    }
}

/// `/status`: the state anyone may see; with `Authorization: Bearer <token>` (the
/// configured status token), the effective config as well. A wrong token is refused, so
/// that a mistake is not mistaken for a service without a config.
async fn status(State(state): State<Arc<OpsState>>, headers: HeaderMap) -> Response {
    let Some(presented) = headers.get(header::AUTHORIZATION) else {
        return axum::Json(state.status(false)).into_response();
    };
    let token = presented
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match (token, state.status_token()) {
        (Some(token), Some(expected)) if expected.matches(token) => {
            axum::Json(state.status(true)).into_response()
        }
        (_, None) => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no status token is configured (http.status_token_file), so /status shows no config\n",
        )
            .into_response(),
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "wrong status token\n",
        )
            .into_response(),
    }
}
