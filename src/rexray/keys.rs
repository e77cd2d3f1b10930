//! The key map: what each REX-Ray/libStorage key becomes in Berth, or why
//! it is not carried over. Keys are lowercased (REX-Ray's are
//! case-insensitive) and relative to their scope (the file, a module
//! `rexray.modules.NAME`, or a libStorage service
//! `libstorage.server.services.NAME`).

/// How a value is read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// true/false (also yes/no/on/off, as REX-Ray's YAML 1.1 reader).
    Bool,
    /// Whole GB.
    SizeGb,
    /// A non-negative integer.
    Count,
    /// Text.
    Text,
    /// ext4, xfs or btrfs.
    FsType,
    /// An octal file mode (`0700`).
    Mode,
    /// An absolute path.
    Path,
    /// A sub-path of the filesystem (`/data`).
    SubPath,
    /// REX-Ray's log level.
    LogLevel,
}

/// Where a mapped key lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `[daemon]` (file scope only).
    Daemon,
    /// `[volume]`, or `[services.NAME.volume]` in a module or service scope.
    Volume,
    /// `[services.NAME.ceph]` of rbd services.
    Ceph,
}

/// What one key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// Carried over to `table.key`. `legacy`: an old alias that loses to
    /// the current key, as in REX-Ray.
    Mapped {
        table: Table,
        key: &'static str,
        kind: Kind,
        legacy: bool,
    },
    /// `rbd.cephArgs`: arguments of the ceph and rbd tools.
    CephArgs,
    /// Names the libStorage service (read when services are laid out).
    Service,
    /// Not carried over, and why.
    Dropped(String),
}

const P: &str = "libstorage.integration.volume.operations.";

/// Storage drivers of REX-Ray and libStorage.
pub const DRIVERS: &[&str] = &[
    "azureud",
    "cinder",
    "digitalocean",
    "dobs",
    "ebs",
    "ec2",
    "efs",
    "fittedcloud",
    "gce",
    "gcepd",
    "isilon",
    "rbd",
    "s3fs",
    "scaleio",
    "vbox",
    "vfs",
    "virtualbox",
];

fn mapped(table: Table, key: &'static str, kind: Kind, legacy: bool) -> Key {
    Key::Mapped {
        table,
        key,
        kind,
        legacy,
    }
}

fn dropped(why: &str) -> Key {
    Key::Dropped(why.to_string())
}

/// `libstorage.integration.volume.operations.REST` (and its legacy
/// aliases, `legacy` set).
fn operation(rest: &str, legacy: bool) -> Key {
    use Kind::*;
    use Table::Volume;
    match rest {
        "create.default.size" => mapped(Volume, "create.default.size", SizeGb, legacy),
        "create.default.fstype" => mapped(Volume, "create.default.fsType", FsType, legacy),
        "create.default.iops" => mapped(Volume, "create.default.iops", Count, legacy),
        "create.default.availabilityzone" => {
            mapped(Volume, "create.default.availabilityZone", Text, legacy)
        }
        "create.default.type" => dropped(
            "a REX-Ray volume type names a class of the storage platform (io1, gp2); Berth's types are storage pools of a loop service, declared as [services.NAME.pools.POOL]. Without it, a volume created with any volumeType is still accepted: the type is recorded and shown, and the volume goes to the default pool",
        ),
        "create.disable" => mapped(Volume, "create.disable", Bool, legacy),
        "create.implicit" => mapped(Volume, "create.implicit", Bool, legacy),
        "remove.disable" => mapped(Volume, "remove.disable", Bool, legacy),
        "remove.force" => mapped(Volume, "remove.force", Bool, legacy),
        "mount.preempt" => mapped(Volume, "mount.preempt", Bool, legacy),
        "mount.rootpath" => mapped(Volume, "mount.rootPath", SubPath, legacy),
        "mount.path" => mapped(Table::Daemon, "mount_dir", Path, legacy),
        "mount.retrycount" | "mount.retrywait" => dropped(
            "Berth does not retry a mount; each mount has a deadline ([services.NAME.limits] mount_timeout, 110s) inside Docker's 2 minutes",
        ),
        "unmount.ignoreusedcount" => mapped(Volume, "unmount.ignoreusedcount", Bool, legacy),
        "path.cache" | "path.cache.enabled" | "path.cache.async" => dropped(
            "Berth keeps its mount counts on disk and answers Path from them without asking the storage; there is no cache to tune",
        ),
        _ => dropped("not a libStorage volume operation setting"),
    }
}

