//! Create options: `docker volume create --opt`, `--mount volume-opt=`,
//! `DVDI_VOLUME_OPTS` and `berth volume create --opt` all land here.
//! Keys are case-insensitive, as in REX-Ray.

use std::collections::BTreeMap;

use crate::config::{parse_mode, CreateDefaults};
use crate::volume::{human_bytes, parse_size, FsType, VolumeName};

/// Every option key Berth knows (lower-case), for error messages.
pub const KNOWN: &[&str] = &[
    "size",
    "fsType",
    "newfstype",
    "overwritefs",
    "volumeType",
    "type",
    "iops",
    "availabilityZone",
    "uid",
    "gid",
    "mode",
    "volumeName",
    "volumeID",
    "snapshotName",
    "snapshotID",
];

/// Options other REX-Ray drivers knew that Berth does not provide.
const NOT_YET: &[(&str, &str)] = &[
    ("encrypted", "encrypted volumes (encrypted)"),
    ("encryptionkey", "encrypted volumes (encryptionKey)"),
];

/// What a new volume is a copy of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// `volumeName`: a volume of this service, by name.
    VolumeName(VolumeName),
    /// `volumeID`: a volume of this service, by the ID inspect shows.
    VolumeId(String),
    /// `snapshotName`: a snapshot of this service, by name.
    SnapshotName(VolumeName),
    /// `snapshotID`: a snapshot of this service, by ID.
    SnapshotId(String),
}

impl SourceRef {
    /// The option it came from, for messages.
    pub fn option(&self) -> &'static str {
        match self {
            SourceRef::VolumeName(_) => "volumeName",
            SourceRef::VolumeId(_) => "volumeID",
            SourceRef::SnapshotName(_) => "snapshotName",
            SourceRef::SnapshotId(_) => "snapshotID",
        }
    }

    /// The value given.
    pub fn value(&self) -> &str {
        match self {
            SourceRef::VolumeName(n) | SourceRef::SnapshotName(n) => n.as_str(),
            SourceRef::VolumeId(s) | SourceRef::SnapshotId(s) => s,
        }
    }
}

/// A create request after validation and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSpec {
    /// Bytes.
    pub size: u64,
    /// `size` was given (not the default).
    pub size_given: bool,
    /// Filesystem.
    pub fs_type: FsType,
    /// `fsType`/`newfstype` was given (not the default).
    pub fs_given: bool,
    /// `volumeType`/`type` was given (not the default).
    pub type_given: bool,
    /// `uid`, `gid` or `mode` was given.
    pub owner_given: bool,
    /// Start from a copy of a volume or snapshot.
    pub source: Option<SourceRef>,
    /// Reformat an existing filesystem.
    pub overwrite_fs: bool,
    /// Volume type (storage pool) name, recorded.
    pub volume_type: String,
    /// IOPS, recorded.
    pub iops: u64,
    /// Availability zone, recorded.
    pub availability_zone: String,
    /// Owner of the data directory.
    pub uid: u32,
    /// Group of the data directory.
    pub gid: u32,
    /// Mode of the data directory.
    pub mode: u32,
}

/// Why options were refused: always names the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionError(pub String);

fn parse_bool(key: &str, v: &str) -> Result<bool, OptionError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(OptionError(format!(
            "option {key}={v:?}: expected true or false"
        ))),
    }
}

fn parse_u32(key: &str, v: &str) -> Result<u32, OptionError> {
    v.trim().parse::<u32>().map_err(|_| {
        OptionError(format!(
            "option {key}={v:?}: expected a whole number from 0 to 4294967295"
        ))
    })
}

fn check_text(key: &str, v: &str) -> Result<String, OptionError> {
    if v.len() > 128 || v.chars().any(|c| c.is_control()) {
        return Err(OptionError(format!(
            "option {key}: at most 128 printable characters are allowed"
        )));
    }
    Ok(v.to_string())
}

