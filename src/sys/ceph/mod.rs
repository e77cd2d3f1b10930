//! Ceph through its client libraries: librados (via the `ceph` crate),
//! librbd (minimal FFI declarations in `rbd_ffi.rs`), the mgr `volumes` module for CephFS
//! subvolumes, and the two FUSE helpers (`ceph-fuse`, `rbd-fuse`) that form
//! the data path on hosts without kernel RBD/CephFS clients.
//!
//! Only built with the `ceph` cargo feature (it links librados and librbd).
//! Runtime dependencies: `librados2`, `librbd1`, and for the data path
//! `ceph-fuse`, `rbd-fuse` and `fuse3`'s `fusermount3` (not used here, we
//! unmount with `umount2(2)` as root).
//!
//! Like the rest of [`crate::sys`], every function blocks: call it from a
//! blocking thread. Every librados/librbd call is bounded by
//! [`CephConfig::timeout`] (it becomes `rados_mon_op_timeout`,
//! `rados_osd_op_timeout` and `client_mount_timeout`), so an unreachable
//! cluster answers `ETIMEDOUT` instead of hanging.
//!
//! Errors are a separate [`CephError`] (not a [`crate::sys::SysError`]
//! variant): the feature is optional, and a cfg'd variant would make every
//! match on `SysError` depend on it. Every message names the operation and
//! the object, e.g. `rbd create rbd/vol1: File exists (errno 17)`.

mod blocklist;
mod cephfs;
mod cluster;
mod fuse;
mod fuse_detach;
mod omap;
mod rados_ffi;
mod rbd;
mod rbd_ffi;

use std::path::PathBuf;
use std::time::Duration;

pub use blocklist::is_blocklisted;
pub use cephfs::{CephFs, CloneStatus, SubvolumeInfo};
pub use cluster::Cluster;
pub use fuse::{ceph_fuse_mount, fuse_unmount, kill_helpers, rbd_fuse_mount};
pub use fuse_detach::ceph_fuse_detach;
pub use omap::{Entries, OmapObject};
pub use rbd::{ChildImage, Locker, RbdPool, Snapshot, Watcher};

/// How to reach a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CephConfig {
    /// `ceph.conf` (monitor addresses, options).
    pub conf: PathBuf,
    /// Keyring of the client; `None` = whatever `conf` says (its
    /// `keyring` option or Ceph's default locations).
    pub keyring: Option<PathBuf>,
    /// Client id without the `client.` prefix, e.g. `admin`.
    pub client: String,
    /// Upper bound for one call to the cluster (connect, a command, an
    /// object operation) and for a FUSE mount to appear. Ceph counts in
    /// whole seconds: anything below one second is rounded up to one.
    pub timeout: Duration,
}

impl CephConfig {
    /// The timeout in whole seconds, at least 1, as Ceph's options want it.
    pub(crate) fn timeout_secs(&self) -> u64 {
        let s = self.timeout.as_secs();
        if self.timeout.subsec_nanos() > 0 || s == 0 {
            s + 1
        } else {
            s
        }
    }
}

/// An error talking to Ceph. Every variant names the operation and the
/// object (image, subvolume, command, mount point).
#[derive(Debug, thiserror::Error)]
pub enum CephError {
    /// A librados/librbd call returned a negative errno.
    #[error("{op} {object}: {} (errno {errno})", errno_text(*.errno))]
    Errno {
        /// The operation ("rbd create", "connect", …).
        op: &'static str,
        /// The object (`pool/image`, `pool/image@snap`, the conf file, …).
        object: String,
        /// The positive errno.
        errno: i32,
    },
    /// A mon or mgr command failed; `status` is Ceph's explanation.
    #[error("{op} {object}: {status} (errno {errno})")]
    Command {
        /// The command ("fs subvolume create", "mon command", …).
        op: String,
        /// What it was about (`cephfs/group/name`, the command prefix, …).
        object: String,
        /// The positive errno.
        errno: i32,
        /// The status string Ceph returned (may be empty).
        status: String,
    },
    /// An argument Ceph's C API cannot carry (a NUL byte) or that is out
    /// of range.
    #[error("{op} {object}: invalid argument: {reason}")]
    Invalid {
        /// The operation.
        op: &'static str,
        /// The object.
        object: String,
        /// Why.
        reason: String,
    },
    /// Ceph answered something this module does not understand.
    #[error("{op} {object}: unexpected reply: {detail}")]
    Reply {
        /// The operation.
        op: String,
        /// The object.
        object: String,
        /// What was wrong, with the start of the reply.
        detail: String,
    },
    /// A FUSE helper (`ceph-fuse`, `rbd-fuse`) failed, or an unmount did.
    #[error("{op} {}: {detail}", .target.display())]
    Fuse {
        /// "ceph-fuse mount", "rbd-fuse mount", "unmount".
        op: &'static str,
        /// The mount point.
        target: PathBuf,
        /// What happened, with the tail of the helper's output.
        detail: String,
        /// The errno, when the failure had one.
        errno: Option<i32>,
    },
}

impl CephError {
    /// The errno (positive), when the failure has one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            CephError::Errno { errno, .. } | CephError::Command { errno, .. } => Some(*errno),
            CephError::Invalid { .. } => Some(libc::EINVAL),
            CephError::Reply { .. } => None,
            CephError::Fuse { errno, .. } => *errno,
        }
    }

    /// From a negative return code of a C call.
    pub(crate) fn from_ret(op: &'static str, object: impl Into<String>, ret: i64) -> Self {
        let errno = i32::try_from(ret.unsigned_abs()).unwrap_or(libc::EIO);
        CephError::Errno {
            op,
            object: object.into(),
            errno,
        }
    }
}

fn errno_text(errno: i32) -> &'static str {
    nix::errno::Errno::from_raw(errno).desc()
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, CephError>;

/// Turns a C return code into `Ok(ret)` or a [`CephError::Errno`]; the
/// object name is only built on failure.
pub(crate) fn check<F: FnOnce() -> String>(op: &'static str, object: F, ret: i64) -> Result<i64> {
    if ret < 0 {
        Err(CephError::from_ret(op, object(), ret))
    } else {
        Ok(ret)
    }
}

/// A C string for the FFI, or [`CephError::Invalid`] when `s` holds a NUL.
pub(crate) fn cstr(op: &'static str, object: &str, s: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| CephError::Invalid {
        op,
        object: object.to_string(),
        reason: format!("{s:?} contains a NUL byte"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_name_operation_and_object() {
        let e = CephError::from_ret("rbd create", "rbd/vol1", -17);
        assert_eq!(e.to_string(), "rbd create rbd/vol1: File exists (errno 17)");
        assert_eq!(e.errno(), Some(17));
        let e = CephError::Command {
            op: "fs subvolume getpath".into(),
            object: "cephfs/berth/v1".into(),
            errno: 2,
            status: "subvolume 'v1' does not exist".into(),
        };
        assert_eq!(
            e.to_string(),
            "fs subvolume getpath cephfs/berth/v1: subvolume 'v1' does not exist (errno 2)"
        );
    }

    #[test]
    fn timeout_rounds_up_to_whole_seconds() {
        let mut c = CephConfig {
            conf: "/etc/ceph/ceph.conf".into(),
            keyring: None,
            client: "admin".into(),
            timeout: Duration::from_millis(1500),
        };
        assert_eq!(c.timeout_secs(), 2);
        c.timeout = Duration::from_millis(10);
        assert_eq!(c.timeout_secs(), 1);
        c.timeout = Duration::from_secs(10);
        assert_eq!(c.timeout_secs(), 10);
    }
}
