//! Repair of the catalog index from a full scan, and the thread that
//! runs it (see the parent module).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tracing::{info, warn};

use super::{
    check_format, lock, parse, snapshot_entry, volume_entry, Index, RepairState, REPAIRED,
    REPAIR_CHECK, REPAIR_EVERY, SNAP, VOL,
};
use crate::driver::DriverResult;
use crate::state::SnapshotRecord;
use crate::sys::ceph::OmapObject;

impl Index {
    /// Makes the index agree with a full scan. Keys are changed only with
    /// guarded operations: a key is added only while absent (and dropped
    /// again if its volume went meanwhile), replaced only while it holds
    /// what the index read at the start, removed only when its volume is
    /// still absent when looked at again and the key unchanged. Entries of
    /// a newer format are left alone. Ends by stamping `repaired`.
    pub fn repair(&self) -> DriverResult<(usize, usize)> {
        let obj = self.object("(catalog)")?;
        let fail = |e| self.b.fail("(catalog)", "repair the catalog index", e);
        let before_v: BTreeMap<String, Vec<u8>> = obj
            .list(VOL)
            .map_err(fail)?
            .unwrap_or_default()
            .into_iter()
            .collect();
        let before_s: BTreeMap<String, Vec<u8>> = obj
            .list(SNAP)
            .map_err(fail)?
            .unwrap_or_default()
            .into_iter()
            .collect();
        let vols: Vec<(String, Vec<u8>)> = self
            .src
            .volumes()?
            .iter()
            .map(|r| (format!("{VOL}{}", r.name), volume_entry(r)))
            .collect();
        let snaps: Vec<(String, Vec<u8>)> = self
            .src
            .snapshots()?
            .iter()
            .map(|s| (format!("{SNAP}{}", s.name), snapshot_entry(s)))
            .collect();
        let src = self.src.clone();
        let fixed_v = self.reconcile(&obj, &before_v, vols, VOL, |name, _| {
            Ok(src.volume(name)?.is_some())
        })?;
        let fixed_s = self.reconcile(&obj, &before_s, snaps, SNAP, |name, raw| {
            // The snapshot's volume is in its entry: look there again.
            let Ok(s) = parse::<SnapshotRecord>(obj.name(), name, "snapshot", raw) else {
                return Ok(false);
            };
            Ok(src
                .snapshots_of(s.volume.as_str())?
                .iter()
                .any(|x| x.name == s.name))
        })?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        obj.set(&[(REPAIRED, now.as_bytes())]).map_err(fail)?;
        Ok((fixed_v, fixed_s))
    }

    /// One prefix of [`Index::repair`]; `exists` looks again whether
    /// the volume or snapshot of an entry (name, entry) exists. Returns
    /// how many keys it changed.
    fn reconcile(
        &self,
        obj: &OmapObject,
        before: &BTreeMap<String, Vec<u8>>,
        found: Vec<(String, Vec<u8>)>,
        prefix: &str,
        exists: impl Fn(&str, &[u8]) -> DriverResult<bool>,
    ) -> DriverResult<usize> {
        let fail = |e| self.b.fail("(catalog)", "repair the catalog index", e);
        let newer = |raw: &[u8]| {
            serde_json::from_slice::<Value>(raw)
                .ok()
                .is_some_and(|v| check_format("", &v).is_err())
        };
        let mut fixed = 0;
        let seen: BTreeSet<String> = found.iter().map(|(k, _)| k.clone()).collect();
        for (key, want) in found {
            let name = &key[prefix.len()..];
            match before.get(&key) {
                Some(have) if *have == want || newer(have) => {}
                Some(have) => {
                    if obj.set_if(&key, Some(have), &want).map_err(fail)? {
                        fixed += 1;
                    }
                }
                None => {
                    if obj.set_if(&key, None, &want).map_err(fail)? {
                        fixed += 1;
                        // Removed between the scan and the add: undo.
                        if !exists(name, &want)? {
                            obj.remove_if(&key, &want).map_err(fail)?;
                        }
                    }
                }
            }
        }
        for (key, have) in before.iter().filter(|(k, _)| !seen.contains(*k)) {
            if newer(have) || exists(&key[prefix.len()..], have)? {
                continue;
            }
            if obj.remove_if(key, have).map_err(fail)? {
                fixed += 1;
            }
        }
        Ok(fixed)
    }

    /// Seconds since the last full scan; `None`: never (or unreadable).
    fn repaired_age(&self) -> Option<Duration> {
        let raw = self.object("(catalog)").ok()?.get(REPAIRED).ok()??;
        let at: u64 = std::str::from_utf8(&raw).ok()?.trim().parse().ok()?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs();
        Some(Duration::from_secs(now.saturating_sub(at)))
    }
}

/// The repair thread: waits for a request or [`REPAIR_CHECK`], repairs
/// when asked or when the last full scan is older than [`REPAIR_EVERY`];
/// ends with its index.
pub(super) fn repair_loop(index: Weak<Index>, cv: Arc<(Mutex<RepairState>, Condvar)>) {
    // The first look soon after start-up: builds an index that is missing.
    let mut wait = Duration::from_secs(2);
    let mut failures = 0;
    loop {
        let asked = {
            let (m, c) = &*cv;
            let g = lock(m);
            let (mut g, _) = c
                .wait_timeout_while(g, wait, |s| !s.asked)
                .unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut g.asked) || std::mem::take(&mut g.owed)
        };
        wait = REPAIR_CHECK;
        let Some(index) = index.upgrade() else {
            return;
        };
        let due = asked || index.repaired_age().is_none_or(|a| a >= REPAIR_EVERY);
        if !due {
            continue;
        }
        let t = std::time::Instant::now();
        match index.repair() {
            Ok((v, s)) => {
                failures = 0;
                info!(volumes_fixed = v, snapshots_fixed = s, took = ?t.elapsed(),
                    "catalog index checked against a full scan");
            }
            Err(e) => {
                // Again soon, then less often while it keeps failing (an
                // unreachable cluster).
                failures += 1;
                wait = (Duration::from_secs(30) * failures).min(REPAIR_CHECK);
                warn!("catalog index repair failed (next try in {wait:?}): {e}");
                index.ask_later();
            }
        }
    }
}