impl CreateSpec {
    /// Validates `opts` against `defaults` and the data-directory defaults.
    pub fn parse(
        opts: &BTreeMap<String, String>,
        defaults: &CreateDefaults,
        data: (u32, u32, u32),
    ) -> Result<Self, OptionError> {
        let mut spec = CreateSpec {
            size: defaults.size,
            size_given: false,
            fs_type: defaults.fs_type,
            fs_given: false,
            type_given: false,
            owner_given: false,
            source: None,
            overwrite_fs: false,
            volume_type: defaults.volume_type.clone(),
            iops: defaults.iops,
            availability_zone: defaults.availability_zone.clone(),
            uid: data.1,
            gid: data.2,
            mode: data.0,
        };
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for (k, v) in opts {
            let key = k.to_ascii_lowercase();
            if let Some(prev) = seen.insert(canonical(&key), k) {
                return Err(OptionError(format!(
                    "options {prev} and {k} both set the same thing; give one"
                )));
            }
            spec.apply(&key, k, v)?;
        }
        spec.check()?;
        Ok(spec)
    }

    /// Applies one option (`key` lowercased, `k` as given).
    fn apply(&mut self, key: &str, k: &str, v: &str) -> Result<(), OptionError> {
        let name_of = |v: &str| {
            VolumeName::parse(v.trim()).map_err(|r| OptionError(format!("option {k}: {r}")))
        };
        let id_of = |v: &str| {
            let t = v.trim();
            if t.is_empty() {
                return Err(OptionError(format!("option {k}: the ID is empty")));
            }
            check_text(k, t)
        };
        match key {
            "size" => {
                self.size = parse_size(v).map_err(|r| OptionError(format!("option size: {r}")))?;
                self.size_given = true;
            }
            "fstype" | "newfstype" => {
                self.fs_type =
                    FsType::parse(v).map_err(|r| OptionError(format!("option {k}: {r}")))?;
                self.fs_given = true;
            }
            "overwritefs" => self.overwrite_fs = parse_bool(k, v)?,
            "volumetype" | "type" => {
                self.volume_type = check_text(k, v.trim())?;
                self.type_given = true;
            }
            "volumename" => self.source = Some(SourceRef::VolumeName(name_of(v)?)),
            "volumeid" => self.source = Some(SourceRef::VolumeId(id_of(v)?)),
            "snapshotname" => self.source = Some(SourceRef::SnapshotName(name_of(v)?)),
            "snapshotid" => self.source = Some(SourceRef::SnapshotId(id_of(v)?)),
            "iops" => {
                self.iops = v.trim().parse::<u64>().map_err(|_| {
                    OptionError(format!(
                        "option {k}={v:?}: expected a whole number of I/O operations per second"
                    ))
                })?
            }
            "availabilityzone" => self.availability_zone = check_text(k, v)?,
            "uid" | "gid" | "mode" => self.apply_owner(key, k, v)?,
            other => return Err(unknown(other, k)),
        }
        Ok(())
    }

    fn apply_owner(&mut self, key: &str, k: &str, v: &str) -> Result<(), OptionError> {
        match key {
            "uid" => self.uid = parse_u32(k, v)?,
            "gid" => self.gid = parse_u32(k, v)?,
            _ => self.mode = parse_mode(v).map_err(|r| OptionError(format!("option mode: {r}")))?,
        }
        self.owner_given = true;
        Ok(())
    }

    /// Checks across options, once all are read.
    fn check(&self) -> Result<(), OptionError> {
        if let Some(src) = &self.source {
            if self.overwrite_fs {
                return Err(OptionError(format!(
                    "option overwritefs cannot be combined with {} (a copy keeps its source's filesystem and content)",
                    src.option()
                )));
            }
            // Size and filesystem are checked against the source later.
            return Ok(());
        }
        // A default size too small for the filesystem asked for is caught
        // by the driver, and only when it makes a new filesystem (an
        // adopted image keeps its own size).
        if self.size_given && self.size < self.fs_type.min_size() {
            return Err(OptionError(format!(
                "option size: {} is too small for {} (at least {})",
                human_bytes(self.size),
                self.fs_type,
                human_bytes(self.fs_type.min_size())
            )));
        }
        Ok(())
    }
}

/// fsType and newfstype are one option; so are type/volumeType. The four
/// source options are one choice too.
fn canonical(key: &str) -> String {
    match key {
        "newfstype" => "fstype".to_string(),
        "volumetype" => "type".to_string(),
        "volumename" | "volumeid" | "snapshotname" | "snapshotid" => "source".to_string(),
        _ => key.to_string(),
    }
}

