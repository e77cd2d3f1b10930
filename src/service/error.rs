//! The errors the service answers with.

use super::options::OptionError;
use crate::driver::DriverError;
use crate::state::StateError;
use crate::volume::NameError;

/// Errors the service answers with. Every message names the volume.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A bad name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A bad option.
    #[error("volume {volume}: {source}")]
    Option {
        /// Volume.
        volume: String,
        /// Cause.
        source: OptionError,
    },
    /// Any other bad input.
    #[error("{0}")]
    BadInput(String),
    /// No such volume.
    #[error("volume {0} not found")]
    NotFound(String),
    /// No such snapshot.
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    /// A snapshot request conflicts with the state of things.
    #[error("snapshot {snapshot}: {reason}")]
    Snapshot {
        /// Snapshot.
        snapshot: String,
        /// Why.
        reason: String,
    },
    /// The request conflicts with the volume's state.
    #[error("volume {volume}: {reason}")]
    Conflict {
        /// Volume.
        volume: String,
        /// Why.
        reason: String,
    },
    /// The driver failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A state record could not be written.
    #[error("volume {volume}: {source}")]
    State {
        /// Volume.
        volume: String,
        /// Cause.
        source: StateError,
    },
    /// Storage work passed its deadline; it goes on in the background.
    #[error("volume {volume}: {op} is stuck at {} after {} s; it goes on in the background and its outcome is reconciled when it returns (see berth status)", if step.is_empty() { "its first step".to_string() } else { format!("step \"{step}\"") }, after.as_secs())]
    Stuck {
        /// Volume.
        volume: String,
        /// The operation.
        op: &'static str,
        /// The step it is at.
        step: String,
        /// The deadline it passed.
        after: std::time::Duration,
    },
    /// The volume or the service's workers stayed busy past the deadline.
    #[error("volume {volume}: busy: {reason}")]
    Busy {
        /// Volume.
        volume: String,
        /// Why.
        reason: String,
    },
    /// Work finished after its request had been answered with an error;
    /// it was rolled back.
    #[error(
        "volume {volume}: the request had already been answered (deadline passed); rolled back"
    )]
    Abandoned {
        /// Volume.
        volume: String,
    },
    /// A blocking task died (a bug).
    #[error("volume {volume}: internal error: {reason}")]
    Internal {
        /// Volume.
        volume: String,
        /// What happened.
        reason: String,
    },
}

/// Result alias.
pub type ServiceResult<T> = Result<T, ServiceError>;
