//! Durable state: one JSON record per volume (and per snapshot), written
//! atomically.
//!
//! One file per volume keeps the cost of a change flat however many
//! volumes exist (no rewrite of a global file), and a torn write can only
//! ever affect the record being changed — and atomic replace rules that
//! out too.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod facts;
mod format;
mod index;

use crate::sys::{fsutil, SysError};
use crate::volume::{FsType, MountId, VolumeName};

pub use format::{OLDEST_RECORD_VERSION, RECORD_VERSION};
pub use index::{
    FileMark, FromIndex, IndexUnused, IndexWritten, Ledger, INDEX_VERSION, OLDEST_INDEX_VERSION,
};

/// `driver_data` key of a volume record while a resize is in progress
/// (see [`VolumeRecord::resizing_to`]).
pub use facts::RESIZING_KEY;
pub use facts::{Adoption, CopyMethod, Facts};

/// Where a volume is in its lifecycle, as recorded on disk.
///
/// `Creating` and `Removing` are intents written *before* the work, so a
/// crash in the middle is finished or undone at the next start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Create in progress (undone at start-up if found).
    Creating,
    /// Usable.
    Ready,
    /// Remove in progress (completed at start-up if found).
    Removing,
}

/// Where a mounted volume is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// Block device, e.g. `/dev/loop3`.
    pub device: PathBuf,
    /// Mount point of the filesystem root.
    pub target: PathBuf,
}

/// Everything Berth knows about one volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Format version ([`format`]: read in every format from
    /// [`OLDEST_RECORD_VERSION`], always [`RECORD_VERSION`] in memory).
    pub version: u32,
    /// The volume name.
    pub name: VolumeName,
    /// Stable ID (shown in inspect).
    pub id: String,
    /// Lifecycle phase.
    pub phase: Phase,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Size in bytes.
    pub size: u64,
    /// Filesystem.
    pub fs_type: FsType,
    /// Volume type: the storage pool.
    #[serde(default)]
    pub volume_type: String,
    /// Requested IOPS (recorded).
    #[serde(default)]
    pub iops: u64,
    /// Availability zone (recorded).
    #[serde(default)]
    pub availability_zone: String,
    /// Owner of the data directory.
    pub uid: u32,
    /// Group of the data directory.
    pub gid: u32,
    /// Mode of the data directory.
    pub mode: u32,
    /// Apply `uid`/`gid`/`mode` to an existing data directory at the next
    /// mount (a clone asked for other owners than its source's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owner_pending: bool,
    /// What the volume was copied from ("volume NAME (ID)" or
    /// "snapshot NAME (ID)"); empty for a new filesystem.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    /// Driver-owned data (e.g. the image path).
    #[serde(default)]
    pub driver_data: BTreeMap<String, String>,
    /// Active mounts: mount ID → count (a multiset; "" = anonymous).
    #[serde(default)]
    pub mounts: BTreeMap<String, u32>,
    /// Where the volume is mounted while `mounts` is non-empty.
    #[serde(default)]
    pub mounted: Option<MountRecord>,
}

impl VolumeRecord {
    /// Total mount count.
    pub fn mount_count(&self) -> u32 {
        self.mounts.values().sum()
    }

    /// Adds one use by `id`.
    pub fn add_mount(&mut self, id: &MountId) {
        *self.mounts.entry(id.as_str().to_string()).or_insert(0) += 1;
    }

    /// Removes one use by `id`; `false` if `id` held none.
    pub fn remove_mount(&mut self, id: &MountId) -> bool {
        match self.mounts.get_mut(id.as_str()) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.mounts.remove(id.as_str());
                true
            }
            None => false,
        }
    }
}

/// A snapshot: a point-in-time copy of a volume, from which new volumes
/// can be created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Format version (as [`VolumeRecord::version`]).
    pub version: u32,
    /// The snapshot name (same rule as volume names).
    pub name: VolumeName,
    /// Stable ID (the `snapshotID` create option takes it).
    pub id: String,
    /// Lifecycle phase (`Creating` and `Removing` are intents, as for
    /// volumes).
    pub phase: Phase,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Name of the volume it was taken from.
    pub volume: VolumeName,
    /// ID of that volume (names can be reused after a remove).
    pub volume_id: String,
    /// Size of the volume when taken, bytes.
    pub size: u64,
    /// Filesystem.
    pub fs_type: FsType,
    /// Storage pool the snapshot lives in.
    #[serde(default)]
    pub volume_type: String,
    /// Data-directory owner of the source (inherited by new volumes).
    pub uid: u32,
    /// Data-directory group of the source.
    pub gid: u32,
    /// Data-directory mode of the source.
    pub mode: u32,
    /// Driver-owned data (e.g. the image path, how it was copied).
    #[serde(default)]
    pub driver_data: BTreeMap<String, String>,
}

