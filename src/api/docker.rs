//! Routes: `/Plugin.Activate`, `/VolumeDriver.*`, `/Berth.*`.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use tracing::debug;

use super::response::{self, Body, Failure};
use super::{Registry, BODY_TIMEOUT, MAX_BODY};
use crate::protocol::*;
use crate::service::{
    status_map, CreateOutcome, SnapshotView, StatusFields, VolumeService, VolumeView,
};
use crate::state::Facts;

pub use super::route::Route;

enum BodyError {
    TooLarge,
    Timeout,
    Read(String),
}

async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    let limited = Limited::new(body, MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(BodyError::TooLarge)
            } else {
                Err(BodyError::Read(e.to_string()))
            }
        }
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

pub(super) fn malformed(route: &str, e: serde_json::Error) -> Failure {
    Failure::new(
        StatusCode::BAD_REQUEST,
        format!("{route}: malformed request body: {e}"),
    )
}

fn decode<T: DeserializeOwned>(route: &str, body: &[u8]) -> Result<T, Box<Response<Body>>> {
    serde_json::from_slice(body).map_err(|e| Box::new(response::fail(malformed(route, e))))
}

/// Handles one request. An answer given before the body was read in full
/// (unknown endpoint, body too large or too slow) closes the connection
/// and says so (`Connection: close`): the unread rest of the body can't
/// be told apart from a next request.
pub async fn handle(
    req: Request<Incoming>,
    svc: &VolumeService,
    registry: &Registry,
) -> Response<Body> {
    let uri = req.uri().clone();
    let path = shown(uri.path());
    let started = Instant::now();
    let (mut resp, body) = handle_request(req, path, svc, registry).await;
    let took = started.elapsed();
    let route = Route::from_path(path).map_or("unknown", Route::as_str);
    registry
        .metrics
        .observe(svc.name(), route, resp.status().as_u16(), took);
    debug!(service = %svc.name(), route = %path, status = resp.status().as_u16(),
        duration_us = took.as_micros() as u64, "request");
    if let Some(f) = resp.extensions().get::<Failure>() {
        let volume = body.as_deref().and_then(named);
        super::failures::log(
            &super::failures::Request {
                service: svc.name(),
                operation: path.trim_start_matches('/'),
                volume: volume.as_deref(),
                duration: started.elapsed(),
            },
            f,
        );
    }
    if matches!(
        resp.status(),
        StatusCode::NOT_FOUND | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// `path` cut to at most 100 characters (for messages).
fn shown(path: &str) -> &str {
    path.char_indices()
        .nth(100)
        .map_or(path, |(i, _)| &path[..i])
}

/// The volume (or snapshot) a request body names, for the log line.
fn named(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(rename = "Name")]
        name: Option<String>,
        #[serde(rename = "Volume")]
        volume: Option<String>,
    }
    let n: Named = serde_json::from_slice(body).ok()?;
    let shown: String = n.volume.or(n.name)?.chars().take(100).collect();
    Some(shown)
}

/// The answer, and the body when it was read.
async fn handle_request(
    req: Request<Incoming>,
    path: &str,
    svc: &VolumeService,
    registry: &Registry,
) -> (Response<Body>, Option<Bytes>) {
    let Some(route) = Route::from_path(path) else {
        let f = Failure::new(StatusCode::NOT_FOUND, format!("unknown endpoint {path:?}"));
        return (response::fail(f), None);
    };
    // Refuse an announced oversized body before reading it.
    if let Some(len) = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > MAX_BODY as u64 {
            let f = Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body of {len} bytes is larger than the {MAX_BODY}-byte limit"),
            );
            return (response::fail(f), None);
        }
    }
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(e) => return (response::fail(e.failure()), None),
    };
    let resp = dispatch(route, path, &body, svc, registry).await;
    (resp, Some(body))
}

impl BodyError {
    fn failure(self) -> Failure {
        match self {
            BodyError::TooLarge => Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than the {MAX_BODY}-byte limit"),
            ),
            BodyError::Timeout => Failure::new(
                StatusCode::REQUEST_TIMEOUT,
                "request body was not sent in time",
            ),
            BodyError::Read(e) => Failure::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {e}"),
            ),
        }
    }
}

