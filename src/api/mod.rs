//! The HTTP layer: the Docker Volume Plugin API (v1) and Berth's own
//! `/Berth.*` calls, served over UNIX sockets with hyper. Pure
//! translation: decode, call the service, encode. The one place errors
//! become HTTP responses is [`response`].

pub mod docker;
pub mod response;

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
}

/// Serves `listeners` (each bound to one service) until `shutdown`
/// resolves, then lets in-flight requests finish (at most 10 s).
pub async fn serve(
    listeners: Vec<(UnixListener, Arc<VolumeService>)>,
    registry: Arc<Registry>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
    let limit = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut accept_tasks = Vec::new();
    for (listener, svc) in listeners {
        let mut stop = stop_tx.subscribe();
        let registry = registry.clone();
        let limit = limit.clone();
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
                            warn!(service = %svc.name(), "accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let svc = svc.clone();
                let registry = registry.clone();
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true)
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| {
                            let svc = svc.clone();
                            let registry = registry.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    docker::handle(req, &svc, &registry).await,
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
