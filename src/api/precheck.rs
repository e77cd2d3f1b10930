//! What a request gets before any storage is touched (the entry point
//! of the fuzz target and of the property test in `tests/hostile.rs`).

use hyper::StatusCode;
use serde::de::DeserializeOwned;

use super::docker::{malformed, Route};
use super::response::Failure;
use super::MAX_BODY;
use crate::protocol::*;

/// What a request gets before any storage is touched: route, body size,
/// JSON decoding and validation of the name, the mount ID and the create
/// options (against the built-in defaults). `Ok(route)` means the request
/// would reach the service; `Err((status, message))` is the answer it
/// would get. Pure and in-process: the entry point of the fuzz target
/// (`fuzz/`) and of the property test in `tests/hostile.rs`, which also
/// checks that a live daemon answers the same.
pub fn precheck(path: &str, body: &[u8]) -> Result<Route, Failure> {
    use crate::service::options::CreateSpec;
    use crate::service::ServiceError;
    use crate::volume::{MountId, VolumeName};
    let route = Route::from_path(path).ok_or_else(|| {
        let shown: String = path.chars().take(100).collect();
        Failure::new(StatusCode::NOT_FOUND, format!("unknown endpoint {shown:?}"))
    })?;
    if body.len() > MAX_BODY {
        return Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the {MAX_BODY}-byte limit"),
        ));
    }
    fn json<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, Failure> {
        serde_json::from_slice(body).map_err(|e| malformed(path, e))
    }
    let refused = |e: ServiceError| Failure::from(&e);
    let name = |n: &str| VolumeName::parse(n).map_err(|e| refused(e.into()));
    match route {
        Route::Create | Route::VolumeCreate => {
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
        Route::Remove | Route::VolumeRemove | Route::Path | Route::Get => {
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
        Route::VolumeImport => {
            let r: ImportRequest = json(path, body)?;
            let n = name(&r.name)?;
            if !std::path::Path::new(&r.path).is_absolute() {
                return Err(refused(ServiceError::BadInput(format!(
                    "volume {n}: the image path {:?} must be absolute",
                    r.path
                ))));
            }
        }
        Route::Activate
        | Route::Capabilities
        | Route::List
        | Route::Status
        | Route::DetailedList
        | Route::Progress
        | Route::Metrics => {}
    }
    Ok(route)
}
