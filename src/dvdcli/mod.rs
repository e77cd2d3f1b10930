//! `dvdcli`: a drop-in for the Docker Volume Driver CLI that
//! mesos-module-dvdi and Mesos' `docker/volume` isolator shell out to.
//!
//! It speaks the Docker Volume Plugin API v1 to any plugin, found by name
//! the way dockerd finds plugins ([`crate::client::discovery`]), with no
//! Docker engine running. The calls are dvdcli's, in dvdcli's order:
//!
//! | command   | calls                                                     | stdout           |
//! |-----------|-----------------------------------------------------------|------------------|
//! | `mount`   | Activate, Get, Create(opts) unless found¹, Mount (no ID)  | the mountpoint   |
//! | `unmount` | Activate, Get, Unmount (no ID)                            | –                |
//! | `path`    | Activate, Get, Path if Get has no mountpoint              | the mountpoint²  |
//! | `create`  | Activate, Create(opts)                                    | –                |
//! | `remove`  | Activate, Get, Remove                                     | –                |
//! | `get`     | Activate, Get                                             | the name         |
//! | `list`    | Activate, List                                            | names, one a line|
//!
//! ¹ with `--explicitcreate`, a volume Get does not find is an error.
//! ² nothing when the volume is not mounted.
//!
//! Logs go to stderr; the exit status is 0 on success and 1 on any error.
//! Where dvdcli hurt its users this one differs: every request has a
//! bounded timeout (dvdcli waited forever on a hung plugin), an option
//! value keeps every `=` after the first, an option without `=` is an
//! error rather than a panic, and unknown flags or stray arguments are
//! errors rather than ignored.
//!
//! Environment (all optional; see [`Settings::from_env`]):
//! [`ENV_TIMEOUT`], [`ENV_RETRY`], [`ENV_SOCKET_DIR`], [`ENV_SPEC_DIRS`],
//! [`ENV_LOG`].

pub mod args;

use std::ffi::OsString;
use std::fmt::Display;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::discovery::{self, DiscoveryError, SearchPaths};
use crate::client::{ClientError, PluginClient};
use crate::protocol::{CreateRequest, MountRequest, NameRequest};
pub use args::{ArgError, Command, Invocation};

/// Limit of every request (a duration like `2s`, `90s`, `2m`, or seconds).
/// Unset: [`LONG_TIMEOUT`] for Create and Mount, [`SHORT_TIMEOUT`] for the rest.
pub const ENV_TIMEOUT: &str = "DVDCLI_TIMEOUT";
/// How long to keep retrying while the driver cannot be found or refuses
/// connections (default [`RETRY_BUDGET`]; `0` disables retries).
pub const ENV_RETRY: &str = "DVDCLI_RETRY_TIMEOUT";
/// Directory of plugin sockets (default `/run/docker/plugins`).
pub const ENV_SOCKET_DIR: &str = "DVDCLI_SOCKET_DIR";
/// Colon-separated `.spec`/`.json` directories (default
/// `/etc/docker/plugins:/usr/lib/docker/plugins`; empty: none).
pub const ENV_SPEC_DIRS: &str = "DVDCLI_SPEC_DIRS";
/// `error`, `info` (default) or `debug`.
pub const ENV_LOG: &str = "DVDCLI_LOG_LEVEL";

/// dockerd's limit for Create and Mount.
pub const LONG_TIMEOUT: Duration = Duration::from_secs(120);
/// dockerd's limit for every other call.
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(60);
/// dockerd's retry budget: tries at 0, 1, 3, 7 and 15 s, then gives up.
pub const RETRY_BUDGET: Duration = Duration::from_secs(30);

/// How much goes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Errors only.
    Error,
    /// Errors and one line per completed command (default).
    Info,
    /// Also discovery, every request and its duration.
    Debug,
}

/// Run-time settings, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where drivers are looked for.
    pub search: SearchPaths,
    /// Limit of Create and Mount.
    pub long_timeout: Duration,
    /// Limit of every other request.
    pub short_timeout: Duration,
    /// Retry budget for a missing or refusing driver.
    pub retry_budget: Duration,
    /// Log level.
    pub level: Level,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            search: SearchPaths::docker(),
            long_timeout: LONG_TIMEOUT,
            short_timeout: SHORT_TIMEOUT,
            retry_budget: RETRY_BUDGET,
            level: Level::Info,
        }
    }
}

