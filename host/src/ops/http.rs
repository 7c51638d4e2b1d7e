//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz` and `/status`, on a thread of its own
//! with a single-threaded tokio runtime, so that neither routing nor consuming ever waits on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::OpsState;

/// The running endpoint; stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `listen` (port 0 picks a free port) and serves until dropped.
    pub fn start(listen: SocketAddr, state: Arc<OpsState>) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("starting the HTTP runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .with_context(|| format!("listening for HTTP on {listen}"))?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/status", get(status))
            .with_state(state);
        let thread = std::thread::Builder::new()
            .name("fanout-http".into())
            .spawn(move || {
                let served = runtime.block_on(
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .into_future(),
                );
                if let Err(e) = served {
                    tracing::error!("the HTTP endpoint stopped: {e}");
                }
            })
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

async fn status(State(state): State<Arc<OpsState>>) -> Response {
    axum::Json(state.status()).into_response()
}
