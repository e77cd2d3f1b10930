//! A client of the Docker Volume Plugin API v1 over a UNIX socket, as
//! dockerd speaks it (POST, JSON body, `Accept` v1.2, dummy Host). Every
//! call is bounded by a timeout. Used by `berth`, and by anything that
//! drives a plugin without a Docker engine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Errors talking to a plugin. Messages name the socket and the method.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect.
    #[error("cannot connect to {socket}: {source}")]
    Connect {
        /// Socket path.
        socket: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The request failed on the wire.
    #[error("{method} on {socket}: {reason}")]
    Transport {
        /// Method.
        method: String,
        /// Socket path.
        socket: PathBuf,
        /// Cause.
        reason: String,
    },
    /// No answer in time.
    #[error("{method} on {socket}: no answer within {}s", timeout.as_secs())]
    Timeout {
        /// Method.
        method: String,
        /// Socket path.
        socket: PathBuf,
        /// The limit.
        timeout: Duration,
    },
    /// The plugin answered with an error.
    #[error("{method}: {message}")]
    Plugin {
        /// Method.
        method: String,
        /// The plugin's `Err` (or raw body).
        message: String,
    },
}

/// A plugin at a UNIX socket.
#[derive(Debug, Clone)]
pub struct PluginClient {
    socket: PathBuf,
    timeout: Duration,
}

impl PluginClient {
    /// A client for `socket`; each call waits at most `timeout`.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        PluginClient {
            socket: socket.into(),
            timeout,
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `body` to `/<method>`; returns status and body.
    pub async fn call_raw(
        &self,
        method: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let fut = self.call_raw_inner(method, body);
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                method: method.into(),
                socket: self.socket.clone(),
                timeout: self.timeout,
            }),
        }
    }

    async fn call_raw_inner(
        &self,
        method: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let transport = |reason: String| ClientError::Transport {
            method: method.into(),
            socket: self.socket.clone(),
            reason,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| ClientError::Connect {
                socket: self.socket.clone(),
                source: e,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport(e.to_string()))?;
        let conn_task = tokio::spawn(conn);
        let req = Request::post(format!("/{method}"))
            .header(hyper::header::HOST, "plugin.moby.localhost")
            .header(
                hyper::header::ACCEPT,
                "application/vnd.docker.plugins.v1.2+json",
            )
            .body(Full::new(body))
            .map_err(|e| transport(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(e.to_string()))?
            .to_bytes();
        conn_task.abort();
        Ok((status, bytes))
    }

    /// Calls `method` with a JSON request and decodes the JSON answer. A
    /// non-200 status or a non-empty `Err` becomes [`ClientError::Plugin`].
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        req: Option<&Req>,
    ) -> Result<Resp, ClientError> {
        let body = match req {
            Some(r) => Bytes::from(serde_json::to_vec(r).map_err(|e| ClientError::Transport {
                method: method.into(),
                socket: self.socket.clone(),
                reason: format!("cannot encode request: {e}"),
            })?),
            None => Bytes::new(),
        };
        let (status, bytes) = self.call_raw(method, body).await?;
        let err_of = |b: &Bytes| -> Option<String> {
            serde_json::from_slice::<serde_json::Value>(b)
                .ok()
                .and_then(|v| v.get("Err").and_then(|e| e.as_str()).map(str::to_string))
                .filter(|s| !s.is_empty())
        };
        if status != StatusCode::OK {
            let message = err_of(&bytes).unwrap_or_else(|| {
                format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes).trim())
            });
            return Err(ClientError::Plugin {
                method: method.into(),
                message,
            });
        }
        if let Some(message) = err_of(&bytes) {
            return Err(ClientError::Plugin {
                method: method.into(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Transport {
            method: method.into(),
            socket: self.socket.clone(),
            reason: format!("cannot decode answer: {e}"),
        })
    }
}