/// Decodes the request body as `$ty`, or returns the 400 answer.
macro_rules! decode_or_answer {
    ($ty:ty, $path:expr, $body:expr) => {
        match decode::<$ty>($path, $body) {
            Ok(r) => r,
            Err(resp) => return *resp,
        }
    };
}

/// A service outcome as an answer: `ok(value)` on success, 500 + `Err`
/// otherwise.
fn answer<T, R: serde::Serialize>(
    outcome: crate::service::ServiceResult<T>,
    ok: impl FnOnce(T) -> R,
) -> Response<Body> {
    match outcome {
        Ok(v) => response::ok(&ok(v)),
        Err(e) => response::service_error(&e),
    }
}

fn done(_: ()) -> ErrResponse {
    ErrResponse::default()
}

fn created(o: CreateOutcome) -> VolumeCreateResponse {
    let (outcome, differs) = match o {
        CreateOutcome::Created => ("created", Vec::new()),
        CreateOutcome::Existed { differs } => ("existed", differs),
        CreateOutcome::Disabled => ("disabled", Vec::new()),
    };
    VolumeCreateResponse {
        outcome: outcome.into(),
        differs,
        err: String::new(),
    }
}

fn mountpoint(p: Option<std::path::PathBuf>) -> MountpointResponse {
    MountpointResponse {
        mountpoint: p
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        err: String::new(),
    }
}

/// Asks a shared catalog for a volume this host has not seen yet (made
/// on another host), so Get and Path find it.
async fn lookup(svc: &VolumeService, name: &str) -> crate::service::ServiceResult<()> {
    if svc.needs_lookup(name) {
        svc.lookup(name).await
    } else {
        Ok(())
    }
}

async fn dispatch(
    route: Route,
    path: &str,
    body: &[u8],
    svc: &VolumeService,
    registry: &Registry,
) -> Response<Body> {
    match route {
        Route::Activate | Route::Capabilities | Route::Progress => about(route, svc),
        Route::Status => status(svc, registry),
        Route::Metrics => response::metrics_text(super::metrics::render(registry)),
        Route::Create
        | Route::Remove
        | Route::Mount
        | Route::Unmount
        | Route::VolumeCreate
        | Route::VolumeRemove => change(route, path, body, svc).await,
        Route::Path | Route::Get | Route::List | Route::DetailedList => {
            read_volumes(route, path, body, svc, registry).await
        }
        Route::SnapshotCreate
        | Route::SnapshotList
        | Route::SnapshotInspect
        | Route::SnapshotRemove
        | Route::VolumeResize
        | Route::VolumeImport => snapshots(route, path, body, svc).await,
    }
}

/// A route handed to a function that does not serve it (a bug).
fn unreachable_route(route: Route) -> Response<Body> {
    response::fail(Failure {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("internal error: route {route:?} reached the wrong handler"),
        internal: true,
        not_found: false,
    })
}

fn about(route: Route, svc: &VolumeService) -> Response<Body> {
    match route {
        Route::Activate => response::ok(&ActivateResponse {
            implements: vec!["VolumeDriver".into()],
        }),
        Route::Capabilities => response::ok(&CapabilitiesResponse {
            capabilities: Capabilities {
                scope: svc.scope().as_str().into(),
            },
        }),
        Route::Progress => response::ok(&ProgressResponse {
            operations: svc
                .operations()
                .into_iter()
                .map(|o| Operation {
                    id: o.id,
                    kind: o.kind,
                    target: o.target,
                    source: o.source,
                    done_bytes: o.done,
                    total_bytes: o.total,
                    elapsed_ms: o.elapsed.as_millis() as u64,
                })
                .collect(),
            err: String::new(),
        }),
        _ => unreachable_route(route),
    }
}

