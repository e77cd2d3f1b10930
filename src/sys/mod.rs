//! OS boundary: mounts, loop devices, external tools and durable files.
//!
//! Everything here is blocking and must be called from a blocking thread
//! (`tokio::task::spawn_blocking`), never from the async executor.

pub mod blockfs;
pub mod caps;
#[cfg(feature = "ceph")]
pub mod ceph;
pub mod cmd;
pub mod fsutil;
pub mod loopdev;
pub mod mounts;
pub mod reflink;

use std::path::PathBuf;

/// Errors raised at the OS boundary. Every message names the path,
/// device or command involved.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A filesystem operation on a path failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted ("create", "fsync", "rename", …).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An external command could not be started, failed or timed out.
    #[error("command `{command}` {outcome}")]
    Command {
        /// The full command line.
        command: String,
        /// What happened: exit status and stderr, or the timeout.
        outcome: String,
    },
    /// A mount or unmount syscall failed.
    #[error("{op} {target}: {source}")]
    Mount {
        /// "mount" or "unmount".
        op: &'static str,
        /// The mount point.
        target: PathBuf,
        /// The errno.
        source: nix::Error,
    },
    /// A loop device operation failed.
    #[error("loop device {what}: {source}")]
    Loop {
        /// The device or backing file and the action.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl SysError {
    /// Shorthand for an [`SysError::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SysError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The raw OS error number, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            SysError::Io { source, .. } | SysError::Loop { source, .. } => source.raw_os_error(),
            SysError::Mount { source, .. } => Some(*source as i32),
            SysError::Command { .. } => None,
        }
    }
}

#[cfg(feature = "failpoints")]
impl SysError {
    /// The error of an injected fault: `arg` is an errno name
    /// (`ENOSPC`, `EIO`, …) or number; EIO when absent.
    pub fn injected(point: &'static str, arg: Option<String>) -> Self {
        let errno = match arg.as_deref().map(str::trim) {
            Some("ENOSPC") => libc::ENOSPC,
            Some("EBUSY") => libc::EBUSY,
            Some("ENODEV") => libc::ENODEV,
            Some("ENXIO") => libc::ENXIO,
            Some("EROFS") => libc::EROFS,
            Some("EACCES") => libc::EACCES,
            Some(n) => n.parse().unwrap_or(libc::EIO),
            None => libc::EIO,
        };
        SysError::Io {
            op: "injected fault at",
            path: point.into(),
            source: std::io::Error::from_raw_os_error(errno),
        }
    }
}

/// Result alias for the OS boundary.
pub type SysResult<T> = Result<T, SysError>;