fn parse_duration(var: &str, v: &str, allow_zero: bool) -> Result<Duration, String> {
    let t = v.trim();
    let d = match t.parse::<f64>() {
        Ok(secs) if (0.0..=86_400.0).contains(&secs) => Duration::from_secs_f64(secs),
        Ok(_) => return Err(format!("{var}={v:?}: expected 0 to 86400 seconds")),
        Err(_) => humantime::parse_duration(t)
            .map_err(|e| format!("{var}={v:?} is not a duration like 2s, 90s or 2m ({e})"))?,
    };
    if d.is_zero() && !allow_zero {
        return Err(format!("{var}={v:?}: must be more than zero"));
    }
    if d > Duration::from_secs(86_400) {
        return Err(format!("{var}={v:?}: at most one day"));
    }
    Ok(d)
}

impl Settings {
    /// Settings from the process environment.
    pub fn from_env() -> Result<Settings, String> {
        Self::from_lookup(|k| std::env::var_os(k))
    }

    /// Settings from `get` (the environment, or a test's map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<OsString>) -> Result<Settings, String> {
        let mut s = Settings::default();
        let text = |k: &str| -> Result<Option<String>, String> {
            get(k)
                .map(|v| {
                    v.into_string()
                        .map_err(|v| format!("{k}={v:?} is not UTF-8"))
                })
                .transpose()
        };
        if let Some(v) = text(ENV_TIMEOUT)? {
            let d = parse_duration(ENV_TIMEOUT, &v, false)?;
            s.long_timeout = d;
            s.short_timeout = d;
        }
        if let Some(v) = text(ENV_RETRY)? {
            s.retry_budget = parse_duration(ENV_RETRY, &v, true)?;
        }
        if let Some(v) = get(ENV_SOCKET_DIR) {
            if v.is_empty() {
                return Err(format!("{ENV_SOCKET_DIR} is set but empty"));
            }
            s.search.socket_dir = PathBuf::from(v);
        }
        if let Some(v) = get(ENV_SPEC_DIRS) {
            s.search.spec_dirs = std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
        }
        if let Some(v) = text(ENV_LOG)? {
            s.level = match v.trim().to_ascii_lowercase().as_str() {
                "error" | "warn" | "warning" => Level::Error,
                "info" | "" => Level::Info,
                "debug" | "trace" => Level::Debug,
                _ => return Err(format!("{ENV_LOG}={v:?}: expected error, info or debug")),
            };
        }
        Ok(s)
    }
}

/// Writes log lines to stderr.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    level: Level,
}

impl Log {
    /// A logger at `level`.
    pub fn new(level: Level) -> Self {
        Log { level }
    }

    fn at(&self, level: Level, tag: &str, msg: impl Display) {
        if level <= self.level {
            // Nothing sensible to do if stderr is gone.
            let _ = writeln!(std::io::stderr().lock(), "dvdcli: {tag}: {msg}");
        }
    }

    /// An error.
    pub fn error(&self, msg: impl Display) {
        self.at(Level::Error, "error", msg)
    }

    /// A completed step.
    pub fn info(&self, msg: impl Display) {
        self.at(Level::Info, "info", msg)
    }

    /// Detail.
    pub fn debug(&self, msg: impl Display) {
        self.at(Level::Debug, "debug", msg)
    }
}