async fn change(route: Route, path: &str, body: &[u8], svc: &VolumeService) -> Response<Body> {
    match route {
        Route::Create => {
            let r = decode_or_answer!(CreateRequest, path, body);
            let opts = r.opts.unwrap_or_default();
            answer(svc.create(&r.name, &opts).await, done)
        }
        Route::Remove => {
            let r = decode_or_answer!(NameRequest, path, body);
            answer(svc.remove(&r.name).await, done)
        }
        Route::VolumeCreate => {
            let r = decode_or_answer!(CreateRequest, path, body);
            let opts = r.opts.unwrap_or_default();
            answer(svc.create_reporting(&r.name, &opts).await, created)
        }
        Route::VolumeRemove => {
            let r = decode_or_answer!(NameRequest, path, body);
            answer(svc.remove_checked(&r.name, false).await, done)
        }
        Route::Mount => {
            let r = decode_or_answer!(MountRequest, path, body);
            answer(svc.mount(&r.name, r.id.as_deref()).await, |p| {
                mountpoint(Some(p))
            })
        }
        Route::Unmount => {
            let r = decode_or_answer!(MountRequest, path, body);
            answer(svc.unmount(&r.name, r.id.as_deref()).await, done)
        }
        _ => unreachable_route(route),
    }
}

