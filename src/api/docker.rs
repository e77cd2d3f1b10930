//! Routes: `/Plugin.Activate`, `/VolumeDriver.*`, `/Berth.*`.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use tracing::debug;

use super::response::{self, Body};
use super::{Registry, BODY_TIMEOUT, MAX_BODY};
use crate::protocol::*;
use crate::service::{status_map, SnapshotView, VolumeService, VolumeView};

/// The calls a plugin socket answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/Plugin.Activate`.
    Activate,
    /// `/VolumeDriver.Create`.
    Create,
    /// `/VolumeDriver.Remove`.
    Remove,
    /// `/VolumeDriver.Mount`.
    Mount,
    /// `/VolumeDriver.Unmount`.
    Unmount,
    /// `/VolumeDriver.Path`.
    Path,
    /// `/VolumeDriver.Get`.
    Get,
    /// `/VolumeDriver.List`.
    List,
    /// `/VolumeDriver.Capabilities`.
    Capabilities,
    /// `/Berth.Status`.
    Status,
    /// `/Berth.List`.
    DetailedList,
    /// `/Berth.SnapshotCreate`.
    SnapshotCreate,
    /// `/Berth.SnapshotList`.
    SnapshotList,
    /// `/Berth.SnapshotInspect`.
    SnapshotInspect,
    /// `/Berth.SnapshotRemove`.
    SnapshotRemove,
    /// `/Berth.VolumeResize`.
    VolumeResize,
    /// `/Berth.Progress`.
    Progress,
}

impl Route {
    /// Maps a request path to a route.
    pub fn from_path(path: &str) -> Option<Route> {
        Some(match path {
            "/Plugin.Activate" => Route::Activate,
            "/VolumeDriver.Create" => Route::Create,
            "/VolumeDriver.Remove" => Route::Remove,
            "/VolumeDriver.Mount" => Route::Mount,
            "/VolumeDriver.Unmount" => Route::Unmount,
            "/VolumeDriver.Path" => Route::Path,
            "/VolumeDriver.Get" => Route::Get,
            "/VolumeDriver.List" => Route::List,
            "/VolumeDriver.Capabilities" => Route::Capabilities,
            "/Berth.Status" => Route::Status,
            "/Berth.List" => Route::DetailedList,
            "/Berth.SnapshotCreate" => Route::SnapshotCreate,
            "/Berth.SnapshotList" => Route::SnapshotList,
            "/Berth.SnapshotInspect" => Route::SnapshotInspect,
            "/Berth.SnapshotRemove" => Route::SnapshotRemove,
            "/Berth.VolumeResize" => Route::VolumeResize,
            "/Berth.Progress" => Route::Progress,
            _ => return None,
        })
    }
}

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

fn decode<T: DeserializeOwned>(route: &str, body: &[u8]) -> Result<T, Box<Response<Body>>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(response::error(
            StatusCode::BAD_REQUEST,
            &format!("{route}: malformed request body: {e}"),
        ))
    })
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
    let mut resp = handle_request(req, svc, registry).await;
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

async fn handle_request(
    req: Request<Incoming>,
    svc: &VolumeService,
    registry: &Registry,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let Some(route) = Route::from_path(&path) else {
        let shown: String = path.chars().take(100).collect();
        return response::error(
            StatusCode::NOT_FOUND,
            &format!("unknown endpoint {shown:?}"),
        );
    };
    // Refuse an announced oversized body before reading it.
    if let Some(len) = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > MAX_BODY as u64 {
            return response::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body of {len} bytes is larger than the {MAX_BODY}-byte limit"),
            );
        }
    }
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return response::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body is larger than the {MAX_BODY}-byte limit"),
            )
        }
        Err(BodyError::Timeout) => {
            return response::error(
                StatusCode::REQUEST_TIMEOUT,
                "request body was not sent in time",
            )
        }
        Err(BodyError::Read(e)) => {
            return response::error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read request body: {e}"),
            )
        }
    };
    let started = Instant::now();
    let resp = dispatch(route, &path, &body, svc, registry).await;
    debug!(service = %svc.name(), route = %path, status = resp.status().as_u16(),
        duration_us = started.elapsed().as_micros() as u64, "request");
    resp
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
        Route::Activate => response::ok(&ActivateResponse {
            implements: vec!["VolumeDriver".into()],
        }),
        Route::Capabilities => response::ok(&CapabilitiesResponse {
            capabilities: Capabilities {
                scope: svc.scope().as_str().into(),
            },
        }),
        Route::Create => {
            let r = decode_or_answer!(CreateRequest, path, body);
            let opts = r.opts.unwrap_or_default();
            answer(svc.create(&r.name, &opts).await, done)
        }
        Route::Remove => {
            let r = decode_or_answer!(NameRequest, path, body);
            answer(svc.remove(&r.name).await, done)
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
        Route::Path => {
            let r = decode_or_answer!(NameRequest, path, body);
            if let Err(e) = lookup(svc, &r.name).await {
                return response::service_error(&e);
            }
            answer(svc.path(&r.name), mountpoint)
        }
        Route::Get => {
            let r = decode_or_answer!(NameRequest, path, body);
            if let Err(e) = lookup(svc, &r.name).await {
                return response::service_error(&e);
            }
            answer(svc.get(&r.name), |v| GetResponse {
                volume: Some(volume_of(&v, svc.name())),
                err: String::new(),
            })
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
        Route::Status => {
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
    }
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
        copy_method: r.driver_data.get("copyMethod").cloned().unwrap_or_default(),
        frozen_micros: r
            .driver_data
            .get("frozenMicros")
            .and_then(|s| s.parse().ok()),
    }
}

