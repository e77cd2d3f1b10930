//! A client of the Docker Volume Plugin API v1, as dockerd speaks it
//! (POST, JSON body, `Accept` v1.2), over a UNIX socket or over HTTP on
//! TCP (the `tcp://` endpoints of `.spec` and `.json` plugin files).
//! Every call is bounded by a timeout. Used by `berth` and `dvdcli`, and
//! by anything that drives a plugin without a Docker engine.
//!
//! [`discovery`] finds a plugin's endpoint by name the way dockerd does.

pub mod discovery;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};

/// Host header sent over UNIX sockets (dockerd's dummy host).
const UNIX_HOST: &str = "plugin.moby.localhost";

/// Errors talking to a plugin. Messages name the endpoint (the socket
/// path, or `tcp://host:port`) and the method.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect.
    #[error("cannot connect to {socket}: {source}")]
    Connect {
        /// Socket path (or `tcp://host:port`).
        socket: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The request failed on the wire.
    #[error("{method} on {socket}: {reason}")]
    Transport {
        /// Method.
        method: String,
        /// Socket path (or `tcp://host:port`).
        socket: PathBuf,
        /// Cause.
        reason: String,
    },
    /// No answer in time.
    #[error("{method} on {socket}: no answer within {}", show_duration(*timeout))]
    Timeout {
        /// Method.
        method: String,
        /// Socket path (or `tcp://host:port`).
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
        /// Berth said the volume or snapshot does not exist (its
        /// `berth-error-kind: not-found` header).
        not_found: bool,
    },
}

