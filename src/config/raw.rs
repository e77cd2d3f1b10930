//! The TOML document as written: every field optional, unknown keys
//! refused. Aliases accept REX-Ray/libStorage spellings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[daemon]`.
    pub daemon: Option<RawDaemon>,
    /// `[volume]`: defaults for every service.
    pub volume: Option<RawVolume>,
    /// `[services.NAME]`.
    pub services: Option<BTreeMap<String, RawService>>,
}

/// `[daemon]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub plugins_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub mount_dir: Option<PathBuf>,
    pub log_level: Option<String>,
    pub socket_mode: Option<String>,
    pub socket_group: Option<String>,
    pub command_timeout: Option<String>,
    pub max_connections: Option<usize>,
}

/// `[services.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub driver: String,
    pub scope: Option<String>,
    pub image_dir: Option<PathBuf>,
    pub pools: Option<BTreeMap<String, RawPool>>,
    pub volume: Option<RawVolume>,
    pub ceph: Option<RawCeph>,
    pub limits: Option<RawLimits>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub workers: Option<usize>,
    pub create_timeout: Option<String>,
    pub mount_timeout: Option<String>,
    pub timeout: Option<String>,
    pub sample_every: Option<String>,
}

/// `[services.NAME.ceph]`: the cluster of a `cephfs` or `rbd` service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCeph {
    pub conf: Option<PathBuf>,
    pub keyring: Option<PathBuf>,
    pub client: Option<String>,
    pub host: Option<String>,
    pub pool: Option<String>,
    pub adopt: Option<String>,
    pub filesystem: Option<String>,
    pub group: Option<String>,
    pub timeout: Option<String>,
}

/// `[services.NAME.pools.POOL]`: a storage pool (`volumeType`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub image_dir: PathBuf,
}

impl RawService {
    pub(super) fn default_loop() -> Self {
        RawService {
            driver: "loop".into(),
            scope: None,
            image_dir: None,
            pools: None,
            volume: None,
            ceph: None,
            limits: None,
        }
    }
}

/// `[volume]` / `[services.NAME.volume]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVolume {
    pub create: Option<RawCreate>,
    pub remove: Option<RawRemove>,
    pub mount: Option<RawMount>,
    pub unmount: Option<RawUnmount>,
    pub data: Option<RawData>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCreate {
    pub default: Option<RawCreateDefault>,
    pub implicit: Option<bool>,
    pub disable: Option<bool>,
    #[serde(alias = "refuseUnknownType")]
    pub refuse_unknown_type: Option<bool>,
}

/// A size written as a number (GB) or a string (`"500M"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Int(i64),
    Float(f64),
    Text(String),
}

impl SizeValue {
    pub fn to_string_value(&self) -> String {
        match self {
            SizeValue::Int(i) => i.to_string(),
            SizeValue::Float(f) => f.to_string(),
            SizeValue::Text(s) => s.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCreateDefault {
    pub size: Option<SizeValue>,
    #[serde(alias = "fsType", alias = "fstype")]
    pub fs_type: Option<String>,
    #[serde(rename = "type", alias = "volumeType")]
    pub volume_type: Option<String>,
    #[serde(alias = "IOPS")]
    pub iops: Option<u64>,
    #[serde(alias = "availabilityZone")]
    pub availability_zone: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemove {
    pub disable: Option<bool>,
    pub force: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMount {
    pub preempt: Option<bool>,
    #[serde(alias = "rootPath")]
    pub root_path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnmount {
    #[serde(alias = "ignoreusedcount", alias = "ignoreUsedCount")]
    pub ignore_used_count: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawData {
    pub mode: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}