/// Classifies a key relative to its scope.
pub fn classify(key: &str) -> Key {
    use Kind::*;
    if let Some(rest) = key.strip_prefix(P) {
        return operation(rest, false);
    }
    // libStorage's per-service form without the `libstorage.` prefix.
    if let Some(rest) = key.strip_prefix("integration.volume.operations.") {
        return operation(rest, false);
    }
    for legacy in ["volume.", "rexray.volume."] {
        if let Some(rest) = key.strip_prefix(legacy) {
            return match rest {
                "mount.preempt"
                | "create.disable"
                | "remove.disable"
                | "unmount.ignoreusedcount"
                | "path.cache" => operation(rest, true),
                _ => dropped("not one of REX-Ray's legacy volume.* settings"),
            };
        }
    }
    match key {
        "docker.fstype" => return operation("create.default.fstype", true),
        "docker.volumetype" => return operation("create.default.type", true),
        "docker.iops" => return operation("create.default.iops", true),
        "docker.size" => return operation("create.default.size", true),
        "docker.availabilityzone" => return operation("create.default.availabilityzone", true),
        "docker.mountdirpath" => return operation("mount.path", true),
        "linux.volume.rootpath" => return operation("mount.rootpath", true),
        "linux.volume.filemode" => return mapped(Table::Volume, "data.mode", Mode, false),
        "libstorage.service" | "rexray.service" => return Key::Service,
        "rexray.loglevel" => return mapped(Table::Daemon, "log_level", LogLevel, false),
        "libstorage.logging.level" => return mapped(Table::Daemon, "log_level", LogLevel, true),
        "rbd.defaultpool" => return mapped(Table::Ceph, "pool", Text, false),
        "rbd.cephargs" => return Key::CephArgs,
        _ => {}
    }
    Key::Dropped(dropped_reason(key))
}

fn dropped_reason(key: &str) -> String {
    let first = key.split('.').next().unwrap_or(key);
    if DRIVERS.contains(&first) {
        return match first {
            "rbd" => "not an rbd setting Berth reads (it reads rbd.defaultPool and rbd.cephArgs)".into(),
            d => format!(
                "a setting of REX-Ray's {d} driver (credentials, endpoints, paths of that platform); Berth does not drive {d}, its service keeps volumes as loop images on this host"
            ),
        };
    }
    let starts = |p: &str| key == p || key.starts_with(&format!("{p}."));
    let why = if starts("docker") {
        "not one of REX-Ray's legacy docker.* settings"
    } else if starts("libstorage.host") || starts("rexray.host") || starts("libstorage.embedded") {
        "Berth has no separate libStorage server: the storage drivers run inside berthd"
    } else if starts("libstorage.client") || starts("libstorage.server") {
        "libStorage's client/server plumbing; berthd serves Docker's socket and drives storage itself"
    } else if starts("libstorage.http") || starts("libstorage.tls") || key.contains(".tls") {
        "libStorage's HTTP transport; Berth listens on UNIX sockets only (their mode and group: [daemon] socket_mode, socket_group)"
    } else if starts("libstorage.executor") || starts("libstorage.executors") {
        "libStorage downloaded executor binaries; Berth has none"
    } else if starts("libstorage.device") {
        "device discovery of libStorage's cloud drivers; a Berth mount has one deadline ([services.NAME.limits] mount_timeout)"
    } else if starts("libstorage.logging") {
        "Berth logs to the journal (or stderr); only the level is carried over"
    } else if [
        "rexray.storagedrivers",
        "rexray.osdrivers",
        "rexray.volumedrivers",
    ]
    .contains(&key)
    {
        "REX-Ray 0.3's driver lists; the driver of a service comes from libstorage.service"
    } else if starts("rexray.module") {
        "module start-up settings; berthd reports readiness to systemd itself"
    } else if starts("rexray.docker") || starts("csi") || starts("rexray.csi") {
        "REX-Ray's CSI bridge; Berth serves Docker's volume plugin API directly"
    } else if starts("linux.volume") {
        "not a linux.volume setting Berth reads (it reads filemode and rootpath)"
    } else if starts("rexray") || starts("libstorage") {
        "a REX-Ray/libStorage setting with no Berth equivalent"
    } else {
        "not a REX-Ray or libStorage setting"
    };
    why.to_string()
}

