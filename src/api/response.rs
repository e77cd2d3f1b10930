//! The one mapping from outcomes to HTTP responses.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::service::ServiceError;

/// Content type of every answer (what go-plugins-helpers sends).
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.1+json";

/// A response body.
pub type Body = Full<Bytes>;

/// 200 with a JSON body.
pub fn ok<T: Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(v) => raw(StatusCode::OK, Bytes::from(v)),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode response: {e}"),
        ),
    }
}

/// 200 with a pre-encoded body.
pub fn ok_bytes(b: Bytes) -> Response<Body> {
    raw(StatusCode::OK, b)
}

/// `status` with `{"Err": msg}`.
pub fn error(status: StatusCode, msg: &str) -> Response<Body> {
    let body = serde_json::json!({ "Err": msg });
    raw(status, Bytes::from(body.to_string()))
}

/// A service error: HTTP 500 + `{"Err": "..."}`, which dockerd shows as
/// `VolumeDriver.<Method>: <message>`.
pub fn service_error(e: &ServiceError) -> Response<Body> {
    error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
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
