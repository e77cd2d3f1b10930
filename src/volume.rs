//! Domain types shared by every layer: names, mount IDs, filesystems,
//! sizes and scopes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest volume name accepted. Image files are `<name>.img` and state
/// records `<name>.json`, so this stays well below NAME_MAX (255).
pub const MAX_NAME_LEN: usize = 128;

/// A validated volume name: Docker's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]*`,
/// 1 to [`MAX_NAME_LEN`] bytes. Such a name can't contain `/`, NUL or be
/// `..`, so it can never escape the state and mount directories.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeName(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty string.
    #[error("volume name is empty")]
    Empty,
    /// Too long.
    #[error("volume name is {0} bytes long; at most {MAX_NAME_LEN} are allowed")]
    TooLong(usize),
    /// A character outside the allowed set.
    #[error("volume name {name:?} is invalid: {reason} (allowed: [a-zA-Z0-9][a-zA-Z0-9_.-]*)")]
    Invalid {
        /// The offending name (escaped when printed).
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl VolumeName {
    /// Validates `s`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.len()));
        }
        let mut chars = s.chars();
        let first = chars.next().unwrap_or('-');
        if !first.is_ascii_alphanumeric() {
            return Err(NameError::Invalid {
                name: s.to_string(),
                reason: "it must start with a letter or digit",
            });
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err(NameError::Invalid {
                name: s.to_string(),
                reason: "it contains a character that is not a letter, digit, '_', '.' or '-'",
            });
        }
        Ok(VolumeName(s.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for VolumeName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        VolumeName::parse(&s)
    }
}

impl From<VolumeName> for String {
    fn from(v: VolumeName) -> String {
        v.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest mount ID accepted (Docker's are 64 hex characters).
pub const MAX_MOUNT_ID_LEN: usize = 256;

/// The caller's mount ID. Docker sends 64 hex characters; dvdcli sends
/// none, which counts as the anonymous user (the empty string).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MountId(String);

impl MountId {
    /// The anonymous user (no ID given).
    pub fn anonymous() -> Self {
        MountId(String::new())
    }

    /// Validates an ID: printable ASCII without spaces, bounded length.
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        let Some(s) = s else {
            return Ok(Self::anonymous());
        };
        if s.len() > MAX_MOUNT_ID_LEN {
            return Err(format!(
                "mount ID is {} bytes long; at most {MAX_MOUNT_ID_LEN} are allowed",
                s.len()
            ));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "mount ID {s:?} contains a non-printable character or a space"
            ));
        }
        Ok(MountId(s.to_string()))
    }

    /// The ID as a string ("" for anonymous).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(anonymous)")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// Filesystems Berth can create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    /// ext4 (the default, as in REX-Ray).
    Ext4,
    /// XFS (mounted with `nouuid` so clones can mount side by side).
    Xfs,
    /// btrfs.
    Btrfs,
}

impl FsType {
    /// All supported, for error messages.
    pub const ALL: &'static str = "ext4, xfs, btrfs";

    /// Parses a name case-insensitively.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            "btrfs" => Ok(FsType::Btrfs),
            _ => Err(format!(
                "unsupported filesystem {s:?} (supported: {})",
                Self::ALL
            )),
        }
    }

    /// The kernel/mkfs name.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
        }
    }

    /// Smallest image mkfs accepts for this filesystem.
    pub fn min_size(self) -> u64 {
        match self {
            FsType::Ext4 => 8 << 20,
            FsType::Xfs => 300 << 20,
            FsType::Btrfs => 128 << 20,
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Docker's volume scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Volumes exist on this host only.
    Local,
    /// Volumes are the same on every host (shared backends).
    Global,
}

impl Scope {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Global => "global",
        }
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// Parses a size: a bare number is GB (REX-Ray's unit; GiB in bytes),
/// or a number with a unit suffix (`500M`, `2G`, `1.5T`, `512MiB`, `10GB`;
/// units are binary). Zero, negative and non-numeric values are refused.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("size is empty".into());
    }
    let bytes = if let Ok(gb) = t.parse::<f64>() {
        if !gb.is_finite() || gb <= 0.0 {
            return Err(format!("size {s:?} must be a positive number of GB"));
        }
        let b = gb * GIB;
        if b >= u64::MAX as f64 {
            return Err(format!("size {s:?} is too large"));
        }
        b as u64
    } else {
        if t.starts_with('-') {
            return Err(format!("size {s:?} must be positive"));
        }
        parse_size::Config::new()
            .with_binary()
            .parse_size(t)
            .map_err(|e| {
                format!("size {s:?} is not a size ({e}); use GB like 16, or 500M, 2G, 1.5T")
            })?
    };
    if bytes == 0 {
        return Err(format!("size {s:?} must be greater than zero"));
    }
    Ok(bytes)
}

/// Formats bytes for humans (binary units).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Bytes as (possibly fractional) GB, REX-Ray's `size` unit.
pub fn bytes_to_gb(b: u64) -> f64 {
    (b as f64 / GIB * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["v", "V1", "a.b-c_d", "9", &"x".repeat(MAX_NAME_LEN)] {
            assert!(VolumeName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".",
            "-a",
            "_a",
            "a/b",
            "a\0b",
            "a b",
            "é",
            "a:b",
            "../etc",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(VolumeName::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn mount_ids() {
        assert_eq!(MountId::parse(None).expect("none"), MountId::anonymous());
        assert!(MountId::parse(Some(&"a".repeat(64))).is_ok());
        assert!(MountId::parse(Some("a b")).is_err());
        assert!(MountId::parse(Some("a\0")).is_err());
        assert!(MountId::parse(Some(&"a".repeat(300))).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16").expect("16"), 16 << 30);
        assert_eq!(parse_size("1.5").expect("1.5"), 3 << 29);
        assert_eq!(parse_size("500M").expect("500M"), 500 << 20);
        assert_eq!(parse_size("2G").expect("2G"), 2 << 30);
        assert_eq!(parse_size("1.5T").expect("1.5T"), 3 << 39);
        assert_eq!(parse_size("512MiB").expect("MiB"), 512 << 20);
        for bad in [
            "0", "-1", "abc", "", "1e400", "NaN", "inf", "-5G", "0M", "12Q",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn fs_types() {
        assert_eq!(FsType::parse("XFS").expect("xfs"), FsType::Xfs);
        assert!(FsType::parse("zfs")
            .expect_err("zfs")
            .contains("ext4, xfs, btrfs"));
    }
}
