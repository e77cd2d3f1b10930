//! The catalog index of a Ceph service: one RADOS object whose omap
//! holds every volume's and snapshot's record, so a List is a few reads
//! of one object whatever the number of volumes, and a Get one read.
//!
//! Keys (RADOS namespace [`NAMESPACE`]; object from [`Scan::place`]):
//! `v/<volume>` and `s/<snapshot>` hold `{"format":1,"volume":{…}}` /
//! `{"format":1,"snapshot":{…}}`; `repaired` holds the Unix time of the
//! last full scan (absent: the index was never built, and List answers
//! from the scan). Records stay in the volumes' own metadata too: that
//! is the truth the index is repaired from.
//!
//! Create and snapshot add their key after the volume and its metadata
//! exist; remove drops it after the volume is gone, and only while the
//! key still holds that volume (same id, compared by the OSD in the same
//! operation). Each update is one atomic omap operation, and updates of
//! different keys never meet, so two hosts cannot lose each other's.
//!
//! Repair compares the index with a full scan and fixes every key that
//! disagrees with guarded operations (see [`Index::repair`]). It runs on
//! its own thread, never on a List: when the index is not built yet,
//! when a Get found a volume the index lacked, and when the last full
//! scan is older than [`REPAIR_EVERY`] (checked every [`REPAIR_CHECK`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{error, warn};

use super::scan::Scan;
use super::{encode, encode_snapshot, Backend};
use crate::driver::{DriverError, DriverResult};
use crate::state::{SnapshotRecord, VolumeRecord};
use crate::sys::ceph::{Entries, OmapObject};

/// The format of index entries this berthd writes and the newest it
/// reads. Entries and metadata without a `format` are format 1.
pub const FORMAT: u64 = 1;

/// The RADOS namespace of the index object.
pub const NAMESPACE: &str = "berth";

/// A full scan is repeated when the last one is older than this.
pub const REPAIR_EVERY: Duration = Duration::from_secs(3600);

/// How often the repair thread looks at the age of the last scan.
pub const REPAIR_CHECK: Duration = Duration::from_secs(600);

const VOL: &str = "v/";
const SNAP: &str = "s/";
const REPAIRED: &str = "repaired";

/// The format of a stored record or entry: its `format` field, 1 when
/// absent. A newer one than [`FORMAT`] is refused, naming `object`.
pub fn check_format(object: &str, v: &Value) -> Result<(), String> {
    let format = v.get("format").and_then(Value::as_u64).unwrap_or(1);
    if format > FORMAT {
        return Err(format!(
            "{object} has format {format}; this berthd reads format {FORMAT} and older (upgrade berthd on this host)"
        ));
    }
    Ok(())
}

fn volume_entry(rec: &VolumeRecord) -> Vec<u8> {
    format!("{{\"format\":{FORMAT},\"volume\":{}}}", encode(rec)).into_bytes()
}

fn snapshot_entry(snap: &SnapshotRecord) -> Vec<u8> {
    format!(
        "{{\"format\":{FORMAT},\"snapshot\":{}}}",
        encode_snapshot(snap)
    )
    .into_bytes()
}

/// The record in an entry: `Err` names the object, key and reason.
fn parse<T: DeserializeOwned>(
    object: &str,
    key: &str,
    field: &str,
    raw: &[u8],
) -> Result<T, String> {
    let what = format!("catalog index entry {key} of {object}");
    let mut v: Value =
        serde_json::from_slice(raw).map_err(|e| format!("{what}: unreadable ({e})"))?;
    check_format(&what, &v)?;
    let inner = v
        .get_mut(field)
        .map(Value::take)
        .ok_or_else(|| format!("{what}: no {field}"))?;
    serde_json::from_value(inner).map_err(|e| format!("{what}: unreadable ({e})"))
}

/// Whether a repair was asked for (now, or owed after a failure).
#[derive(Debug, Default)]
struct RepairState {
    asked: bool,
    owed: bool,
}

/// The object's version before the last read of the index, and the
/// volumes and snapshots read then: while the version stays, a List is
/// one stat of the object.
#[derive(Debug, Default)]
struct Last {
    version: Option<u64>,
    volumes: Option<Vec<VolumeRecord>>,
    snapshots: Option<Vec<SnapshotRecord>>,
}

/// The catalog index of one service.
#[derive(Debug)]
pub struct Index {
    b: Arc<Backend>,
    src: Arc<dyn Scan>,
    place: Mutex<Option<(String, String)>>,
    repair: Arc<(Mutex<RepairState>, Condvar)>,
    /// Entries refused (newer format, unreadable): logged once each.
    refused: Mutex<BTreeSet<String>>,
    /// The volume entries of the last List, raw and parsed: the next one
    /// parses only the entries that changed.
    parsed: Mutex<HashMap<String, (Vec<u8>, VolumeRecord)>>,
    /// What the last List read, with the object's version before it.
    last: Mutex<Last>,
    /// The last read found the index built (a full scan no longer
    /// stands in for it).
    built: AtomicBool,
}

