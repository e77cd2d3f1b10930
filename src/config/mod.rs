//! Configuration: TOML at `/etc/berth/config.toml` (or `--config PATH`),
//! read into raw structs that reject unknown keys, then validated into
//! typed [`Settings`]. Every error names the file, the key and the reason.
//!
//! Volume settings (`[volume.*]`) mirror libStorage's integration
//! settings and apply to every service; a `[services.NAME.volume.*]` table
//! overrides them key by key for one service.

mod adopt;
mod raw;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::volume::{parse_size, FsType, Scope};

pub use adopt::Adopt;
pub use raw::RawConfig;

/// The default config path.
pub const DEFAULT_PATH: &str = "/etc/berth/config.toml";

/// Group of the plugin sockets when `[daemon] socket_group` is not written
/// (and the host has it): Docker's, as in systemd/berth@.socket.
pub const DEFAULT_SOCKET_GROUP: &str = "docker";

/// A configuration error.
#[derive(Debug, thiserror::Error)]
#[error("config {file}: {detail}")]
pub struct ConfigError {
    /// The file (or "built-in default").
    pub file: String,
    /// Key and reason, or the TOML parser's message.
    pub detail: String,
}

/// Validated settings for the whole daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where the settings came from (`None`: built-in default).
    pub source: Option<PathBuf>,
    /// `[daemon]`.
    pub daemon: DaemonSettings,
    /// `[services.*]`, by name.
    pub services: BTreeMap<String, ServiceSettings>,
}

/// `[daemon]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// Docker's plugin socket directory.
    pub plugins_dir: PathBuf,
    /// Where state records and images live.
    pub state_dir: PathBuf,
    /// Where volumes are mounted (`<mount_dir>/<name>`).
    pub mount_dir: PathBuf,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log_level: String,
    /// Mode of sockets Berth binds itself.
    pub socket_mode: u32,
    /// Group of sockets Berth binds itself (`None`: berthd's own). Unwritten:
    /// [`DEFAULT_SOCKET_GROUP`] where it exists and berthd runs as root.
    pub socket_group: Option<String>,
    /// Upper bound for one external command (mkfs, blkid).
    pub command_timeout: Duration,
    /// Connections served at once over all sockets.
    pub max_connections: usize,
}

/// One named service: a plugin socket and its driver.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSettings {
    /// The plugin name (`--volume-driver NAME`, socket `NAME.sock`).
    pub name: String,
    /// The storage driver and its settings.
    pub driver: DriverSettings,
    /// Scope reported by Capabilities.
    pub scope: Scope,
    /// Volume lifecycle policy.
    pub policy: Policy,
    /// Blocking capacity and deadlines of storage work.
    pub limits: Limits,
}

/// How much blocking capacity a service's storage work gets, and how long
/// a request waits for it (`[services.NAME.limits]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Storage operations of this service that run at once.
    pub workers: usize,
    /// Deadline of a create (clones and copies included) and a snapshot.
    pub create_timeout: Duration,
    /// Deadline of a mount.
    pub mount_timeout: Duration,
    /// Deadline of every other storage operation.
    pub timeout: Duration,
    /// How often used/free figures are sampled in the background.
    pub sample_every: Duration,
}

impl Default for Limits {
    /// Inside Docker's own timeouts: Create and Mount 2 min, others 1 min.
    fn default() -> Self {
        Limits {
            workers: 8,
            create_timeout: Duration::from_secs(110),
            mount_timeout: Duration::from_secs(110),
            timeout: Duration::from_secs(55),
            sample_every: Duration::from_secs(5),
        }
    }
}