impl ClientError {
    /// True when nothing listens at the endpoint (socket file missing,
    /// connection refused): the request never reached a plugin, so trying
    /// again later is safe. dockerd retries exactly these.
    pub fn is_unreachable(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            ClientError::Connect { source, .. } => matches!(
                source.kind(),
                NotFound | ConnectionRefused | ConnectionReset | ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// `130s`, or `1500ms` below whole seconds.
fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Where a plugin listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A UNIX socket.
    Unix(PathBuf),
    /// Plain HTTP over TCP at `host:port`.
    Tcp(String),
}

impl Endpoint {
    /// Parses a plugin address as Docker writes it in `.spec` files and
    /// in the `Addr` of `.json` files: `unix:///path`, `tcp://host:port`
    /// (or `http://host:port`). A scheme is required; TLS (`https://`)
    /// is not supported.
    pub fn from_url(url: &str) -> Result<Endpoint, String> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "{url:?} has no protocol (expected unix:///path or tcp://host:port)"
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "unix" => {
                if rest.is_empty() || rest.contains('\0') {
                    return Err(format!("{url:?} does not name a socket path"));
                }
                Ok(Endpoint::Unix(PathBuf::from(rest)))
            }
            "tcp" | "http" => {
                let authority = rest.split('/').next().unwrap_or_default();
                let Some((host, port)) = authority.rsplit_once(':') else {
                    return Err(format!("{url:?} has no port (expected tcp://host:port)"));
                };
                if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                    return Err(format!(
                        "{url:?} is not host:port with a port from 1 to 65535"
                    ));
                }
                if authority
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(format!("{url:?} contains spaces or control characters"));
                }
                Ok(Endpoint::Tcp(authority.to_string()))
            }
            "https" => Err(format!(
                "{url:?} needs TLS, which this client does not support"
            )),
            other => Err(format!(
                "{url:?}: unknown protocol {other:?} (expected unix or tcp)"
            )),
        }
    }

    /// How errors show the endpoint: the socket path, or `tcp://host:port`.
    fn label(&self) -> PathBuf {
        match self {
            Endpoint::Unix(p) => p.clone(),
            Endpoint::Tcp(a) => PathBuf::from(format!("tcp://{a}")),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// An answer: status, whether Berth said "not found", body.
struct Answer {
    status: StatusCode,
    not_found: bool,
    body: Bytes,
}

/// A plugin at a UNIX socket or a TCP address.
#[derive(Debug, Clone)]
pub struct PluginClient {
    endpoint: Endpoint,
    /// The socket path, or `tcp://host:port` (what errors show).
    label: PathBuf,
    timeout: Duration,
}

impl PluginClient {
    /// A client for the UNIX socket `socket`; each call waits at most
    /// `timeout`.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self::with_endpoint(Endpoint::Unix(socket.into()), timeout)
    }

    /// A client for any endpoint; each call waits at most `timeout`.
    pub fn with_endpoint(endpoint: Endpoint, timeout: Duration) -> Self {
        PluginClient {
            label: endpoint.label(),
            endpoint,
            timeout,
        }
    }

    /// The socket path (for a TCP endpoint: `tcp://host:port`).
    pub fn socket(&self) -> &Path {
        &self.label
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The default limit of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `body` to `/<method>`; returns status and body.
    pub async fn call_raw(
        &self,
        method: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        self.call_raw_within(method, body, self.timeout).await
    }

    /// Like [`PluginClient::call_raw`], waiting at most `timeout`
    /// (connecting included) instead of the client's default.
    pub async fn call_raw_within(
        &self,
        method: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let a = self.answer_within(method, body, timeout).await?;
        Ok((a.status, a.body))
    }

    async fn answer_within(
        &self,
        method: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, ClientError> {
        let fut = self.call_raw_inner(method, body);
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                method: method.into(),
                socket: self.label.clone(),
                timeout,
            }),
        }
    }

    async fn call_raw_inner(&self, method: &str, body: Bytes) -> Result<Answer, ClientError> {
        let connect_err = |e: std::io::Error| ClientError::Connect {
            socket: self.label.clone(),
            source: e,
        };
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_err)?;
                self.exchange(stream, UNIX_HOST, method, body).await
            }
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(connect_err)?;
                // Requests are small and answered at once: no Nagle delay.
                let _ = stream.set_nodelay(true);
                self.exchange(stream, addr, method, body).await
            }
        }
    }

    async fn exchange<S>(
        &self,
        stream: S,
        host: &str,
        method: &str,
        body: Bytes,
    ) -> Result<Answer, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let transport = |reason: String| ClientError::Transport {
            method: method.into(),
            socket: self.label.clone(),
            reason,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport(e.to_string()))?;
        let conn_task = tokio::spawn(conn);
        let req = Request::post(format!("/{method}"))
            .header(hyper::header::HOST, host)
            .header(
                hyper::header::ACCEPT,
                "application/vnd.docker.plugins.v1.2+json",
            )
            .body(Full::new(body))
            .map_err(|e| transport(e.to_string()))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| transport(e.to_string()))?;
            let status = resp.status();
            let not_found = resp
                .headers()
                .get(crate::api::response::ERROR_KIND_HEADER)
                .is_some_and(|v| v.as_bytes() == crate::api::response::NOT_FOUND.as_bytes());
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?
                .to_bytes();
            Ok(Answer {
                status,
                not_found,
                body: bytes,
            })
        }
        .await;
        conn_task.abort();
        result
    }

    /// Calls `method` with a JSON request and decodes the JSON answer. A
    /// non-200 status or a non-empty `Err` becomes [`ClientError::Plugin`].
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        req: Option<&Req>,
    ) -> Result<Resp, ClientError> {
        self.call_within(method, req, self.timeout).await
    }

    /// Like [`PluginClient::call`], waiting at most `timeout` instead of
    /// the client's default.
    pub async fn call_within<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        req: Option<&Req>,
        timeout: Duration,
    ) -> Result<Resp, ClientError> {
        let body = match req {
            Some(r) => Bytes::from(serde_json::to_vec(r).map_err(|e| ClientError::Transport {
                method: method.into(),
                socket: self.label.clone(),
                reason: format!("cannot encode request: {e}"),
            })?),
            None => Bytes::new(),
        };
        let Answer {
            status,
            not_found,
            body: bytes,
        } = self.answer_within(method, body, timeout).await?;
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
                not_found,
            });
        }
        if let Some(message) = err_of(&bytes) {
            return Err(ClientError::Plugin {
                method: method.into(),
                message,
                not_found,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Transport {
            method: method.into(),
            socket: self.label.clone(),
            reason: format!("cannot decode answer: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            Endpoint::from_url("unix:///run/p/x.sock\n"),
            Ok(Endpoint::Unix("/run/p/x.sock".into()))
        );
        assert_eq!(
            Endpoint::from_url("tcp://127.0.0.1:8080"),
            Ok(Endpoint::Tcp("127.0.0.1:8080".into()))
        );
        assert_eq!(
            Endpoint::from_url("http://plugin.example:9000/"),
            Ok(Endpoint::Tcp("plugin.example:9000".into()))
        );
        assert_eq!(
            Endpoint::from_url("TCP://[::1]:80"),
            Ok(Endpoint::Tcp("[::1]:80".into()))
        );
        for bad in [
            "127.0.0.1:8080",
            "/run/p/x.sock",
            "tcp://host",
            "tcp://:80",
            "tcp://h:0",
            "tcp://h:99999",
            "unix://",
            "https://h:443",
            "ftp://h:21",
        ] {
            assert!(Endpoint::from_url(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn labels_name_the_endpoint() {
        let c = PluginClient::new("/run/x.sock", Duration::from_secs(1));
        assert_eq!(c.socket(), Path::new("/run/x.sock"));
        let c = PluginClient::with_endpoint(
            Endpoint::Tcp("127.0.0.1:9".into()),
            Duration::from_secs(1),
        );
        assert_eq!(c.socket(), Path::new("tcp://127.0.0.1:9"));
        assert_eq!(c.endpoint().to_string(), "tcp://127.0.0.1:9");
    }

    #[test]
    fn timeouts_read_well() {
        assert_eq!(show_duration(Duration::from_secs(2)), "2s");
        assert_eq!(show_duration(Duration::from_secs(130)), "130s");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[tokio::test]
    async fn missing_socket_is_unreachable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = PluginClient::new(dir.path().join("none.sock"), Duration::from_secs(2));
        let e = c
            .call::<(), serde_json::Value>("Plugin.Activate", None)
            .await
            .expect_err("no socket");
        assert!(e.is_unreachable(), "{e}");
        assert!(e.to_string().contains("none.sock"), "{e}");
    }
}
