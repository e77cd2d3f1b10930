//! The workload model shared by the SIGKILL chaos tests (`tests/chaos.rs`
//! on loop volumes, `tests/ceph_chaos.rs` on CephFS and RBD): what the
//! workload knows of each volume, how operations name what they touch,
//! and the random choices both make. Each test keeps its own operations
//! and invariants.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Volumes and snapshots (as [`snap_key`]) an operation in flight holds:
/// no other operation on them is started meanwhile.
pub type Busy = BTreeSet<String>;

/// What the workload knows of one volume.
#[derive(Debug, Clone, Default)]
pub struct Vol {
    /// Mount ID → mounts the workload holds.
    pub holds: BTreeMap<String, u32>,
    /// File name → checksum of what was written (and fsynced).
    pub files: BTreeMap<String, u64>,
    /// Data path while mounted.
    pub path: Option<PathBuf>,
    /// Size in bytes (as created, cloned or last resized), where the
    /// test tracks it.
    pub size: u64,
}

impl Vol {
    pub fn new(files: BTreeMap<String, u64>, size: u64) -> Vol {
        Vol {
            files,
            size,
            ..Vol::default()
        }
    }

    /// Mounts the workload holds on the volume.
    pub fn count(&self) -> u32 {
        self.holds.values().sum()
    }

    /// One of the mount IDs holding the volume, at random (`None` when
    /// none does).
    pub fn held_id(&self, rng: &mut fastrand::Rng) -> Option<String> {
        let held: Vec<&String> = self.holds.keys().collect();
        (!held.is_empty()).then(|| held[rng.usize(0..held.len())].clone())
    }
}

/// The busy key of a snapshot (volume names can't contain '@').
pub fn snap_key(s: &str) -> String {
    format!("@{s}")
}

/// One of `items` at random.
pub fn choose<T: Clone>(rng: &mut fastrand::Rng, items: &[T]) -> T {
    items[rng.usize(0..items.len())].clone()
}

/// Volumes of `model` no operation holds that `keep` accepts, as
/// sources of a clone.
pub fn free_sources(
    model: &BTreeMap<String, Vol>,
    busy: &Busy,
    keep: impl Fn(&str) -> bool,
) -> Vec<String> {
    model
        .keys()
        .filter(|k| !busy.contains(*k) && keep(k))
        .cloned()
        .collect()
}