fn parse_limits(raw: Option<&raw::RawLimits>, key: &str) -> Result<Limits, String> {
    let mut l = Limits::default();
    let Some(r) = raw else { return Ok(l) };
    if let Some(w) = r.workers {
        if !(1..=256).contains(&w) {
            return Err(format!(
                "{key}.limits.workers: {w} is not between 1 and 256"
            ));
        }
        l.workers = w;
    }
    let dur = |v: &Option<String>, name: &str, into: &mut Duration| -> Result<(), String> {
        if let Some(t) = v {
            let d = humantime::parse_duration(t)
                .map_err(|e| format!("{key}.limits.{name}: {t:?} is not a duration ({e})"))?;
            if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                return Err(format!("{key}.limits.{name}: must be between 100ms and 1h"));
            }
            *into = d;
        }
        Ok(())
    };
    dur(&r.create_timeout, "create_timeout", &mut l.create_timeout)?;
    dur(&r.mount_timeout, "mount_timeout", &mut l.mount_timeout)?;
    dur(&r.timeout, "timeout", &mut l.timeout)?;
    dur(&r.sample_every, "sample_every", &mut l.sample_every)?;
    Ok(l)
}

/// Driver-specific settings.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverSettings {
    /// Loop-device volumes: sparse image files in `image_dir`.
    Loop {
        /// Directory of the image files (the `default` pool).
        image_dir: PathBuf,
        /// Storage pools besides `default` (the `volumeType` create
        /// option): pool name → image directory.
        pools: BTreeMap<String, PathBuf>,
    },
    /// CephFS subvolumes (shared by every host at once).
    Cephfs {
        /// The cluster.
        ceph: CephSettings,
        /// CephFS filesystem name.
        filesystem: String,
        /// Subvolume group holding the service's volumes.
        group: String,
    },
    /// RBD images (one writer at a time, moved between hosts).
    Rbd {
        /// The cluster.
        ceph: CephSettings,
        /// RADOS pool of the images.
        pool: String,
        /// Images without Berth metadata in `pool` to show and mount as
        /// volumes (`adopt = "rexray"`); `None`: only Berth's.
        adopt: Option<Adopt>,
    },
}

/// How a Ceph-backed service reaches its cluster (`[services.NAME.ceph]`).
#[derive(Debug, Clone, PartialEq)]
pub struct CephSettings {
    /// ceph.conf.
    pub conf: PathBuf,
    /// Keyring (`None`: whatever ceph.conf says).
    pub keyring: Option<PathBuf>,
    /// Client ID (`admin` for `client.admin`).
    pub client: String,
    /// This host's name in locks and errors (default: the hostname).
    pub host: String,
    /// Longest wait for the cluster in one step.
    pub timeout: Duration,
}

impl DriverSettings {
    /// The driver's name as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            DriverSettings::Loop { .. } => "loop",
            DriverSettings::Cephfs { .. } => "cephfs",
            DriverSettings::Rbd { .. } => "rbd",
        }
    }
}

/// Defaults applied to a create request that leaves an option out.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateDefaults {
    /// Bytes.
    pub size: u64,
    /// Filesystem.
    pub fs_type: FsType,
    /// Volume type (storage pool) name.
    pub volume_type: String,
    /// IOPS (recorded).
    pub iops: u64,
    /// Availability zone (recorded).
    pub availability_zone: String,
}

/// libStorage's integration settings, resolved for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `volume.create.default.*`.
    pub create_defaults: CreateDefaults,
    /// `volume.create.implicit`: Mount of an unknown name creates it.
    pub create_implicit: bool,
    /// `volume.create.disable`: Create succeeds without creating.
    pub create_disable: bool,
    /// `volume.create.refuseUnknownType`: a `volumeType` that names no
    /// pool of the service is refused (by default it is recorded and the
    /// volume goes to the default pool, as REX-Ray scripts expect).
    pub create_refuse_unknown_type: bool,
    /// `volume.remove.disable`: Remove succeeds without removing.
    pub remove_disable: bool,
    /// `volume.remove.force`: Remove unmounts a volume in use first.
    pub remove_force: bool,
    /// `volume.mount.preempt`: take a volume attached elsewhere.
    pub mount_preempt: bool,
    /// `volume.mount.rootPath`: sub-directory returned to Docker.
    pub root_path: String,
    /// `volume.unmount.ignoreusedcount`: every Unmount unmounts.
    pub ignore_used_count: bool,
    /// `volume.data.mode`: mode of a new data directory.
    pub data_mode: u32,
    /// `volume.data.uid`.
    pub data_uid: u32,
    /// `volume.data.gid`.
    pub data_gid: u32,
}