/// What a store keeps: a JSON document keyed by a name.
pub trait StoredRecord: Serialize + serde::de::DeserializeOwned + Clone {
    /// What it is, for messages ("volume", "snapshot").
    const KIND: &'static str;
    /// The name the file is called after.
    fn key(&self) -> &VolumeName;
    /// Its format version.
    fn format_version(&self) -> u32;
    /// Sets its format version.
    fn set_format_version(&mut self, v: u32);
}

impl StoredRecord for VolumeRecord {
    const KIND: &'static str = "volume";
    fn key(&self) -> &VolumeName {
        &self.name
    }
    fn format_version(&self) -> u32 {
        self.version
    }
    fn set_format_version(&mut self, v: u32) {
        self.version = v;
    }
}

impl StoredRecord for SnapshotRecord {
    const KIND: &'static str = "snapshot";
    fn key(&self) -> &VolumeName {
        &self.name
    }
    fn format_version(&self) -> u32 {
        self.version
    }
    fn set_format_version(&mut self, v: u32) {
        self.version = v;
    }
}

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Writing or removing failed.
    #[error("state: {0}")]
    Sys(#[from] SysError),
    /// The service could not be set up.
    #[error("{0}")]
    Setup(String),
    /// A record could not be encoded.
    #[error("state record for {kind} {name}: cannot encode: {source}")]
    Encode {
        /// "volume" or "snapshot".
        kind: &'static str,
        /// Its name.
        name: String,
        /// Cause.
        source: serde_json::Error,
    },
}

/// A record that could not be read at start-up.
#[derive(Debug)]
pub struct BadRecord {
    /// Its path.
    pub path: PathBuf,
    /// The format it says it has, when it says one (a newer format than
    /// this build reads is refused with it).
    pub format: Option<u32>,
    /// Why (naming the file).
    pub reason: String,
}

/// What [`Store::load_counted`] found.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The readable records, by name, in the current format.
    pub records: Vec<T>,
    /// The unreadable ones (left on disk).
    pub bad: Vec<BadRecord>,
    /// Files per record format found (readable or not), for `berth status`.
    pub formats: BTreeMap<u32, usize>,
}

/// A directory of records, one JSON file per name, each written
/// atomically and durably.
#[derive(Debug)]
pub struct Store<T> {
    dir: PathBuf,
    /// What the store wrote or read, for the index (shared by clones).
    ledger: std::sync::Arc<Ledger>,
    _kind: std::marker::PhantomData<fn() -> T>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Store {
            dir: self.dir.clone(),
            ledger: self.ledger.clone(),
            _kind: std::marker::PhantomData,
        }
    }
}

/// The per-service volume record directory.
pub type RecordStore = Store<VolumeRecord>;

/// The per-service snapshot record directory.
pub type SnapshotStore = Store<SnapshotRecord>;

