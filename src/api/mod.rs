//! The HTTP layer: the Docker Volume Plugin API (v1) and Berth's own
//! `/Berth.*` calls, served over UNIX sockets with hyper. Pure
//! translation: decode, call the service, encode. The one place errors
//! become HTTP responses is [`response`].

pub mod docker;
pub mod failures;
pub mod metrics;
mod precheck;
pub mod response;
mod route;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::service::VolumeService;
use crate::volume::Scope;

/// Largest request body accepted (Docker's are a few hundred bytes).
pub const MAX_BODY: usize = 1 << 20;

/// Time a client gets to send its request headers (slowloris guard).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client gets to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request handler can see.
#[derive(Debug)]
pub struct Registry {
    /// Services by name.
    pub services: BTreeMap<String, Arc<VolumeService>>,
    /// Socket path of each service (for status).
    pub sockets: BTreeMap<String, String>,
    /// When the daemon started.
    pub started: Instant,
    /// Request counters and latencies (`/Berth.Metrics`).
    pub metrics: metrics::Metrics,
    /// Becomes `true` once every service has loaded and reconciled its
    /// state (sent by the daemon; dropped: loading failed).
    pub ready: tokio::sync::watch::Receiver<bool>,
}

impl Registry {
    /// Every service has loaded and reconciled its state.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until [`Self::is_ready`]; `false` when loading failed.
    pub async fn wait_ready(&self) -> bool {
        self.ready.clone().wait_for(|r| *r).await.is_ok()
    }
}

/// One socket and the service it serves.
#[derive(Debug)]
pub struct Endpoint {
    /// The listening socket.
    pub listener: UnixListener,
    /// The service's name.
    pub service: String,
    /// Its scope (known from the config before its state is loaded).
    pub scope: Scope,
}

/// Becomes `Some` once every service is set up (its state may still be
/// loading: [`Registry::ready`]).
pub type Gate = tokio::sync::watch::Receiver<Option<Arc<Registry>>>;

/// Serves `endpoints` until `shutdown` resolves, then lets in-flight
/// requests finish (at most 10 s).
///
/// Serving starts before the services have loaded their state: the calls
/// that don't depend on it (`Plugin.Activate`, `Capabilities`) are
/// answered at once, so a socket-activated start answers dockerd's first
/// call in milliseconds even with many volumes; `VolumeDriver.Get` is
/// answered from the volume's own record while the state loads; every
/// other call waits until the state is loaded ([`Registry::ready`]).
pub async fn serve(
    endpoints: Vec<Endpoint>,
    gate: Gate,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut accept_tasks = Vec::new();
    for Endpoint {
        listener,
        service,
        scope,
    } in endpoints
    {
        let mut stop = stop_tx.subscribe();
        let gate = gate.clone();
        let service = Arc::new(service);
        // Per socket: clients stuck on one service never use up the
        // connections another service needs.
        let limit = Arc::new(Semaphore::new(max_connections));
        let graceful = graceful.clone();
        accept_tasks.push(tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    _ = stop.recv() => break,
                    p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                };
                let stream = tokio::select! {
                    _ = stop.recv() => break,
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(e) => {
                            warn!(service = %service, "accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let gate = gate.clone();
                let service = service.clone();
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true)
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| {
                            let gate = gate.clone();
                            let service = service.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    route(req, &service, scope, gate).await,
                                )
                            }
                        }),
                    );
                let conn = graceful.watcher().watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!("connection ended: {e}");
                    }
                    drop(permit);
                });
            }
        }));
    }
    shutdown.await;
    let _ = stop_tx.send(());
    // (accept loops stop; connections drain below)
    for t in accept_tasks {
        let _ = t.await;
    }
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        warn!("connection tracker still shared at shutdown; not waiting for requests in flight");
        return;
    };
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            warn!("in-flight requests did not finish within 10 s; stopping anyway");
        }
    }
}

async fn route(
    req: hyper::Request<hyper::body::Incoming>,
    service: &str,
    scope: Scope,
    mut gate: Gate,
) -> hyper::Response<response::Body> {
    let registry = gate.borrow().clone();
    let registry = match registry {
        Some(r) => r,
        None => {
            match req.uri().path() {
                "/Plugin.Activate" => {
                    return response::ok(&crate::protocol::ActivateResponse {
                        implements: vec!["VolumeDriver".into()],
                    })
                }
                "/VolumeDriver.Capabilities" => {
                    return response::ok(&crate::protocol::CapabilitiesResponse {
                        capabilities: crate::protocol::Capabilities {
                            scope: scope.as_str().into(),
                        },
                    })
                }
                _ => {}
            }
            match gate.wait_for(Option::is_some).await {
                Ok(r) => match r.clone() {
                    Some(r) => r,
                    None => return unavailable(service),
                },
                Err(_) => return unavailable(service),
            }
        }
    };
    let early = matches!(
        req.uri().path(),
        "/Plugin.Activate" | "/VolumeDriver.Capabilities" | "/VolumeDriver.Get"
    );
    if !early && !registry.is_ready() && !registry.wait_ready().await {
        return unavailable(service);
    }
    match registry.services.get(service) {
        Some(svc) => docker::handle(req, svc, &registry).await,
        None => unavailable(service),
    }
}

pub(crate) fn unavailable(service: &str) -> hyper::Response<response::Body> {
    let f = response::Failure::new(
        hyper::StatusCode::SERVICE_UNAVAILABLE,
        format!("service {service} is not available (berthd is stopping or failed to start)"),
    );
    failures::log(
        &failures::Request {
            service,
            operation: "request",
            volume: None,
            duration: Duration::ZERO,
        },
        &f,
    );
    response::fail(f)
}