impl Settings {
    /// The built-in default: one `berth` service on the loop driver.
    pub fn builtin() -> Self {
        // The built-in default is a fixed, valid document.
        match Self::from_str_with_source("", None) {
            Ok(s) => s,
            Err(e) => unreachable!("built-in default config is invalid: {e}"),
        }
    }

    /// Loads `path`. With `explicit == false` a missing file means the
    /// built-in default; with `explicit == true` it is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        Self::load_only(path, explicit, &[])
    }

    /// Like [`Settings::load`], keeping only the services named in `only`
    /// (all when empty). A named service the file does not declare is a
    /// loop service with the global `[volume]` settings, so a systemd
    /// template instance `berth@NAME` works without editing the file.
    pub fn load_only(path: &Path, explicit: bool, only: &[String]) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse_only(&text, Some(path), only),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Self::parse_only("", None, only)
            }
            Err(e) => Err(ConfigError {
                file: path.display().to_string(),
                detail: format!("cannot read: {e}"),
            }),
        }
    }

    /// Parses and validates TOML text.
    pub fn from_str_with_source(text: &str, source: Option<&Path>) -> Result<Self, ConfigError> {
        Self::parse_only(text, source, &[])
    }

    fn parse_only(text: &str, source: Option<&Path>, only: &[String]) -> Result<Self, ConfigError> {
        let file = source
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in default".into());
        let err = |detail: String| ConfigError {
            file: file.clone(),
            detail,
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| err(e.to_string().trim().to_string()))?;
        let daemon = resolve_daemon(&raw).map_err(err)?;
        let mut services = BTreeMap::new();
        let raw_services = raw.services.clone().unwrap_or_else(|| {
            let mut m = BTreeMap::new();
            m.insert("berth".to_string(), raw::RawService::default_loop());
            m
        });
        let raw_services = if only.is_empty() {
            raw_services
        } else {
            only.iter()
                .map(|n| {
                    let rs = raw_services
                        .get(n)
                        .cloned()
                        .unwrap_or_else(raw::RawService::default_loop);
                    (n.clone(), rs)
                })
                .collect()
        };
        if raw_services.is_empty() {
            return Err(err(
                "services: at least one service must be configured".into()
            ));
        }
        for (name, rs) in &raw_services {
            let key = format!("services.{name}");
            validate_service_name(name).map_err(|r| err(format!("{key}: {r}")))?;
            let policy =
                resolve_policy(raw.volume.as_ref(), rs.volume.as_ref(), &key).map_err(err)?;
            let mut driver = match rs.driver.as_str() {
                "loop" => DriverSettings::Loop {
                    image_dir: match &rs.image_dir {
                        Some(p) => absolute(p, &format!("{key}.image_dir")).map_err(err)?,
                        None => daemon.state_dir.join("images").join(name),
                    },
                    pools: BTreeMap::new(),
                },
                "cephfs" | "rbd" => {
                    let rc = rs.ceph.clone().unwrap_or_default();
                    let ceph = resolve_ceph(&rc, &format!("{key}.ceph")).map_err(err)?;
                    if rs.image_dir.is_some() || rs.pools.is_some() {
                        return Err(err(format!(
                            "{key}: image_dir and pools belong to the loop driver; a {} service stores its volumes in Ceph",
                            rs.driver
                        )));
                    }
                    if rs.driver == "cephfs" {
                        if rc.pool.is_some() {
                            return Err(err(format!("{key}.ceph.pool: the cephfs driver uses `filesystem` and `group`, not `pool`")));
                        }
                        if rc.adopt.is_some() {
                            return Err(err(format!(
                                "{key}.ceph.adopt: only rbd services adopt images"
                            )));
                        }
                        DriverSettings::Cephfs {
                            ceph,
                            filesystem: plain(
                                rc.filesystem.as_deref(),
                                "cephfs",
                                &format!("{key}.ceph.filesystem"),
                            )
                            .map_err(err)?,
                            group: plain(
                                rc.group.as_deref(),
                                "berth",
                                &format!("{key}.ceph.group"),
                            )
                            .map_err(err)?,
                        }
                    } else {
                        if rc.filesystem.is_some() || rc.group.is_some() {
                            return Err(err(format!(
                                "{key}.ceph: the rbd driver uses `pool`, not `filesystem`/`group`"
                            )));
                        }
                        DriverSettings::Rbd {
                            ceph,
                            pool: plain(rc.pool.as_deref(), "rbd", &format!("{key}.ceph.pool"))
                                .map_err(err)?,
                            adopt: adopt::resolve(
                                rc.adopt.as_deref(),
                                &format!("{key}.ceph.adopt"),
                            )
                            .map_err(err)?,
                        }
                    }
                }
                other => {
                    return Err(err(format!(
                        "{key}.driver: unknown driver {other:?} (available: loop, cephfs, rbd)"
                    )))
                }
            };
            if rs.ceph.is_some() && matches!(driver, DriverSettings::Loop { .. }) {
                return Err(err(format!(
                    "{key}.ceph: only cephfs and rbd services have a [ceph] table"
                )));
            }
            let mut pools = BTreeMap::new();
            for (pool, rp) in rs.pools.iter().flatten() {
                let pkey = format!("{key}.pools.{pool}");
                validate_pool_name(pool).map_err(|r| err(format!("{pkey}: {r}")))?;
                let dir = absolute(&rp.image_dir, &format!("{pkey}.image_dir")).map_err(err)?;
                pools.insert(pool.clone(), dir);
            }
            if let DriverSettings::Loop { pools: p, .. } = &mut driver {
                *p = pools.clone();
            }
            let default_type = &policy.create_defaults.volume_type;
            if !default_type.is_empty()
                && default_type != DEFAULT_POOL
                && !pools.contains_key(default_type)
            {
                let local = rs
                    .volume
                    .as_ref()
                    .and_then(|v| v.create.as_ref())
                    .and_then(|c| c.default.as_ref())
                    .is_some_and(|d| d.volume_type.is_some());
                let where_ = if local {
                    format!("{key}.volume.create.default.type")
                } else {
                    "volume.create.default.type".to_string()
                };
                return Err(err(format!(
                    "{where_}: pool {default_type:?} is not configured for service {name} (pools: {}); add [{key}.pools.{default_type}]",
                    std::iter::once(DEFAULT_POOL)
                        .chain(pools.keys().map(String::as_str))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let scope = match rs.scope.as_deref() {
                // Ceph volumes are reachable from every host.
                None if !matches!(driver, DriverSettings::Loop { .. }) => Scope::Global,
                None | Some("local") => Scope::Local,
                Some("global") => Scope::Global,
                Some(o) => {
                    return Err(err(format!(
                        "{key}.scope: {o:?} is not a scope (local or global)"
                    )))
                }
            };
            services.insert(
                name.clone(),
                ServiceSettings {
                    name: name.clone(),
                    driver,
                    scope,
                    policy,
                    limits: parse_limits(rs.limits.as_ref(), &key).map_err(err)?,
                },
            );
        }
        // Two loop services (or pools) must not share an image directory,
        // nor nest one in another: each reconciles (and cleans) its own.
        let mut seen: Vec<(PathBuf, String)> = Vec::new();
        for s in services.values() {
            let DriverSettings::Loop { image_dir, pools } = &s.driver else {
                continue;
            };
            let dirs =
                std::iter::once((image_dir.clone(), format!("services.{}.image_dir", s.name)))
                    .chain(pools.iter().map(|(p, d)| {
                        (
                            d.clone(),
                            format!("services.{}.pools.{p}.image_dir", s.name),
                        )
                    }));
            for (dir, key) in dirs {
                if let Some((_, other)) = seen
                    .iter()
                    .find(|(d, _)| d.starts_with(&dir) || dir.starts_with(d))
                {
                    let how = if seen.iter().any(|(d, _)| d == &dir) {
                        "is already used by"
                    } else {
                        "overlaps (one lies inside the other)"
                    };
                    return Err(err(format!("{key}: {} {how} {other}", dir.display())));
                }
                seen.push((dir, key));
            }
        }
        Ok(Settings {
            source: source.map(Path::to_path_buf),
            daemon,
            services,
        })
    }

    /// Socket path Berth binds for `service` when systemd passes none.
    pub fn socket_path(&self, service: &str) -> PathBuf {
        self.daemon.plugins_dir.join(format!("{service}.sock"))
    }

    /// Directory of the state records of `service`.
    pub fn records_dir(&self, service: &str) -> PathBuf {
        self.daemon.state_dir.join("records").join(service)
    }

    /// The services on a Ceph driver (cephfs, rbd), as `NAME (driver)`:
    /// what a berthd built without the ceph feature cannot serve itself.
    pub fn ceph_services(&self) -> Vec<String> {
        self.services
            .values()
            .filter(|s| !matches!(s.driver, DriverSettings::Loop { .. }))
            .map(|s| format!("{} ({})", s.name, s.driver.kind()))
            .collect()
    }
}

/// `[services.NAME.ceph]` resolved.
fn resolve_ceph(rc: &raw::RawCeph, key: &str) -> Result<CephSettings, String> {
    let conf = match &rc.conf {
        Some(p) => absolute(p, &format!("{key}.conf"))?,
        None => PathBuf::from("/etc/ceph/ceph.conf"),
    };
    let keyring = rc
        .keyring
        .as_ref()
        .map(|p| absolute(p, &format!("{key}.keyring")))
        .transpose()?;
    let client = plain(rc.client.as_deref(), "admin", &format!("{key}.client"))?;
    let client = client
        .strip_prefix("client.")
        .map(str::to_string)
        .unwrap_or(client);
    let host = match rc.host.as_deref() {
        Some(h) => plain(Some(h), "", &format!("{key}.host"))?,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| is_plain_name(h))
            .unwrap_or_else(|| "localhost".into()),
    };
    let timeout = match rc.timeout.as_deref() {
        None => Duration::from_secs(30),
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| format!("{key}.timeout: {t:?} is not a duration ({e})"))?,
    };
    if timeout < Duration::from_secs(1) {
        return Err(format!("{key}.timeout: at least 1s"));
    }
    Ok(CephSettings {
        conf,
        keyring,
        client,
        host,
        timeout,
    })
}

/// A plain name setting (`is_plain_name`), `default` when absent.
fn plain(v: Option<&str>, default: &str, key: &str) -> Result<String, String> {
    let v = v.unwrap_or(default);
    if is_plain_name(v) {
        Ok(v.to_string())
    } else {
        Err(format!(
            "{key}: {v:?} is invalid (1-64 of [a-zA-Z0-9_.-], starting with a letter or digit)"
        ))
    }
}

/// The pool every service has: its own `image_dir`.
pub const DEFAULT_POOL: &str = "default";

/// Pool names: what users pass as `volumeType`/`type`.
pub fn validate_pool_name(name: &str) -> Result<(), String> {
    if name == DEFAULT_POOL {
        return Err(format!(
            "pool name {DEFAULT_POOL:?} is reserved for the service's own image_dir; set image_dir instead"
        ));
    }
    if is_plain_name(name) {
        Ok(())
    } else {
        Err(format!(
            "pool name {name:?} is invalid (1-64 of [a-zA-Z0-9_.-], starting with a letter or digit)"
        ))
    }
}

/// 1-64 of `[a-zA-Z0-9_.-]`, starting with a letter or digit: a name that
/// is safe as a file name, a socket name and a systemd instance name.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Service (plugin) names: what users pass to `--volume-driver`.
pub fn validate_service_name(name: &str) -> Result<(), String> {
    if is_plain_name(name) {
        Ok(())
    } else {
        Err(format!(
            "service name {name:?} is invalid (1-64 of [a-zA-Z0-9_.-], starting with a letter or digit)"
        ))
    }
}

fn absolute(p: &Path, key: &str) -> Result<PathBuf, String> {
    if !p.is_absolute() {
        return Err(format!("{key}: {} must be an absolute path", p.display()));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{key}: {} must not contain '..'", p.display()));
    }
    Ok(p.to_path_buf())
}

fn resolve_daemon(raw: &RawConfig) -> Result<DaemonSettings, String> {
    let d = raw.daemon.clone().unwrap_or_default();
    let state_dir = absolute(
        d.state_dir
            .as_deref()
            .unwrap_or(Path::new("/var/lib/berth")),
        "daemon.state_dir",
    )?;
    let mount_dir = match &d.mount_dir {
        Some(p) => absolute(p, "daemon.mount_dir")?,
        None => state_dir.join("volumes"),
    };
    let plugins_dir = absolute(
        d.plugins_dir
            .as_deref()
            .unwrap_or(Path::new("/run/docker/plugins")),
        "daemon.plugins_dir",
    )?;
    let socket_mode = match &d.socket_mode {
        None => 0o660,
        Some(s) => parse_mode(s).map_err(|r| format!("daemon.socket_mode: {r}"))?,
    };
    let command_timeout = match &d.command_timeout {
        None => Duration::from_secs(100),
        Some(s) => humantime::parse_duration(s)
            .map_err(|e| format!("daemon.command_timeout: {s:?} is not a duration ({e})"))?,
    };
    if command_timeout.is_zero() || command_timeout > Duration::from_secs(3600) {
        return Err("daemon.command_timeout: must be between 1s and 1h".into());
    }
    let max_connections = d.max_connections.unwrap_or(1024);
    if max_connections == 0 {
        return Err("daemon.max_connections: must be at least 1".into());
    }
    let log_level = d.log_level.clone().unwrap_or_else(|| "info".into());
    if crate::logging::parse_filter(&log_level).is_none() {
        return Err(format!(
            "daemon.log_level: {log_level:?} is not a level (error, warn, info, debug, trace)"
        ));
    }
    Ok(DaemonSettings {
        plugins_dir,
        state_dir,
        mount_dir,
        log_level,
        socket_mode,
        socket_group: match d.socket_group.as_deref() {
            // Written empty: root's group.
            Some("") => None,
            Some(g) => Some(g.to_string()),
            // Unwritten: Docker's group, as berth@.socket's SocketGroup=,
            // where the host has one and berthd may give sockets to it
            // (root; another user may give them only to its own groups).
            None => nix::unistd::Group::from_name(DEFAULT_SOCKET_GROUP)
                .ok()
                .flatten()
                .filter(|_| nix::unistd::geteuid().is_root())
                .map(|_| DEFAULT_SOCKET_GROUP.to_string()),
        },
        command_timeout,
        max_connections,
    })
}

/// Parses an octal mode like `0755` or `755`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim().trim_start_matches("0o");
    let m =
        u32::from_str_radix(t, 8).map_err(|_| format!("{s:?} is not an octal mode like 0755"))?;
    if m > 0o7777 {
        return Err(format!("{s:?} is not a file mode (at most 07777)"));
    }
    Ok(m)
}