/// What a request gets before any storage is touched: route, body size,
/// JSON decoding and validation of the name, the mount ID and the create
/// options (against the built-in defaults). `Ok(route)` means the request
/// would reach the service; `Err((status, message))` is the answer it
/// would get. Pure and in-process: the entry point of the fuzz target
/// (`fuzz/`) and of the property test in `tests/hostile.rs`, which also
/// checks that a live daemon answers the same.
pub fn precheck(path: &str, body: &[u8]) -> Result<Route, (StatusCode, String)> {
    use crate::service::options::CreateSpec;
    use crate::service::ServiceError;
    use crate::volume::{MountId, VolumeName};
    let route = Route::from_path(path).ok_or_else(|| {
        let shown: String = path.chars().take(100).collect();
        (StatusCode::NOT_FOUND, format!("unknown endpoint {shown:?}"))
    })?;
    if body.len() > MAX_BODY {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the {MAX_BODY}-byte limit"),
        ));
    }
    fn json<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, (StatusCode, String)> {
        serde_json::from_slice(body).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("{path}: malformed request body: {e}"),
            )
        })
    }
    let refused = |e: ServiceError| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let name = |n: &str| VolumeName::parse(n).map_err(|e| refused(e.into()));
    match route {
        Route::Create => {
            let r: CreateRequest = json(path, body)?;
            let n = name(&r.name)?;
            let policy = crate::config::Settings::builtin()
                .services
                .into_values()
                .next()
                .map(|s| s.policy)
                .ok_or_else(|| refused(ServiceError::BadInput("no built-in service".into())))?;
            CreateSpec::parse(
                &r.opts.unwrap_or_default(),
                &policy.create_defaults,
                (policy.data_mode, policy.data_uid, policy.data_gid),
            )
            .map_err(|e| {
                refused(ServiceError::Option {
                    volume: n.to_string(),
                    source: e,
                })
            })?;
        }
        Route::Remove | Route::Path | Route::Get => {
            let r: NameRequest = json(path, body)?;
            name(&r.name)?;
        }
        Route::Mount | Route::Unmount => {
            let r: MountRequest = json(path, body)?;
            let n = name(&r.name)?;
            MountId::parse(r.id.as_deref())
                .map_err(|e| refused(ServiceError::BadInput(format!("volume {n}: {e}"))))?;
        }
        Route::SnapshotCreate => {
            let r: SnapshotCreateRequest = json(path, body)?;
            name(&r.volume)?;
            name(&r.name)?;
        }
        Route::SnapshotList => {
            if !body.iter().all(u8::is_ascii_whitespace) {
                let r: SnapshotListRequest = json(path, body)?;
                if let Some(v) = &r.volume {
                    name(v)?;
                }
            }
        }
        Route::SnapshotInspect | Route::SnapshotRemove => {
            let _: NameRequest = json(path, body)?;
        }
        Route::VolumeResize => {
            let r: ResizeRequest = json(path, body)?;
            let n = name(&r.name)?;
            crate::volume::parse_size(&r.size)
                .map_err(|e| refused(ServiceError::BadInput(format!("volume {n}: {e}"))))?;
        }
        Route::Activate
        | Route::Capabilities
        | Route::List
        | Route::Status
        | Route::DetailedList
        | Route::Progress => {}
    }
    Ok(route)
}

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
    fn routes() {
        assert_eq!(Route::from_path("/Plugin.Activate"), Some(Route::Activate));
        assert_eq!(Route::from_path("/VolumeDriver.Mount"), Some(Route::Mount));
        assert_eq!(
            Route::from_path("/Berth.SnapshotCreate"),
            Some(Route::SnapshotCreate)
        );
        assert_eq!(Route::from_path("/Berth.Progress"), Some(Route::Progress));
        assert_eq!(Route::from_path("/VolumeDriver.mount"), None);
        assert_eq!(Route::from_path("/VolumeDriver.Mount/"), None);
        assert_eq!(Route::from_path("/"), None);
    }

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