fn unknown(key: &str, k: &str) -> OptionError {
    if let Some((_, what)) = NOT_YET.iter().find(|(n, _)| *n == key) {
        return OptionError(format!(
            "option {k}: {what} is not supported by this service"
        ));
    }
    let shown: String = k.chars().take(64).collect();
    OptionError(format!(
        "unknown option {shown:?} (valid options: {})",
        KNOWN.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> CreateDefaults {
        CreateDefaults {
            size: 16 << 30,
            fs_type: FsType::Ext4,
            volume_type: String::new(),
            iops: 0,
            availability_zone: String::new(),
        }
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<CreateSpec, OptionError> {
        let m = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CreateSpec::parse(&m, &defaults(), (0o755, 0, 0))
    }

    #[test]
    fn defaults_apply() {
        let s = parse(&[]).expect("empty");
        assert_eq!(s.size, 16 << 30);
        assert_eq!(s.fs_type, FsType::Ext4);
        assert_eq!(s.mode, 0o755);
    }

    #[test]
    fn keys_are_case_insensitive_and_aliases_work() {
        let s = parse(&[
            ("SIZE", "2"),
            ("NewFsType", "xfs"),
            ("OverwriteFS", "true"),
            ("VolumeType", "io1"),
            ("IOPS", "150"),
            ("availabilityzone", "az-1"),
            ("uid", "1000"),
            ("gid", "1000"),
            ("mode", "0750"),
        ])
        .expect("valid");
        assert_eq!(s.size, 2 << 30);
        assert_eq!(s.fs_type, FsType::Xfs);
        assert!(s.overwrite_fs);
        assert_eq!(s.volume_type, "io1");
        assert_eq!(s.iops, 150);
        assert_eq!(s.availability_zone, "az-1");
        assert_eq!((s.uid, s.gid, s.mode), (1000, 1000, 0o750));
    }

    #[test]
    fn bad_values_name_the_option() {
        for (k, v, needle) in [
            ("size", "0", "size"),
            ("size", "lots", "size"),
            ("size", "-3", "size"),
            ("fsType", "zfs", "fsType"),
            ("overwritefs", "maybe", "overwritefs"),
            ("iops", "-1", "iops"),
            ("uid", "x", "uid"),
            ("gid", "99999999999", "gid"),
            ("mode", "0999", "mode"),
            ("bogus", "1", "valid options"),
            ("volumeName", "../src", "volumeName"),
            ("volumeName", "", "volumeName"),
            ("snapshotName", "a b", "snapshotName"),
            ("snapshotID", " ", "snapshotID"),
            ("volumeID", "x\ny", "volumeID"),
            ("encrypted", "true", "encrypted"),
            ("type", "a\nb", "type"),
        ] {
            let e = parse(&[(k, v)]).expect_err(&format!("{k}={v} must be refused"));
            assert!(e.0.contains(needle), "{k}={v}: {e}");
        }
    }

    #[test]
    fn too_small_for_filesystem() {
        let e = parse(&[("size", "100M"), ("fsType", "xfs")]).expect_err("xfs min");
        assert!(e.0.contains("xfs"), "{e}");
        assert!(parse(&[("size", "100M")]).is_ok(), "ext4 fits in 100M");
    }

    #[test]
    fn sources() {
        let s = parse(&[("VOLUMENAME", "src"), ("size", "4")]).expect("clone");
        assert_eq!(
            s.source,
            Some(SourceRef::VolumeName(VolumeName::parse("src").expect("n")))
        );
        assert!(s.size_given && !s.fs_given);
        let s = parse(&[("snapshotid", "abc123")]).expect("from snapshot");
        assert_eq!(s.source, Some(SourceRef::SnapshotId("abc123".into())));
        let e = parse(&[("volumeName", "a"), ("snapshotName", "b")]).expect_err("two sources");
        assert!(e.0.contains("same thing"), "{e}");
        let e = parse(&[("volumeName", "a"), ("overwritefs", "true")]).expect_err("overwrite");
        assert!(
            e.0.contains("overwritefs") && e.0.contains("volumeName"),
            "{e}"
        );
        // A source's size is checked later, not against fs minimums here.
        assert!(parse(&[("volumeName", "a"), ("size", "100M"), ("fsType", "xfs")]).is_ok());
        let s = parse(&[("uid", "5")]).expect("uid");
        assert!(s.owner_given);
        assert!(!parse(&[]).expect("none").owner_given);
    }

    #[test]
    fn duplicate_aliases_refused() {
        let e = parse(&[("fsType", "xfs"), ("newfstype", "ext4")]).expect_err("dup");
        assert!(e.0.contains("same thing"), "{e}");
    }
}