fn resolve_policy(
    global: Option<&raw::RawVolume>,
    local: Option<&raw::RawVolume>,
    key: &str,
) -> Result<Policy, String> {
    let where_ = |is_local: bool, k: &str| {
        if is_local {
            format!("{key}.volume.{k}")
        } else {
            format!("volume.{k}")
        }
    };
    let cd = |v: &raw::RawVolume| v.create.as_ref().and_then(|c| c.default.clone());
    let ldef = local.and_then(cd);
    let gdef = global.and_then(cd);
    macro_rules! def {
        ($f:ident) => {{
            let l = ldef.as_ref().and_then(|d| d.$f.clone());
            let g = gdef.as_ref().and_then(|d| d.$f.clone());
            (l.is_some(), l.or(g))
        }};
    }
    let (lsize, size) = def!(size);
    let size = match size {
        None => 16 << 30,
        Some(v) => parse_size(&v.to_string_value())
            .map_err(|r| format!("{}: {r}", where_(lsize, "create.default.size")))?,
    };
    let (lfs, fs) = def!(fs_type);
    let fs_type = match fs {
        None => FsType::Ext4,
        Some(s) => FsType::parse(&s)
            .map_err(|r| format!("{}: {r}", where_(lfs, "create.default.fsType")))?,
    };
    let (_, volume_type) = def!(volume_type);
    let (_, iops) = def!(iops);
    let (_, az) = def!(availability_zone);
    let c = |v: &raw::RawVolume| v.create.clone();
    let lc = local.and_then(c);
    let gc = global.and_then(c);
    let create_implicit = lc
        .as_ref()
        .and_then(|x| x.implicit)
        .or(gc.as_ref().and_then(|x| x.implicit))
        .unwrap_or(true);
    let create_disable = lc
        .as_ref()
        .and_then(|x| x.disable)
        .or(gc.as_ref().and_then(|x| x.disable))
        .unwrap_or(false);
    let create_refuse_unknown_type = lc
        .as_ref()
        .and_then(|x| x.refuse_unknown_type)
        .or(gc.as_ref().and_then(|x| x.refuse_unknown_type))
        .unwrap_or(false);
    // Per-key merge for the small tables: service value, else global.
    let lr = local.and_then(|v| v.remove.clone()).unwrap_or_default();
    let gr = global.and_then(|v| v.remove.clone()).unwrap_or_default();
    let lm = local.and_then(|v| v.mount.clone()).unwrap_or_default();
    let gm = global.and_then(|v| v.mount.clone()).unwrap_or_default();
    let lu = local.and_then(|v| v.unmount.clone()).unwrap_or_default();
    let gu = global.and_then(|v| v.unmount.clone()).unwrap_or_default();
    let ld = local.and_then(|v| v.data.clone()).unwrap_or_default();
    let gd = global.and_then(|v| v.data.clone()).unwrap_or_default();
    let root_path = lm
        .root_path
        .clone()
        .or(gm.root_path.clone())
        .unwrap_or_else(|| "/data".into());
    validate_root_path(&root_path)
        .map_err(|r| format!("{}: {r}", where_(lm.root_path.is_some(), "mount.rootPath")))?;
    let data_mode = match ld.mode.clone().or(gd.mode.clone()) {
        None => 0o755,
        Some(m) => parse_mode(&m)
            .map_err(|r| format!("{}: {r}", where_(ld.mode.is_some(), "data.mode")))?,
    };
    Ok(Policy {
        create_defaults: CreateDefaults {
            size,
            fs_type,
            volume_type: volume_type.unwrap_or_default(),
            iops: iops.unwrap_or(0),
            availability_zone: az.unwrap_or_default(),
        },
        create_implicit,
        create_disable,
        create_refuse_unknown_type,
        remove_disable: lr.disable.or(gr.disable).unwrap_or(false),
        remove_force: lr.force.or(gr.force).unwrap_or(false),
        mount_preempt: lm.preempt.or(gm.preempt).unwrap_or(false),
        root_path,
        ignore_used_count: lu
            .ignore_used_count
            .or(gu.ignore_used_count)
            .unwrap_or(false),
        data_mode,
        data_uid: ld.uid.or(gd.uid).unwrap_or(0),
        data_gid: ld.gid.or(gd.gid).unwrap_or(0),
    })
}

/// The data sub-directory must be `/` (the filesystem root) or one plain
/// name like `/data`.
pub fn validate_root_path(p: &str) -> Result<(), String> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(format!("{p:?} must start with '/'"));
    }
    let normal = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir))
        .collect::<Vec<_>>();
    if normal.len() > 1 || normal.iter().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "{p:?} must be '/' or a single directory name like /data"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