impl<T: StoredRecord> Store<T> {
    /// A store in `dir` (created if missing, mode 0700).
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        fsutil::ensure_dir(dir, 0o700)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            ledger: std::sync::Arc::default(),
            _kind: std::marker::PhantomData,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, name: &VolumeName) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Writes `rec` atomically and durably, in the current format (a
    /// record read in an older format is upgraded on disk here).
    pub fn save(&self, rec: &T) -> Result<(), StateError> {
        failpoint!("state.save");
        let data = self.encode(rec)?;
        let _writing = self.ledger.writes.read().unwrap_or_else(|p| p.into_inner());
        let written = fsutil::atomic_write_meta(&self.path_of(rec.key()), &data, 0o600);
        // A failed write may or may not have replaced the file: unknown.
        let mark = written.as_ref().ok().map(|m| FileMark::of(m, &data));
        self.ledger.note(rec.key(), mark);
        written?;
        Ok(())
    }

    /// The bytes [`Self::save`] writes for `rec`.
    fn encode(&self, rec: &T) -> Result<Vec<u8>, StateError> {
        let stamped;
        let rec = if rec.format_version() == RECORD_VERSION {
            rec
        } else {
            let mut r = rec.clone();
            r.set_format_version(RECORD_VERSION);
            stamped = r;
            &stamped
        };
        serde_json::to_vec_pretty(rec).map_err(|e| StateError::Encode {
            kind: T::KIND,
            name: rec.key().to_string(),
            source: e,
        })
    }

    /// Reads the record of `name`; `None` when there is none.
    pub fn load(&self, name: &VolumeName) -> Result<Option<T>, StateError> {
        let path = self.path_of(name);
        if !path.exists() {
            return Ok(None);
        }
        let fname = format!("{name}.json");
        read_record::<T>(&path, &fname)
            .map(|(r, _, mark)| {
                self.ledger.note(name, Some(mark));
                Some(r)
            })
            .map_err(|b| {
                StateError::Sys(SysError::io(
                    "read",
                    &b.path,
                    std::io::Error::other(b.reason),
                ))
            })
    }

    /// Removes the record of `name` durably.
    pub fn delete(&self, name: &VolumeName) -> Result<(), StateError> {
        failpoint!("state.delete");
        let _writing = self.ledger.writes.read().unwrap_or_else(|p| p.into_inner());
        self.ledger.note(name, None);
        fsutil::remove_durable(&self.path_of(name))?;
        Ok(())
    }

    /// Reads every record. Leftover temp files are removed; unreadable
    /// records are returned separately (and left on disk for a human).
    /// Files are read and parsed on a few threads: with 10 000 volumes the
    /// start-up time is mostly this.
    pub fn load_all(&self) -> Result<(Vec<T>, Vec<BadRecord>), StateError>
    where
        T: Send,
    {
        self.load_counted().map(|l| (l.records, l.bad))
    }

    /// [`Self::load_all`], also counting the record formats found.
    pub fn load_counted(&self) -> Result<Loaded<T>, StateError>
    where
        T: Send,
    {
        let entries = fs::read_dir(&self.dir).map_err(|e| SysError::io("list", &self.dir, e))?;
        let mut files = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            let fname = e.file_name().to_string_lossy().into_owned();
            if fname.starts_with('.') && fname.ends_with(".tmp") {
                // A write that crashed before its rename: the old record
                // (if any) is intact, the temp file is garbage.
                let _ = fs::remove_file(&path);
                continue;
            }
            if fname.ends_with(".json") {
                files.push((path, fname));
            }
        }
        Ok(self.read_files(files))
    }

    /// Reads the records of `names` (those an index lists to read one
    /// by one); absent files are skipped.
    pub fn load_named(&self, names: &[String]) -> Loaded<T>
    where
        T: Send,
    {
        let files = names
            .iter()
            .map(|n| {
                let fname = format!("{n}.json");
                (self.dir.join(&fname), fname)
            })
            .collect();
        let mut loaded = self.read_files(files);
        loaded.bad.retain(|b| b.format.is_some() || b.path.exists());
        loaded
    }

    /// Reads and parses `files` on a few threads: with many volumes the
    /// start-up time without an index is mostly this.
    fn read_files(&self, files: Vec<(PathBuf, String)>) -> Loaded<T>
    where
        T: Send,
    {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        let chunk = files.len().div_ceil(threads).max(1);
        type Read<T> = Result<(T, u32, FileMark), BadRecord>;
        let results: Vec<Read<T>> = std::thread::scope(|s| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|(p, f)| read_record::<T>(p, f))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(BadRecord {
                            path: PathBuf::new(),
                            format: None,
                            reason: "record reader thread panicked".into(),
                        })]
                    })
                })
                .collect()
        });
        let mut loaded = Loaded {
            records: Vec::with_capacity(results.len()),
            bad: Vec::new(),
            formats: BTreeMap::new(),
        };
        {
            let mut known = self.ledger.known.lock().unwrap_or_else(|p| p.into_inner());
            for r in results {
                let format = match r {
                    Ok((r, format, mark)) => {
                        known.insert(r.key().clone(), mark);
                        loaded.records.push(r);
                        Some(format)
                    }
                    Err(b) => {
                        let format = b.format;
                        loaded.bad.push(b);
                        format
                    }
                };
                if let Some(f) = format {
                    *loaded.formats.entry(f).or_insert(0) += 1;
                }
            }
        }
        loaded.records.sort_by(|a, b| a.key().cmp(b.key()));
        loaded
    }
}

/// Reads one record file, of any format this build reads; also returns
/// the format the file had.
fn read_record<T: StoredRecord>(path: &Path, fname: &str) -> Result<(T, u32, FileMark), BadRecord> {
    let stem = fname.strip_suffix(".json").unwrap_or(fname);
    let bad = |format: Option<u32>, reason: String| BadRecord {
        path: path.to_path_buf(),
        format,
        reason,
    };
    let (bytes, meta) =
        read_with_meta(path).map_err(|e| bad(None, format!("{}: {e}", path.display())))?;
    let (r, format) = format::decode::<T>(path, &bytes).map_err(|u| bad(u.format, u.reason))?;
    if r.key().as_str() != stem {
        return Err(bad(
            Some(format),
            format!("record names {} {} but file is {fname}", T::KIND, r.key()),
        ));
    }
    Ok((r, format, FileMark::of(&meta, &bytes)))
}