/// Reads a value; `Err` says why it cannot be carried over.
pub fn convert(kind: Kind, text: &str) -> Result<String, String> {
    let t = text.trim();
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    match kind {
        Kind::Bool => match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "y" | "t" | "1" => Ok("true".into()),
            "false" | "no" | "off" | "n" | "f" | "0" => Ok("false".into()),
            _ => Err(format!("{t:?} is not true or false")),
        },
        Kind::SizeGb => match t.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n.to_string()),
            _ => Err(format!("{t:?} is not a whole number of GB above 0")),
        },
        Kind::Count => t
            .parse::<u64>()
            .map(|n| n.to_string())
            .map_err(|_| format!("{t:?} is not a whole number")),
        Kind::Text => Ok(quote(t)),
        Kind::FsType => match t.to_ascii_lowercase().as_str() {
            f @ ("ext4" | "xfs" | "btrfs") => Ok(quote(f)),
            _ => Err(format!("{t:?}: Berth makes ext4, xfs or btrfs")),
        },
        Kind::Mode => {
            // YAML 1.1, as REX-Ray read it: a leading 0 is octal.
            let m = if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix('0')) {
                u32::from_str_radix(if o.is_empty() { "0" } else { o }, 8).ok()
            } else {
                t.parse::<u32>().ok()
            };
            match m {
                Some(m) if m <= 0o7777 => Ok(quote(&format!("{m:04o}"))),
                _ => Err(format!("{t:?} is not a file mode")),
            }
        }
        Kind::Path if t.starts_with('/') => Ok(quote(t)),
        Kind::Path => Err(format!("{t:?} is not an absolute path")),
        Kind::SubPath if t.is_empty() || t.starts_with('/') => {
            Ok(quote(if t.is_empty() { "/" } else { t }))
        }
        Kind::SubPath => Err(format!("{t:?} does not start with /")),
        Kind::LogLevel => match t.to_ascii_lowercase().as_str() {
            "panic" | "fatal" | "error" => Ok(quote("error")),
            "warn" | "warning" => Ok(quote("warn")),
            "info" => Ok(quote("info")),
            "debug" => Ok(quote("debug")),
            _ => Err(format!("{t:?} is not a log level")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_rexray_read_them() {
        assert_eq!(convert(Kind::Mode, "0700").as_deref(), Ok("\"0700\""));
        assert_eq!(convert(Kind::Mode, "448").as_deref(), Ok("\"0700\""));
        assert_eq!(convert(Kind::Bool, "yes").as_deref(), Ok("true"));
        assert!(convert(Kind::Bool, "maybe").is_err());
        assert_eq!(convert(Kind::SizeGb, "5").as_deref(), Ok("5"));
        assert!(convert(Kind::SizeGb, "5G").is_err());
        assert_eq!(convert(Kind::FsType, "XFS").as_deref(), Ok("\"xfs\""));
        assert_eq!(convert(Kind::LogLevel, "warn").as_deref(), Ok("\"warn\""));
    }

    #[test]
    fn legacy_and_current_keys() {
        assert!(matches!(
            classify("docker.size"),
            Key::Mapped {
                legacy: true,
                key: "create.default.size",
                ..
            }
        ));
        assert!(matches!(
            classify("libstorage.integration.volume.operations.mount.preempt"),
            Key::Mapped {
                legacy: false,
                key: "mount.preempt",
                ..
            }
        ));
        assert!(matches!(classify("virtualbox.volumepath"), Key::Dropped(_)));
        assert!(matches!(classify("rbd.cephargs"), Key::CephArgs));
    }
}
