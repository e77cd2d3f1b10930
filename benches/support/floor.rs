//! The HTTP floor: the least a server built like berthd can do to answer
//! the same requests. tokio (multi-threaded runtime, as berthd) + hyper 1
//! http1 on a UNIX socket, keep-alive; the request body is read and
//! decoded with serde_json, and the answer is a body taken from memory:
//! Berth's own answers, captured before the run, so the bodies have the
//! same shape and size. No validation, locks, logging or timers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// What the floor answers.
#[derive(Default)]
pub struct Answers {
    /// `VolumeDriver.List` body.
    pub list: Bytes,
    /// `VolumeDriver.Get` body by volume name.
    pub get: HashMap<String, Bytes>,
    /// `VolumeDriver.Path` body by volume name.
    pub path: HashMap<String, Bytes>,
}

#[derive(serde::Deserialize)]
struct Named {
    #[serde(rename = "Name")]
    name: String,
}

const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.1+json";
const NOT_FOUND: &[u8] = b"{\"Err\":\"no such volume\"}";

async fn answer(req: Request<hyper::body::Incoming>, a: Arc<Answers>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let named = |m: &HashMap<String, Bytes>| {
        serde_json::from_slice::<Named>(&body)
            .ok()
            .and_then(|n| m.get(&n.name).cloned())
            .unwrap_or(Bytes::from_static(NOT_FOUND))
    };
    let out = match path.as_str() {
        "/VolumeDriver.List" => a.list.clone(),
        "/VolumeDriver.Get" => named(&a.get),
        "/VolumeDriver.Path" => named(&a.path),
        "/Plugin.Activate" => Bytes::from_static(b"{\"Implements\":[\"VolumeDriver\"]}"),
        _ => Bytes::from_static(b"{\"Err\":\"\"}"),
    };
    let mut r = Response::new(Full::new(out));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

/// Serves `answers` on `sock` until the process ends.
pub fn start(sock: &Path, answers: Answers) {
    let _ = std::fs::remove_file(sock);
    let std_listener = std::os::unix::net::UnixListener::bind(sock).expect("bind floor");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let answers = Arc::new(answers);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("floor")
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = tokio::net::UnixListener::from_std(std_listener).expect("listener");
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let a = answers.clone();
                tokio::spawn(async move {
                    let conn = http1::Builder::new().keep_alive(true).serve_connection(
                        TokioIo::new(s),
                        service_fn(move |req| {
                            let a = a.clone();
                            async move { Ok::<_, Infallible>(answer(req, a).await) }
                        }),
                    );
                    let _ = conn.await;
                });
            }
        });
    });
}