async fn read_volumes(
    route: Route,
    path: &str,
    body: &[u8],
    svc: &VolumeService,
    registry: &Registry,
) -> Response<Body> {
    match route {
        Route::Path => {
            let r = decode_or_answer!(NameRequest, path, body);
            if let Err(e) = lookup(svc, &r.name).await {
                return response::service_error(&e);
            }
            answer(svc.path(&r.name), mountpoint)
        }
        Route::Get => {
            let r = decode_or_answer!(NameRequest, path, body);
            if !registry.is_ready() {
                // Answered from the volume's record while the rest loads.
                match svc.get_early(&r.name).await {
                    Some(Ok(v)) => return get_answer(&v, svc),
                    Some(Err(e)) => return response::service_error(&e),
                    None => {
                        if !registry.wait_ready().await {
                            return super::unavailable(svc.name());
                        }
                    }
                }
            }
            if let Err(e) = lookup(svc, &r.name).await {
                return response::service_error(&e);
            }
            match svc.get(&r.name) {
                Ok(v) => get_answer(&v, svc),
                Err(e) => response::service_error(&e),
            }
        }
        Route::List => {
            if let Err(e) = svc.refresh().await {
                return response::service_error(&e);
            }
            response::ok_bytes(svc.list_body(|it| {
                let volumes: Vec<Volume> = it
                    .map(|(name, mp, created)| Volume {
                        name: name.to_string(),
                        mountpoint: mp
                            .map(|p| p.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        created_at: Some(created.to_string()),
                        status: None,
                    })
                    .collect();
                Bytes::from(
                    serde_json::to_vec(&ListResponse {
                        volumes,
                        err: String::new(),
                    })
                    .unwrap_or_default(),
                )
            }))
        }
        Route::DetailedList => {
            if let Err(e) = svc.refresh().await {
                return response::service_error(&e);
            }
            response::ok(&DetailedListResponse {
                volumes: svc
                    .list_views()
                    .iter()
                    .map(|v| volume_of(v, svc.name()))
                    .collect(),
                err: String::new(),
            })
        }
        _ => unreachable_route(route),
    }
}

async fn snapshots(route: Route, path: &str, body: &[u8], svc: &VolumeService) -> Response<Body> {
    match route {
        Route::SnapshotCreate => {
            let r = decode_or_answer!(SnapshotCreateRequest, path, body);
            answer(svc.snapshot_create(&r.volume, &r.name).await, |v| {
                SnapshotResponse {
                    snapshot: Some(snapshot_of(&v)),
                    err: String::new(),
                }
            })
        }
        Route::SnapshotList => {
            // An empty body lists everything.
            let r = if body.iter().all(u8::is_ascii_whitespace) {
                SnapshotListRequest::default()
            } else {
                decode_or_answer!(SnapshotListRequest, path, body)
            };
            if let Err(e) = svc.refresh().await {
                return response::service_error(&e);
            }
            answer(svc.snapshot_list(r.volume.as_deref()), |v| {
                SnapshotListResponse {
                    snapshots: v.iter().map(snapshot_of).collect(),
                    err: String::new(),
                }
            })
        }
        Route::SnapshotInspect => {
            let r = decode_or_answer!(NameRequest, path, body);
            if let Err(e) = svc.refresh().await {
                return response::service_error(&e);
            }
            answer(svc.snapshot_get(&r.name), |v| SnapshotResponse {
                snapshot: Some(snapshot_of(&v)),
                err: String::new(),
            })
        }
        Route::SnapshotRemove => {
            let r = decode_or_answer!(NameRequest, path, body);
            answer(svc.snapshot_remove(&r.name).await, done)
        }
        Route::VolumeResize => {
            let r = decode_or_answer!(ResizeRequest, path, body);
            answer(svc.resize(&r.name, &r.size).await, |size_bytes| {
                ResizeResponse {
                    size_bytes,
                    err: String::new(),
                }
            })
        }
        Route::VolumeImport => {
            let r = decode_or_answer!(ImportRequest, path, body);
            answer(svc.import_image(&r.name, &r.path).await, done)
        }
        _ => unreachable_route(route),
    }
}

fn status(svc: &VolumeService, registry: &Registry) -> Response<Body> {
    let services = registry
        .services
        .values()
        .map(|s| {
            let st = s.status();
            ServiceInfo {
                socket: registry.sockets.get(&st.name).cloned().unwrap_or_default(),
                name: st.name,
                driver: st.driver,
                scope: st.scope,
                volumes: st.volumes,
                mounted: st.mounted,
                mount_users: st.mount_users,
                problem: st.problem,
                stuck: s.stuck().iter().map(|x| x.line()).collect(),
                record_formats: st.record_formats,
                unreadable: st.unreadable,
                taken_over: st.taken_over,
            }
        })
        .collect();
    response::ok(&StatusResponse {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: registry.started.elapsed().as_secs(),
        service: svc.name().into(),
        services,
    })
}

fn get_answer(v: &VolumeView, svc: &VolumeService) -> Response<Body> {
    response::ok(&GetAnswer {
        volume: VolumeAnswer {
            name: v.record.name.as_str(),
            mountpoint: v
                .mountpoint
                .as_deref()
                .map(|p| p.to_string_lossy())
                .unwrap_or_default(),
            created_at: &v.record.created_at,
            status: StatusFields::of(v, svc.name()),
        },
        err: "",
    })
}

fn volume_of(v: &VolumeView, service: &str) -> Volume {
    Volume {
        name: v.record.name.to_string(),
        mountpoint: v
            .mountpoint
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        created_at: Some(v.record.created_at.clone()),
        status: Some(status_map(v, service)),
    }
}

fn snapshot_of(v: &SnapshotView) -> Snapshot {
    let r = &v.record;
    Snapshot {
        name: r.name.to_string(),
        id: r.id.clone(),
        volume: r.volume.to_string(),
        volume_id: r.volume_id.clone(),
        volume_exists: v.source_exists,
        created_at: r.created_at.clone(),
        size_bytes: r.size,
        allocated_bytes: v.allocated,
        fs_type: r.fs_type.as_str().to_string(),
        volume_type: r.volume_type.clone(),
        copy_method: r
            .copy_method()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default(),
        frozen_micros: r.frozen_for().map(|d| d.as_micros() as u64),
    }
}

pub use super::precheck::precheck;

/// Options as a map (helper for tests).
pub fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_requests() {
        let r: CreateRequest =
            serde_json::from_slice(b"{\"Name\":\"v\",\"Opts\":null}\n").expect("null opts");
        assert_eq!(r.opts, None);
        let r: CreateRequest = serde_json::from_slice(b"{\"Name\":\"v\"}").expect("absent opts");
        assert_eq!(r.opts, None);
        let r: MountRequest = serde_json::from_slice(b"{\"Name\":\"v\"}\n").expect("no ID");
        assert_eq!(r.id, None);
        let r: MountRequest =
            serde_json::from_slice(b"{\"Name\":\"v\",\"ID\":\"abc\",\"Extra\":1}")
                .expect("extra field");
        assert_eq!(r.id.as_deref(), Some("abc"));
        assert!(serde_json::from_slice::<CreateRequest>(b"{\"Name\":5}").is_err());
        assert!(
            serde_json::from_slice::<CreateRequest>(b"{\"Name\":\"v\",\"Opts\":{\"size\":1}}")
                .is_err()
        );
    }
}