/// The bytes of `path` and its metadata, in the syscalls `fs::read` makes.
fn read_with_meta(path: &Path) -> std::io::Result<(Vec<u8>, fs::Metadata)> {
    use std::io::Read;
    let mut f = fs::File::open(path)?;
    let m = f.metadata()?;
    let mut bytes = Vec::with_capacity(usize::try_from(m.len()).unwrap_or(0) + 1);
    f.read_to_end(&mut bytes)?;
    Ok((bytes, m))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Ready record of 1 GiB ext4, for tests here and in the service.
    pub(crate) fn sample(name: &str) -> VolumeRecord {
        VolumeRecord {
            version: RECORD_VERSION,
            name: VolumeName::parse(name).expect("name"),
            id: "abc".into(),
            phase: Phase::Ready,
            created_at: "2026-01-01T00:00:00Z".into(),
            size: 1 << 30,
            fs_type: FsType::Ext4,
            volume_type: String::new(),
            iops: 0,
            availability_zone: String::new(),
            uid: 0,
            gid: 0,
            mode: 0o755,
            owner_pending: false,
            origin: String::new(),
            driver_data: BTreeMap::new(),
            mounts: BTreeMap::new(),
            mounted: None,
        }
    }

    #[test]
    fn snapshot_store_roundtrip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(&dir.path().join("snaps")).expect("open");
        let s = SnapshotRecord {
            version: RECORD_VERSION,
            name: VolumeName::parse("s1").expect("name"),
            id: "id1".into(),
            phase: Phase::Ready,
            created_at: "2026-01-01T00:00:00Z".into(),
            volume: VolumeName::parse("v1").expect("name"),
            volume_id: "vid".into(),
            size: 1 << 30,
            fs_type: FsType::Xfs,
            volume_type: "default".into(),
            uid: 1,
            gid: 2,
            mode: 0o750,
            driver_data: BTreeMap::new(),
        };
        store.save(&s).expect("save");
        let (good, bad) = store.load_all().expect("load");
        assert!(bad.is_empty());
        assert_eq!(good, vec![s.clone()]);
        store.delete(&s.name).expect("delete");
        assert!(store.load_all().expect("load").0.is_empty());
    }

    #[test]
    fn multiset_counts() {
        let mut r = sample("v");
        let a = MountId::parse(Some("a")).expect("id");
        r.add_mount(&a);
        r.add_mount(&a);
        r.add_mount(&MountId::anonymous());
        assert_eq!(r.mount_count(), 3);
        assert!(r.remove_mount(&a));
        assert_eq!(r.mount_count(), 2);
        assert!(r.remove_mount(&a));
        assert!(!r.remove_mount(&a), "a holds nothing any more");
        assert!(r.remove_mount(&MountId::anonymous()));
        assert_eq!(r.mount_count(), 0);
    }

    #[test]
    fn save_load_delete_roundtrip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RecordStore::open(&dir.path().join("svc")).expect("open");
        let mut r = sample("v1");
        r.add_mount(&MountId::parse(Some("x")).expect("id"));
        store.save(&r).expect("save");
        store.save(&sample("v2")).expect("save");
        std::fs::write(store.dir().join("broken.json"), b"{nope").expect("write");
        std::fs::write(store.dir().join(".v3.json.tmp"), b"partial").expect("write");
        let (good, bad) = store.load_all().expect("load");
        assert_eq!(good.len(), 2);
        assert_eq!(good[0], r);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].path.ends_with("broken.json"));
        assert!(!store.dir().join(".v3.json.tmp").exists(), "temp removed");
        store.delete(&r.name).expect("delete");
        store.delete(&r.name).expect("delete again is fine");
        assert_eq!(store.load_all().expect("load").0.len(), 1);
    }

    #[test]
    fn record_with_foreign_name_is_bad() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RecordStore::open(dir.path()).expect("open");
        store.save(&sample("v1")).expect("save");
        std::fs::rename(store.dir().join("v1.json"), store.dir().join("v9.json")).expect("mv");
        let (good, bad) = store.load_all().expect("load");
        assert!(good.is_empty());
        assert!(bad[0].reason.contains("v1"));
    }
}

#[cfg(test)]
mod index_tests;