impl Index {
    /// The index of the service `src` scans; starts its repair thread.
    pub fn new(b: Arc<Backend>, src: Arc<dyn Scan>) -> Arc<Self> {
        let me = Arc::new(Index {
            b,
            src,
            place: Mutex::new(None),
            repair: Arc::default(),
            refused: Mutex::default(),
            parsed: Mutex::default(),
            last: Mutex::default(),
            built: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&me);
        let cv = me.repair.clone();
        let _ = std::thread::Builder::new()
            .name("ceph-catalog-repair".into())
            .spawn(move || repair::repair_loop(weak, cv));
        me
    }

    fn object(&self, what: &str) -> DriverResult<OmapObject> {
        let place = {
            let mut p = lock(&self.place);
            match p.as_ref() {
                Some(p) => p.clone(),
                None => {
                    let found = self.src.place()?;
                    *p = Some(found.clone());
                    found
                }
            }
        };
        let c = self.b.cluster(what)?;
        OmapObject::open(&c, &place.0, NAMESPACE, &place.1)
            .map_err(|e| self.b.fail(what, "open the catalog index", e))
    }

    fn refuse(&self, what: &str, reason: String) -> DriverError {
        DriverError::Backend {
            volume: what.to_string(),
            step: "read the catalog index",
            reason,
            errno: None,
        }
    }

    /// Logs a refused entry once.
    fn log_refused(&self, reason: &str) {
        if lock(&self.refused).insert(reason.to_string()) {
            error!("{reason}; not listed");
        }
    }

    /// Asks the repair thread for a full scan.
    pub fn ask_repair(&self) {
        let (m, cv) = &*self.repair;
        lock(m).asked = true;
        cv.notify_one();
    }

    /// A failed repair that was asked for is still owed: the next look
    /// repairs whatever the age of the last scan.
    fn ask_later(&self) {
        lock(&self.repair.0).owed = true;
    }

    /// Every entry under `prefix`, or `None` while the index was never
    /// built (then a repair is asked for).
    fn entries(&self, prefix: &str) -> DriverResult<Option<(String, Entries)>> {
        let obj = self.object("(catalog)")?;
        let built = obj
            .get(REPAIRED)
            .map_err(|e| self.b.fail("(catalog)", "read the catalog index", e))?
            .is_some();
        self.built.store(built, Ordering::Release);
        if !built {
            self.ask_repair();
            return Ok(None);
        }
        let list = obj
            .list(prefix)
            .map_err(|e| self.b.fail("(catalog)", "read the catalog index", e))?
            .unwrap_or_default();
        Ok(Some((obj.name().to_string(), list)))
    }

    /// Every volume: from the index, or from a full scan while the index
    /// is not built yet.
    pub fn volumes(&self) -> DriverResult<Vec<VolumeRecord>> {
        let version = self.version()?;
        {
            let last = lock(&self.last);
            if let (Some(v), Some(recs)) = (version, &last.volumes) {
                if last.version == Some(v) {
                    return Ok(recs.clone());
                }
            }
        }
        let Some(recs) = self.read_volumes()? else {
            // Not built: the scan answered; nothing kept.
            return self.src.volumes();
        };
        let mut last = lock(&self.last);
        if last.version != version {
            *last = Last {
                version,
                ..Last::default()
            };
        }
        last.volumes = Some(recs.clone());
        Ok(recs)
    }

    /// The index object's version once a read found the index built;
    /// `None` before (listings then come from a full scan, which no
    /// version covers) and when the object is gone.
    pub fn built_version(&self) -> DriverResult<Option<u64>> {
        if !self.built.load(Ordering::Acquire) {
            return Ok(None);
        }
        let v = self.version()?;
        if v.is_none() {
            self.built.store(false, Ordering::Release);
        }
        Ok(v)
    }

    /// The object's version (`None`: absent).
    fn version(&self) -> DriverResult<Option<u64>> {
        self.object("(catalog)")?
            .version()
            .map_err(|e| self.b.fail("(catalog)", "read the catalog index", e))
    }

    /// The volumes in the index; `None` while it was never built.
    fn read_volumes(&self) -> DriverResult<Option<Vec<VolumeRecord>>> {
        let Some((object, list)) = self.entries(VOL)? else {
            return Ok(None);
        };
        let mut cache = lock(&self.parsed);
        let mut next = HashMap::with_capacity(list.len());
        let mut out = Vec::with_capacity(list.len());
        for (key, raw) in list {
            let rec = match cache.remove(&key) {
                Some((had, rec)) if had == raw => rec,
                _ => match parse::<VolumeRecord>(&object, &key, "volume", &raw) {
                    Ok(rec) => rec,
                    Err(e) => {
                        self.log_refused(&e);
                        continue;
                    }
                },
            };
            out.push(rec.clone());
            next.insert(key, (raw, rec));
        }
        *cache = next;
        Ok(Some(out))
    }

    /// Every snapshot, as [`Index::volumes`].
    pub fn snapshots(&self) -> DriverResult<Vec<SnapshotRecord>> {
        let version = self.version()?;
        {
            let last = lock(&self.last);
            if let (Some(v), Some(snaps)) = (version, &last.snapshots) {
                if last.version == Some(v) {
                    return Ok(snaps.clone());
                }
            }
        }
        let Some(snaps) = self.read_snapshots()? else {
            return self.src.snapshots();
        };
        let mut last = lock(&self.last);
        if last.version != version {
            *last = Last {
                version,
                ..Last::default()
            };
        }
        last.snapshots = Some(snaps.clone());
        Ok(snaps)
    }

    /// The snapshots in the index; `None` while it was never built.
    fn read_snapshots(&self) -> DriverResult<Option<Vec<SnapshotRecord>>> {
        let Some((object, list)) = self.entries(SNAP)? else {
            return Ok(None);
        };
        Ok(Some(
            list.into_iter()
                .filter_map(|(k, v)| {
                    parse::<SnapshotRecord>(&object, &k, "snapshot", &v)
                        .map_err(|e| self.log_refused(&e))
                        .ok()
                })
                .collect(),
        ))
    }

    /// Volume `name`, from its own metadata, with its index key checked:
    /// a missing key (a volume made by an older berthd, or a key lost to
    /// a crash) is added, a key without its volume reported; either way a
    /// repair is asked for.
    pub fn volume(&self, name: &str) -> DriverResult<Option<VolumeRecord>> {
        // The volume's own metadata is the truth (a crash can leave a key
        // without its volume, or a volume without its key); the key is
        // brought in line with it, and a full scan asked for when they
        // disagree.
        let found = self.src.volume(name)?;
        let obj = self.object(name)?;
        let key = format!("{VOL}{name}");
        let raw = obj
            .get(&key)
            .map_err(|e| self.b.fail(name, "read the catalog index", e))?;
        if let Some(raw) = &raw {
            parse::<VolumeRecord>(obj.name(), &key, "volume", raw)
                .map_err(|e| self.refuse(name, e))?;
        }
        match (&found, raw.is_some()) {
            (Some(rec), false) => {
                warn!(volume = %name, index = %obj.name(),
                    "volume missing from the catalog index; added it, and a full scan will check the rest");
                if let Err(e) = obj.set_if(&key, None, &volume_entry(rec)) {
                    warn!(volume = %name, "could not add the volume to the catalog index: {e}");
                }
                self.ask_repair();
            }
            (None, true) => {
                warn!(volume = %name, index = %obj.name(),
                    "the catalog index names a volume that is gone; a full scan will drop it");
                self.ask_repair();
            }
            _ => {}
        }
        Ok(found)
    }

    /// Adds or updates volume `rec` (create, resize).
    pub fn put_volume(&self, rec: &VolumeRecord) -> DriverResult<()> {
        let name = rec.name.as_str();
        let obj = self.object(name)?;
        obj.set(&[(&format!("{VOL}{name}"), &volume_entry(rec))])
            .map_err(|e| self.b.fail(name, "add to the catalog index", e))
    }

    /// Drops volume `rec` (removed), unless the key holds another
    /// volume of that name by now.
    pub fn drop_volume(&self, rec: &VolumeRecord) -> DriverResult<()> {
        let name = rec.name.as_str();
        self.drop_key(name, &format!("{VOL}{name}"), |raw, object, key| {
            parse::<VolumeRecord>(object, key, "volume", raw).is_ok_and(|r| r.id == rec.id)
        })
    }

    /// Adds snapshot `snap`.
    pub fn put_snapshot(&self, snap: &SnapshotRecord) -> DriverResult<()> {
        let name = snap.name.as_str();
        let obj = self.object(name)?;
        obj.set(&[(&format!("{SNAP}{name}"), &snapshot_entry(snap))])
            .map_err(|e| self.b.fail(name, "add to the catalog index", e))
    }

    /// Drops snapshot `snap`, as [`Index::drop_volume`].
    pub fn drop_snapshot(&self, snap: &SnapshotRecord) -> DriverResult<()> {
        let name = snap.name.as_str();
        self.drop_key(name, &format!("{SNAP}{name}"), |raw, object, key| {
            parse::<SnapshotRecord>(object, key, "snapshot", raw).is_ok_and(|r| r.id == snap.id)
        })
    }

    fn drop_key(
        &self,
        name: &str,
        key: &str,
        ours: impl Fn(&[u8], &str, &str) -> bool,
    ) -> DriverResult<()> {
        let obj = self.object(name)?;
        let fail = |e| self.b.fail(name, "remove from the catalog index", e);
        // A changed value between the read and the guarded remove: read
        // again (another host's update of the same key).
        for _ in 0..5 {
            let Some(raw) = obj.get(key).map_err(fail)? else {
                return Ok(());
            };
            if !ours(&raw, obj.name(), key) {
                return Ok(());
            }
            if obj.remove_if(key, &raw).map_err(fail)? {
                return Ok(());
            }
        }
        self.ask_repair();
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[path = "index_repair.rs"]
mod repair;

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
