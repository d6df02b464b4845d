//! The HTTP port's own accept loop, so that a client cannot hold it:
//!
//! - at most `max_connections` open connections (more wait in the kernel's
//!   backlog);
//! - a client gets `header_read_timeout` for a TLS handshake and for each
//!   request's headers (hyper closes a slow-header connection);
//! - a request's body is read before it takes a slot, within
//!   `header_read_timeout` (408 after): a client sending it a byte a second
//!   holds its own connection, not one of the slots every request waits
//!   for;
//! - each request gets `request_timeout` (408 after) and waits for one of
//!   `max_concurrent_requests` slots; `/healthz` and `/readyz` take none (a
//!   busy port is not a dead one);
//! - a body over `max_body_bytes` is refused (413).
//!
//! Every answer, refusals included, carries the security headers.
//!
//! Each connection's peer address goes into its requests ([`Peer`]) for the
//! proxy check and the audit log. SIGHUP rereads the TLS certificate and
//! the users file. Connections are tracked tasks; on stop the server stops
//! accepting, lets each connection finish its request, and waits for them
//! for at most [`DRAIN`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api::ApiError;
use super::auth::{Auth, Peer};
use super::config::HttpConfig;
use super::tls::Tls;

/// Longest wait for open connections after a stop.
pub const DRAIN: Duration = Duration::from_secs(5);

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The limits every request goes through.
#[derive(Debug, Clone)]
struct Limits {
    request_timeout: Duration,
    body_timeout: Duration,
    slots: Arc<Semaphore>,
    max_body_bytes: usize,
}

/// Adds the request limits and security headers to `app`.
pub fn harden(app: Router, config: &HttpConfig) -> Router {
    let limits = Limits {
        request_timeout: config.request_timeout,
        body_timeout: config.header_read_timeout,
        slots: Arc::new(Semaphore::new(config.max_concurrent_requests)),
        max_body_bytes: config.max_body_bytes,
    };
    app.layer(axum::middleware::from_fn_with_state(limits, limit))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
}

async fn limit(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let mut response = limited(&limits, request, next).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The request within the limits of the module docs.
async fn limited(limits: &Limits, request: Request, next: Next) -> Response {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body too large (over http.max_body_bytes, {} bytes)",
                limits.max_body_bytes
            ),
        )
        .into_response()
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, limits.max_body_bytes);
    let body = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(body)) => body,
        // Over the limit, or cut off (the client is gone then).
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            let message = "request body not sent within http.header_read_timeout";
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, message).into_response();
        }
    };
    let request = Request::from_parts(parts, axum::body::Body::from(body));
    let probe = matches!(request.uri().path(), "/healthz" | "/readyz");
    let work = async {
        let _slot = match probe {
            true => None,
            false => Some(limits.slots.acquire().await),
        };
        next.run(request).await
    };
    match tokio::time::timeout(limits.request_timeout, work).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "request took too long").into_response()
        }
    }
}

/// Serves `app` on `listener` until `stop`; see the module docs.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: HttpConfig,
    auth: Arc<Auth>,
    tls: Option<Arc<Tls>>,
    stop: CancellationToken,
) -> io::Result<()> {
    let connections = TaskTracker::new();
    let open = Arc::new(Semaphore::new(config.max_connections));
    let mut hangup = if tls.is_some() || auth.has_users_file() {
        Some(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        )?)
    } else {
        None
    };
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = open.clone().acquire_owned() => permit.expect("never closed"),
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            _ = async { hangup.as_mut().expect("guarded").recv().await }, if hangup.is_some() => {
                reload(&auth, tls.as_deref());
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, a reset before accept: wait, go on.
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.as_ref().map(|t| t.acceptor());
        let stop = stop.clone();
        let header_timeout = config.header_read_timeout;
        connections.spawn(async move {
            let _permit = permit;
            let io: Box<dyn Io> = match tls {
                None => Box::new(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => Box::new(tls),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            let service =
                hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(Peer(peer));
                    let mut app = app.clone();
                    async move {
                        tower_service::Service::call(&mut app, request.map(axum::body::Body::new))
                            .await
                    }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "http connection ended");
                    }
                }
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, connection).await;
                }
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(DRAIN, connections.wait()).await;
    Ok(())
}

/// SIGHUP: the certificate and the users, each kept on error.
fn reload(auth: &Auth, tls: Option<&Tls>) {
    if let Some(tls) = tls {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded, the old one stays")
            }
        }
    }
    if auth.has_users_file() {
        match auth.reload_users() {
            Ok(n) => tracing::info!(users = n, "SIGHUP: users file reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: users file not reloaded, the old users stay")
            }
        }
    }
}
