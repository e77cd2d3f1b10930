//! The one mapping from outcomes to HTTP responses: every failure is a
//! [`Failure`] (status + message), answered as `{"Err": message}` and
//! logged once by the request handler ([`super::docker::handle`]).

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::service::ServiceError;

/// Content type of every answer (what go-plugins-helpers sends).
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.1+json";

/// A response body.
pub type Body = Full<Bytes>;

/// Header of a failed answer that says what kind of failure it was, for
/// clients that act on it (`berth` exits 3 on `not-found`). dockerd reads
/// only the `Err` of the body.
pub const ERROR_KIND_HEADER: &str = "berth-error-kind";

/// [`ERROR_KIND_HEADER`]'s value for a volume or snapshot that does not
/// exist.
pub const NOT_FOUND: &str = "not-found";

/// A request that failed: what the client is told, and whether it is a
/// fault of Berth's own (logged at ERROR) rather than a refusal or a
/// storage failure (WARNING).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// HTTP status.
    pub status: StatusCode,
    /// The message, as Docker prints it after `VolumeDriver.<Method>: `.
    pub message: String,
    /// A bug or an internal fault.
    pub internal: bool,
    /// The volume or snapshot named does not exist.
    pub not_found: bool,
}

impl Failure {
    /// A failure with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
            internal: false,
            not_found: false,
        }
    }
}

impl From<&ServiceError> for Failure {
    /// Service errors are HTTP 500 + `{"Err"}`: dockerd shows any status
    /// the same way, as `VolumeDriver.<Method>: <message>`.
    fn from(e: &ServiceError) -> Self {
        Failure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: e.to_string(),
            internal: matches!(e, ServiceError::Internal { .. }),
            not_found: matches!(
                e,
                ServiceError::NotFound(_) | ServiceError::SnapshotNotFound(_)
            ),
        }
    }
}

/// 200 with a JSON body.
pub fn ok<T: Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(v) => raw(StatusCode::OK, Bytes::from(v)),
        Err(e) => fail(Failure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("cannot encode response: {e}"),
            internal: true,
            not_found: false,
        }),
    }
}

/// 200 with Prometheus text (exposition format 0.0.4).
pub fn metrics_text(text: String) -> Response<Body> {
    let mut r = raw(StatusCode::OK, Bytes::from(text));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// 200 with a pre-encoded body.
pub fn ok_bytes(b: Bytes) -> Response<Body> {
    raw(StatusCode::OK, b)
}

/// The answer to a failure: its status with `{"Err": message}`. The
/// failure rides along in the response's extensions for the log line.
pub fn fail(f: Failure) -> Response<Body> {
    let body = serde_json::json!({ "Err": f.message });
    let mut r = raw(f.status, Bytes::from(body.to_string()));
    if f.not_found {
        r.headers_mut().insert(
            ERROR_KIND_HEADER,
            hyper::header::HeaderValue::from_static(NOT_FOUND),
        );
    }
    r.extensions_mut().insert(f);
    r
}

/// `status` with `{"Err": msg}`.
pub fn error(status: StatusCode, msg: &str) -> Response<Body> {
    fail(Failure::new(status, msg))
}

/// A service error (see [`Failure`]'s `From`).
pub fn service_error(e: &ServiceError) -> Response<Body> {
    fail(Failure::from(e))
}

fn raw(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}
