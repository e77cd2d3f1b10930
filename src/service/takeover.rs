//! Volumes this host had mounted and lost to another host (or to a
//! blocklisting): learnt by the sampler ([`crate::driver::Driver::check_hold`]),
//! shown by Get, List and status, logged once at WARNING, forgotten when
//! the volume is unmounted or mounted anew.

use std::collections::HashMap;
use std::sync::RwLock;

use tracing::warn;

use super::read;
use crate::driver::TakeOver;
use crate::volume::VolumeName;

/// The take-overs this host knows of.
#[derive(Debug, Default)]
pub(super) struct TakeOvers {
    by_name: RwLock<HashMap<VolumeName, TakeOver>>,
}

impl TakeOvers {
    /// Records that `name` was taken over; the first time, says so in the
    /// journal (`BERTH_SERVICE`, `BERTH_VOLUME`, `BERTH_TAKEN_BY`,
    /// `BERTH_TAKEN_AT`).
    pub(super) fn note(&self, service: &str, name: &VolumeName, t: TakeOver) {
        let mut m = self.by_name.write().unwrap_or_else(|p| p.into_inner());
        if m.contains_key(name) {
            return;
        }
        warn!(service = %service, volume = %name,
            taken_by = t.host().unwrap_or("(blocklisted)"), taken_at = %t.at_rfc3339(),
            "volume {name} was {}: this host's access is cut; unmount it here, or mount it anew to take it back (volume.mount.preempt)",
            t.line());
        m.insert(name.clone(), t);
    }

    pub(super) fn get(&self, name: &VolumeName) -> Option<TakeOver> {
        read(&self.by_name).get(name).cloned()
    }

    pub(super) fn forget(&self, name: &VolumeName) {
        self.by_name
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// One line per take-over, for `berth status`.
    pub(super) fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = read(&self.by_name)
            .iter()
            .map(|(n, t)| format!("volume {n}: {}; unmount it here", t.line()))
            .collect();
        v.sort();
        v
    }
}