/// Why a command failed. Every message names the driver, and the volume
/// and endpoint where there is one.
#[derive(Debug, thiserror::Error)]
pub enum DvdError {
    /// A bad command line.
    #[error(transparent)]
    Args(#[from] ArgError),
    /// A bad environment variable.
    #[error("{0}")]
    Settings(String),
    /// The driver could not be found.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The driver failed outside of any one volume.
    #[error("volume driver {driver:?} ({endpoint}): {reason}")]
    Driver {
        /// Driver name.
        driver: String,
        /// Where it listens.
        endpoint: String,
        /// What happened.
        reason: String,
    },
    /// An operation on a volume failed.
    #[error("volume {volume:?} on volume driver {driver:?} ({endpoint}): {reason}")]
    Volume {
        /// Volume name.
        volume: String,
        /// Driver name.
        driver: String,
        /// Where it listens.
        endpoint: String,
        /// What happened.
        reason: String,
    },
}

/// Checks a volume name before anything is sent: dvdcli passes it on
/// verbatim, and plugins use it as a file name.
pub fn validate_volume_name(name: &str) -> Result<(), ArgError> {
    match discovery::file_name_problem(name) {
        None => Ok(()),
        Some(why) => {
            let shown: String = name.chars().take(80).collect();
            Err(ArgError(format!("volume name {shown:?} is invalid: {why}")))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ActivateAnswer {
    #[serde(rename = "Implements", default)]
    implements: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct VolumeAnswer {
    #[serde(rename = "Name", default)]
    name: Option<String>,
    #[serde(rename = "Mountpoint", default)]
    mountpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct GetAnswer {
    #[serde(rename = "Volume", default)]
    volume: Option<VolumeAnswer>,
}

#[derive(Debug, Default, Deserialize)]
struct MountpointAnswer {
    #[serde(rename = "Mountpoint", default)]
    mountpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ListAnswer {
    // Go plugins send `null` for an empty list.
    #[serde(rename = "Volumes", default)]
    volumes: Option<Vec<Option<VolumeAnswer>>>,
}

fn clip(s: &str) -> String {
    let t = s.trim();
    if t.chars().count() > 300 {
        format!("{}…", t.chars().take(300).collect::<String>())
    } else {
        t.to_string()
    }
}

/// Runs `f` until it succeeds, fails for good, or dockerd's backoff
/// (1 s, doubling, at most 30 s) would overrun `budget`.
async fn retry<T, E, F, Fut>(
    budget: Duration,
    log: &Log,
    retryable: impl Fn(&E) -> bool,
    f: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_scaled(Duration::from_secs(1), budget, log, retryable, f).await
}

/// [`retry`] with backoff steps of `unit` instead of one second.
async fn retry_scaled<T, E, F, Fut>(
    unit: Duration,
    budget: Duration,
    log: &Log,
    retryable: impl Fn(&E) -> bool,
    mut f: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut tries = 0u32;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if retryable(&e) => {
                let next = unit * (1u32 << tries.min(5)).min(30);
                if start.elapsed() + next >= budget {
                    return Err(e);
                }
                log.info(format_args!(
                    "{e}; retrying in {}",
                    humantime::format_duration(next)
                ));
                tokio::time::sleep(next).await;
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// An activated driver.
struct Session<'a> {
    driver: String,
    client: PluginClient,
    settings: &'a Settings,
    log: Log,
}

impl<'a> Session<'a> {
    async fn open(driver: &str, settings: &'a Settings, log: Log) -> Result<Self, DvdError> {
        let found = retry(
            settings.retry_budget,
            &log,
            DiscoveryError::is_not_found,
            || async { discovery::resolve(driver, &settings.search) },
        )
        .await?;
        log.debug(format_args!(
            "volume driver {driver:?} is {} (found {})",
            found.endpoint,
            found.source.display()
        ));
        let s = Session {
            driver: driver.to_string(),
            client: PluginClient::with_endpoint(found.endpoint, settings.short_timeout),
            settings,
            log,
        };
        let a: ActivateAnswer = s
            .call("Plugin.Activate", None::<&()>, settings.short_timeout)
            .await
            .map_err(|e| s.driver_error(e))?;
        let implements = a.implements.unwrap_or_default();
        if !implements.iter().any(|i| i == "VolumeDriver") {
            return Err(s.driver_error(format_args!(
                "the plugin does not implement VolumeDriver (it implements {implements:?})"
            )));
        }
        Ok(s)
    }

    fn endpoint(&self) -> String {
        self.client.endpoint().to_string()
    }

    fn driver_error(&self, reason: impl Display) -> DvdError {
        DvdError::Driver {
            driver: self.driver.clone(),
            endpoint: self.endpoint(),
            reason: reason.to_string(),
        }
    }

    fn volume_error(&self, volume: &str, reason: impl Display) -> DvdError {
        DvdError::Volume {
            volume: volume.to_string(),
            driver: self.driver.clone(),
            endpoint: self.endpoint(),
            reason: reason.to_string(),
        }
    }

    /// One request, retried only while nothing listens; decoded leniently
    /// (an empty 200 body is an empty answer; unknown and null fields are
    /// ignored), with dockerd's error rules: a non-200 status is an error
    /// carrying `Err` or the raw body, and so is a non-empty `Err`.
    async fn call<Req: Serialize, Resp: DeserializeOwned + Default>(
        &self,
        method: &str,
        req: Option<&Req>,
        timeout: Duration,
    ) -> Result<Resp, ClientError> {
        let socket = || self.client.socket().to_path_buf();
        let body = match req {
            Some(r) => Bytes::from(serde_json::to_vec(r).map_err(|e| ClientError::Transport {
                method: method.into(),
                socket: socket(),
                reason: format!("cannot encode request: {e}"),
            })?),
            None => Bytes::new(),
        };
        let started = Instant::now();
        let (status, bytes) = retry(
            self.settings.retry_budget,
            &self.log,
            ClientError::is_unreachable,
            || self.client.call_raw_within(method, body.clone(), timeout),
        )
        .await?;
        self.log.debug(format_args!(
            "{method}{}{}: HTTP {} in {:.3}s",
            if body.is_empty() { "" } else { " " },
            String::from_utf8_lossy(&body),
            status.as_u16(),
            started.elapsed().as_secs_f64()
        ));
        let text = String::from_utf8_lossy(&bytes);
        let parsed = if text.trim().is_empty() {
            Ok(serde_json::Value::Object(Default::default()))
        } else {
            serde_json::from_slice::<serde_json::Value>(&bytes)
        };
        let err_field = parsed
            .as_ref()
            .ok()
            .and_then(|v| v.get("Err"))
            .and_then(|e| e.as_str())
            .filter(|e| !e.is_empty())
            .map(str::to_string);
        if status != StatusCode::OK {
            return Err(ClientError::Plugin {
                method: method.into(),
                message: err_field.unwrap_or_else(|| format!("HTTP {status}: {}", clip(&text))),
                not_found: false,
            });
        }
        let value = parsed.map_err(|e| ClientError::Transport {
            method: method.into(),
            socket: socket(),
            reason: format!("answer is not JSON ({e}): {}", clip(&text)),
        })?;
        if let Some(message) = err_field {
            return Err(ClientError::Plugin {
                method: method.into(),
                message,
                not_found: false,
            });
        }
        if value.is_null() {
            return Ok(Resp::default());
        }
        serde_json::from_value(value).map_err(|e| ClientError::Transport {
            method: method.into(),
            socket: socket(),
            reason: format!("cannot decode answer: {e}: {}", clip(&text)),
        })
    }

    /// `Get`: `Ok(Some)` found, `Ok(None)` the plugin says it does not
    /// know the volume (an answer with an error or without a volume),
    /// `Err` the plugin could not be asked.
    async fn get(&self, name: &str) -> Result<Result<VolumeAnswer, String>, DvdError> {
        let req = NameRequest { name: name.into() };
        match self
            .call::<_, GetAnswer>("VolumeDriver.Get", Some(&req), self.settings.short_timeout)
            .await
        {
            Ok(GetAnswer { volume: Some(v) }) => Ok(Ok(v)),
            Ok(GetAnswer { volume: None }) => Ok(Err("VolumeDriver.Get: no such volume".into())),
            Err(e @ ClientError::Plugin { .. }) => Ok(Err(e.to_string())),
            Err(e) => Err(self.volume_error(name, e)),
        }
    }

    /// `Get` for commands that need the volume to exist.
    async fn get_existing(&self, name: &str) -> Result<VolumeAnswer, DvdError> {
        self.get(name)
            .await?
            .map_err(|why| self.volume_error(name, why))
    }

    async fn create(
        &self,
        name: &str,
        opts: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), DvdError> {
        let req = CreateRequest {
            name: name.into(),
            opts: Some(opts.clone()),
        };
        self.call::<_, serde::de::IgnoredAny>(
            "VolumeDriver.Create",
            Some(&req),
            self.settings.long_timeout,
        )
        .await
        .map_err(|e| self.volume_error(name, e))?;
        Ok(())
    }
}

fn usable_path(s: Option<String>) -> Option<String> {
    s.filter(|p| !p.is_empty())
}

/// Runs one command; returns the lines for stdout.
pub async fn execute(
    inv: &Invocation,
    settings: &Settings,
    log: Log,
) -> Result<Vec<String>, DvdError> {
    // Everything that can be checked is checked before any request.
    let driver = inv
        .driver
        .as_deref()
        .ok_or_else(|| ArgError("missing --volumedriver (the volume driver name)".into()))?;
    discovery::validate_name(driver)?;
    let name = if inv.command.needs_name() {
        let n = inv
            .name
            .as_deref()
            .ok_or_else(|| ArgError("missing --volumename (the volume name)".into()))?;
        validate_volume_name(n)?;
        n
    } else {
        ""
    };
    let opts = args::parse_opts(&inv.opts)?;
    let started = Instant::now();
    let s = Session::open(driver, settings, log).await?;
    let took = || format!("{:.2}s", started.elapsed().as_secs_f64());
    match inv.command {
        Command::Mount => {
            match s.get(name).await? {
                Ok(_) => {
                    if !opts.is_empty() {
                        log.info(format_args!(
                            "volume {name:?} exists; --volumeopts apply only when a volume is created, so they are not applied"
                        ));
                    }
                }
                Err(why) if inv.explicit_create => {
                    return Err(s.volume_error(
                        name,
                        format_args!(
                            "it does not exist and --explicitcreate forbids creating it ({why})"
                        ),
                    ));
                }
                Err(why) => {
                    log.debug(format_args!(
                        "volume {name:?} not found ({why}); creating it"
                    ));
                    s.create(name, &opts).await?;
                    log.info(format_args!(
                        "volume {name:?} created on volume driver {driver:?}"
                    ));
                }
            }
            let req = MountRequest {
                name: name.into(),
                id: None,
            };
            let a: MountpointAnswer = s
                .call("VolumeDriver.Mount", Some(&req), settings.long_timeout)
                .await
                .map_err(|e| s.volume_error(name, e))?;
            let Some(mp) = usable_path(a.mountpoint) else {
                return Err(
                    s.volume_error(name, "VolumeDriver.Mount answered with an empty mountpoint")
                );
            };
            if mp.chars().any(char::is_control) {
                return Err(s.volume_error(
                    name,
                    format_args!("VolumeDriver.Mount answered with an unusable mountpoint {mp:?}"),
                ));
            }
            log.info(format_args!(
                "volume {name:?} mounted at {mp} (volume driver {driver:?}, {})",
                took()
            ));
            Ok(vec![mp])
        }
        Command::Unmount => {
            s.get_existing(name).await?;
            let req = MountRequest {
                name: name.into(),
                id: None,
            };
            s.call::<_, serde::de::IgnoredAny>(
                "VolumeDriver.Unmount",
                Some(&req),
                settings.short_timeout,
            )
            .await
            .map_err(|e| s.volume_error(name, e))?;
            log.info(format_args!(
                "volume {name:?} unmounted (volume driver {driver:?}, {})",
                took()
            ));
            Ok(vec![])
        }
        Command::Path => {
            let v = s.get_existing(name).await?;
            let mp = match usable_path(v.mountpoint) {
                Some(mp) => Some(mp),
                None => {
                    let req = NameRequest { name: name.into() };
                    let a: MountpointAnswer = s
                        .call("VolumeDriver.Path", Some(&req), settings.short_timeout)
                        .await
                        .map_err(|e| s.volume_error(name, e))?;
                    usable_path(a.mountpoint)
                }
            };
            match mp {
                Some(mp) => Ok(vec![mp]),
                None => {
                    log.info(format_args!("volume {name:?} is not mounted"));
                    Ok(vec![])
                }
            }
        }
        Command::Create => {
            s.create(name, &opts).await?;
            log.info(format_args!(
                "volume {name:?} created on volume driver {driver:?} ({})",
                took()
            ));
            Ok(vec![])
        }
        Command::Remove => {
            s.get_existing(name).await?;
            let req = NameRequest { name: name.into() };
            s.call::<_, serde::de::IgnoredAny>(
                "VolumeDriver.Remove",
                Some(&req),
                settings.short_timeout,
            )
            .await
            .map_err(|e| s.volume_error(name, e))?;
            log.info(format_args!(
                "volume {name:?} removed from volume driver {driver:?} ({})",
                took()
            ));
            Ok(vec![])
        }
        Command::Get => {
            let v = s.get_existing(name).await?;
            Ok(vec![v
                .name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| name.to_string())])
        }
        Command::List => {
            let a: ListAnswer = s
                .call(
                    "VolumeDriver.List",
                    Some(&serde_json::json!({})),
                    settings.short_timeout,
                )
                .await
                .map_err(|e| s.driver_error(e))?;
            Ok(a.volumes
                .unwrap_or_default()
                .into_iter()
                .flatten()
                .filter_map(|v| v.name)
                .filter(|n| !n.is_empty())
                .collect())
        }
        Command::Version | Command::Help => Ok(vec![]),
    }
}

/// The usage text.
pub fn usage() -> String {
    format!(
        "Docker volume driver client for Mesos (dvdcli-compatible), shipped with Berth

Usage:
  dvdcli COMMAND --volumedriver=DRIVER [--volumename=NAME] [FLAGS]

Commands:
  mount     create the volume unless it exists, mount it, print its path
  unmount   unmount the volume
  path      print the path of the volume if it is mounted
  create    create a volume
  remove    remove a volume
  get       print the volume's name if the driver has it
  list      print the names of the driver's volumes
  version   print the version

Flags:
  --volumedriver=DRIVER      plugin name, found as Docker finds plugins
  --volumename=NAME          volume name
  --volumeopts=K=V[,K=V...]  create options (create, mount); repeatable; a value
                             keeps any '=' after the first; quote an item with a
                             comma in it: --volumeopts='\"k=a,b\"'
  --explicitcreate[=BOOL]    mount: fail instead of creating a missing volume
                             (also spelled --explicitCreate)
  -h, --help                 this text
  --version                  the version (as the version command)

Environment:
  {ENV_TIMEOUT:<22} limit of each request, e.g. 30s (default: 120s for
                         Create and Mount, 60s for the others)
  {ENV_RETRY:<22} keep retrying this long while the driver is missing or
                         refuses connections (default 30s: tries at 0, 1, 3,
                         7 and 15 s; 0 disables retries)
  {ENV_SOCKET_DIR:<22} plugin sockets (default /run/docker/plugins)
  {ENV_SPEC_DIRS:<22} colon-separated .spec/.json directories (default
                         /etc/docker/plugins:/usr/lib/docker/plugins)
  {ENV_LOG:<22} error, info (default) or debug; logs go to stderr

The mountpoint alone goes to stdout. Exit status: 0 on success, 1 on any error.
"
    )
}

/// The `version` text: `dvdcli VERSION`, then dvdcli's own lines.
pub fn version() -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "dvdcli".into());
    format!(
        "dvdcli {v} (Berth)\nBinary: {exe}\nSemVer: {v}\nOsArch: {os}-{arch}\n",
        v = env!("CARGO_PKG_VERSION"),
        os = std::env::consts::OS,
        arch = std::env::consts::ARCH,
    )
}

fn emit(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            Log::new(Level::Error).error(format_args!("cannot write to stdout: {e}"));
            ExitCode::from(1)
        }
    }
}

/// The whole program: parses `args` (without the program name), runs the
/// command, prints, and returns the exit status (0 or 1).
pub fn run<I, S>(args: I) -> ExitCode
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let fail = |e: &dyn Display| {
        Log::new(Level::Error).error(e);
        ExitCode::from(1)
    };
    let inv = match args::parse(args) {
        Ok(i) => i,
        Err(e) => {
            Log::new(Level::Error).error(&e);
            let _ = writeln!(std::io::stderr(), "Run 'dvdcli --help' for usage.");
            return ExitCode::from(1);
        }
    };
    match inv.command {
        Command::Help => return emit(&usage()),
        Command::Version => return emit(&version()),
        _ => {}
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => return fail(&DvdError::Settings(e)),
    };
    let log = Log::new(settings.level);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format_args!("cannot start the runtime: {e}")),
    };
    match rt.block_on(execute(&inv, &settings, log)) {
        Ok(lines) => {
            let mut text = String::new();
            for l in lines {
                text.push_str(&l);
                text.push('\n');
            }
            emit(&text)
        }
        Err(e) => fail(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        let m: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Settings::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_are_dockers() {
        let s = settings(&[]).expect("defaults");
        assert_eq!(s.long_timeout, Duration::from_secs(120));
        assert_eq!(s.short_timeout, Duration::from_secs(60));
        assert_eq!(s.retry_budget, Duration::from_secs(30));
        assert_eq!(s.search, SearchPaths::docker());
        assert_eq!(s.level, Level::Info);
    }

    #[test]
    fn environment_overrides() {
        let s = settings(&[
            (ENV_TIMEOUT, "2s"),
            (ENV_RETRY, "0"),
            (ENV_SOCKET_DIR, "/tmp/run"),
            (ENV_SPEC_DIRS, "/tmp/a::/tmp/b"),
            (ENV_LOG, "DEBUG"),
        ])
        .expect("valid");
        assert_eq!(s.long_timeout, Duration::from_secs(2));
        assert_eq!(s.short_timeout, Duration::from_secs(2));
        assert_eq!(s.retry_budget, Duration::ZERO);
        assert_eq!(s.search.socket_dir, PathBuf::from("/tmp/run"));
        assert_eq!(
            s.search.spec_dirs,
            [PathBuf::from("/tmp/a"), PathBuf::from("/tmp/b")]
        );
        assert_eq!(s.level, Level::Debug);
        let s = settings(&[(ENV_TIMEOUT, "1.5"), (ENV_SPEC_DIRS, "")]).expect("valid");
        assert_eq!(s.short_timeout, Duration::from_millis(1500));
        assert!(s.search.spec_dirs.is_empty());
        for (k, v) in [
            (ENV_TIMEOUT, "0"),
            (ENV_TIMEOUT, "soon"),
            (ENV_TIMEOUT, "-1"),
            (ENV_TIMEOUT, "2d"),
            (ENV_RETRY, "x"),
            (ENV_LOG, "loud"),
            (ENV_SOCKET_DIR, ""),
        ] {
            let e = settings(&[(k, v)]).expect_err(&format!("{k}={v}"));
            assert!(e.contains(k), "{e}");
        }
    }

    #[test]
    fn volume_names() {
        for ok in ["test12345", "a.b-c_d", "x y", "Ω"] {
            assert!(validate_volume_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "/abs", "a\0b", "a\nb", ".", ".."] {
            assert!(validate_volume_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn nothing_is_sent_for_bad_input() {
        // A socket directory that does not exist: any request would fail
        // with "not found", so these errors prove validation came first.
        let s = Settings {
            search: SearchPaths {
                socket_dir: PathBuf::from("/nonexistent/dvdcli-test"),
                spec_dirs: vec![],
            },
            retry_budget: Duration::ZERO,
            ..Settings::default()
        };
        let log = Log::new(Level::Error);
        for (argv, needle) in [
            (&["mount", "--volumename=v"][..], "--volumedriver"),
            (&["mount", "--volumedriver=d"][..], "--volumename"),
            (
                &["mount", "--volumedriver=a/b", "--volumename=v"][..],
                "'/'",
            ),
            (
                &["mount", "--volumedriver=d", "--volumename=a/b"][..],
                "'/'",
            ),
            (
                &[
                    "mount",
                    "--volumedriver=d",
                    "--volumename=v",
                    "--volumeopts=size",
                ][..],
                "KEY=VALUE",
            ),
        ] {
            let inv = args::parse(argv).expect("parses");
            let e = execute(&inv, &s, log).await.expect_err("refused");
            assert!(e.to_string().contains(needle), "{argv:?}: {e}");
        }
        let inv = args::parse(["list", "--volumedriver=ghost"]).expect("parses");
        let e = execute(&inv, &s, log).await.expect_err("absent");
        assert!(e.to_string().contains("not found"), "{e}");
    }

    #[tokio::test]
    async fn retry_follows_dockers_backoff() {
        // Docker's schedule in units of 50 ms instead of seconds.
        let unit = Duration::from_millis(50);
        let log = Log::new(Level::Error);
        let start = Instant::now();
        let mut at = Vec::new();
        let r: Result<(), String> = retry_scaled(
            unit,
            unit * 30,
            &log,
            |_| true,
            || {
                at.push(start.elapsed().as_millis() / unit.as_millis());
                async { Err("down".to_string()) }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(at, [0, 1, 3, 7, 15], "tries at 0, 1, 3, 7, 15 units");
        let mut n = 0;
        let r: Result<(), String> = retry(
            Duration::ZERO,
            &log,
            |_| true,
            || {
                n += 1;
                async { Err("down".to_string()) }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(n, 1, "budget 0: one try");
        let mut n = 0;
        let r: Result<(), String> = retry(
            RETRY_BUDGET,
            &log,
            |_| false,
            || {
                n += 1;
                async { Err("fatal".to_string()) }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(n, 1, "not retryable: one try");
    }
}
