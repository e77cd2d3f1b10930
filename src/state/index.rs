//! The start-up index of a record directory: one file per service,
//! `<state_dir>/records/<service>.index`, holding every volume record
//! with the identity of the record file it came from, so a start reads
//! one file instead of one per volume.
//!
//! The index is a cache; the record files stay the truth. It is trusted
//! only when the record directory is exactly as it was when the index was
//! written: every record write is a rename into that directory (and every
//! removal an unlink), both of which change the directory's mtime and
//! ctime, so one `stat` of the directory tells whether any record was
//! created, replaced or removed since. The index is written with the
//! directory's timestamp at least [`SETTLE`] old, so a later change always
//! gets a different timestamp even with a coarse clock.
//!
//! Each record in the index is paired with what the store knows the file
//! to hold (the [`Ledger`]: inode, size, mtime and hash of the bytes it
//! wrote or read); at start each file is checked with one `stat`, so a
//! record edited in place (the directory unchanged) is read again.
//! A record whose in-memory copy differs from its file, a file the store
//! did not write or read (another process's), and an unreadable record
//! are listed by name instead, and read one by one at start.
//!
//! A missing, stale, damaged or newer-format index is ignored and every
//! record is read (the caller logs why, once).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::hash::Hasher;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{StateError, Store, StoredRecord, RECORD_VERSION};
use crate::sys::{fsutil, SysError};
use crate::volume::VolumeName;

/// Format of the index files this build writes.
pub const INDEX_VERSION: u32 = 1;

/// Oldest index format this build reads.
pub const OLDEST_INDEX_VERSION: u32 = 1;

/// How old the directory's timestamp must be when the index is written.
const SETTLE: Duration = Duration::from_millis(30);

/// What the store knows a record file to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMark {
    /// Inode of the file (a replacing file always has another).
    pub ino: u64,
    /// Its size.
    pub size: u64,
    /// Its mtime (seconds, nanoseconds): an edit in place changes it.
    pub mtime: (i64, i64),
    /// Hash of its bytes.
    pub hash: u64,
}

impl FileMark {
    /// The mark of `bytes` in the file of metadata `m`.
    pub fn of(m: &fs::Metadata, bytes: &[u8]) -> Self {
        FileMark {
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            hash: hash(bytes),
        }
    }

    /// Whether the file of metadata `m` is still the one marked.
    fn same_file(&self, m: &fs::Metadata) -> bool {
        (self.ino, self.size, self.mtime) == (m.ino(), m.len(), (m.mtime(), m.mtime_nsec()))
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// The marks of the records a store wrote or read, shared by its clones.
/// Writes hold `writes` shared; taking an index holds it alone, so no
/// write is half done (renamed but not noted) while it looks.
#[derive(Debug, Default)]
pub struct Ledger {
    pub(super) writes: RwLock<()>,
    pub(super) known: Mutex<HashMap<VolumeName, FileMark>>,
}

impl Ledger {
    pub(super) fn note(&self, name: &VolumeName, mark: Option<FileMark>) {
        let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
        match mark {
            Some(m) => k.insert(name.clone(), m),
            None => k.remove(name),
        };
    }
}

/// When a directory last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirStamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl DirStamp {
    fn of(dir: &Path) -> Result<Self, StateError> {
        let m = fs::metadata(dir).map_err(|e| SysError::io("stat", dir, e))?;
        Ok(DirStamp {
            dev: m.dev(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// How long ago it changed (zero when in the future).
    fn age(&self) -> Duration {
        let t = SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(self.mtime.0.max(self.ctime.0)).unwrap_or(0),
                u32::try_from(self.mtime.1.max(self.ctime.1)).unwrap_or(0),
            );
        SystemTime::now().duration_since(t).unwrap_or_default()
    }
}

/// One record of the index.
#[derive(Debug, Serialize, Deserialize)]
struct IndexEntry<T> {
    mark: FileMark,
    record: T,
}

/// The index file.
#[derive(Debug, Serialize, Deserialize)]
struct IndexFile<T> {
    version: u32,
    dir: DirStamp,
    records: Vec<IndexEntry<T>>,
    /// Record files to read one by one at start.
    reread: Vec<String>,
}

/// Just the format of an index, whatever else it holds.
#[derive(Deserialize)]
struct Probe {
    version: Option<u32>,
}

/// Why an index was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexUnused {
    /// There is none (first start, or written by an older berthd).
    #[error("no index at {0}")]
    Missing(PathBuf),
    /// Records changed since it was written (a crash, another berthd).
    #[error("{0} is stale: records changed since it was written")]
    Stale(PathBuf),
    /// It cannot be read.
    #[error("{path} is damaged: {reason}")]
    Damaged {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A newer berthd wrote it.
    #[error("{path} has index format {format}, newer than this berthd reads (formats {OLDEST_INDEX_VERSION} to {INDEX_VERSION})")]
    Newer {
        /// The index file.
        path: PathBuf,
        /// Its format.
        format: u32,
    },
}

/// What a valid index gave.
#[derive(Debug)]
pub struct FromIndex<T> {
    /// The records it holds (current format).
    pub records: Vec<T>,
    /// Record files it says to read one by one.
    pub reread: Vec<String>,
}

/// What writing an index did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexWritten {
    /// Records in it.
    pub records: usize,
    /// Records listed to be read one by one.
    pub reread: usize,
}

impl<T: StoredRecord> Store<T> {
    /// The index file of this store.
    pub fn index_path(&self) -> PathBuf {
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "records".into());
        self.dir
            .parent()
            .unwrap_or(&self.dir)
            .join(format!("{name}.index"))
    }

    /// Writes the index of `records` (what the caller holds in memory)
    /// atomically. Records the store cannot vouch for go to the re-read
    /// list, so the index is right whatever `records` holds.
    pub fn write_index<'a>(
        &self,
        records: impl Iterator<Item = &'a T>,
    ) -> Result<IndexWritten, StateError>
    where
        T: 'a,
    {
        let (dir, listed, known) = self.capture()?;
        let mut idx = IndexFile {
            version: INDEX_VERSION,
            dir,
            records: Vec::new(),
            reread: Vec::new(),
        };
        let mut covered = std::collections::HashSet::new();
        for rec in records {
            let name = rec.key();
            let (Some(ino), Some(known)) = (listed.get(name.as_str()), known.get(name)) else {
                continue;
            };
            let bytes = self.encode(rec)?;
            if *ino == known.ino && hash(&bytes) == known.hash {
                let mut r = rec.clone();
                r.set_format_version(RECORD_VERSION);
                idx.records.push(IndexEntry {
                    mark: *known,
                    record: r,
                });
                covered.insert(name.as_str().to_string());
            }
        }
        idx.reread = listed
            .into_keys()
            .filter(|n| !covered.contains(n))
            .collect();
        idx.reread.sort();
        let data = serde_json::to_vec(&idx).map_err(|e| {
            StateError::Setup(format!(
                "index of {}: cannot encode: {e}",
                self.dir.display()
            ))
        })?;
        fsutil::atomic_write(&self.index_path(), &data, 0o600)?;
        Ok(IndexWritten {
            records: idx.records.len(),
            reread: idx.reread.len(),
        })
    }

    /// The directory's stamp, its record files (name → inode) and the
    /// ledger, all at one moment with no write half done.
    #[allow(clippy::type_complexity)]
    fn capture(
        &self,
    ) -> Result<
        (
            DirStamp,
            BTreeMap<String, u64>,
            HashMap<VolumeName, FileMark>,
        ),
        StateError,
    > {
        let _alone = self
            .ledger
            .writes
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut before = DirStamp::of(&self.dir)?;
        if before.age() < SETTLE {
            std::thread::sleep(SETTLE);
            before = DirStamp::of(&self.dir)?;
        }
        let mut listed = BTreeMap::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| SysError::io("list", &self.dir, e))?;
        for e in entries {
            let e = e.map_err(|e| SysError::io("list", &self.dir, e))?;
            let fname = e.file_name().to_string_lossy().into_owned();
            if fname.starts_with('.') {
                continue;
            }
            if let Some(stem) = fname.strip_suffix(".json") {
                listed.insert(stem.to_string(), e.ino());
            }
        }
        let known = self
            .ledger
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let after = DirStamp::of(&self.dir)?;
        if after != before || after.age() < SETTLE {
            return Err(StateError::Setup(format!(
                "{} changed while its index was taken (another process writes records?)",
                self.dir.display()
            )));
        }
        Ok((before, listed, known))
    }

    /// Reads the index in one read; `Err` says why it cannot be used.
    /// On success the ledger knows every record it holds.
    pub fn read_index(&self) -> Result<FromIndex<T>, IndexUnused> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IndexUnused::Missing(path))
            }
            Err(e) => {
                return Err(IndexUnused::Damaged {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let damaged = |reason: String| IndexUnused::Damaged {
            path: path.clone(),
            reason,
        };
        let format = match serde_json::from_slice::<Probe>(&bytes) {
            Ok(Probe { version: Some(v) }) => v,
            Ok(Probe { version: None }) => return Err(damaged("no field `version`".into())),
            Err(e) => return Err(damaged(e.to_string())),
        };
        if format > INDEX_VERSION {
            return Err(IndexUnused::Newer {
                path: path.clone(),
                format,
            });
        }
        if format < OLDEST_INDEX_VERSION {
            return Err(damaged(format!(
                "index format {format}, which no berthd wrote"
            )));
        }
        let idx: IndexFile<T> =
            serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
        let now = DirStamp::of(&self.dir).map_err(|e| damaged(e.to_string()))?;
        if now != idx.dir {
            return Err(IndexUnused::Stale(path));
        }
        if let Some(e) = idx
            .records
            .iter()
            .find(|e| e.record.format_version() != RECORD_VERSION)
        {
            return Err(damaged(format!(
                "record {} is not in format {RECORD_VERSION}",
                e.record.key()
            )));
        }
        let marks: Vec<(PathBuf, FileMark)> = idx
            .records
            .iter()
            .map(|e| (self.dir.join(format!("{}.json", e.record.key())), e.mark))
            .collect();
        let same = unchanged(&marks);
        let mut records = Vec::with_capacity(idx.records.len());
        let mut reread = idx.reread;
        {
            let mut known = self.ledger.known.lock().unwrap_or_else(|p| p.into_inner());
            for (e, same) in idx.records.into_iter().zip(same) {
                if same {
                    known.insert(e.record.key().clone(), e.mark);
                    records.push(e.record);
                } else {
                    reread.push(e.record.key().to_string());
                }
            }
        }
        Ok(FromIndex { records, reread })
    }

    /// Removes the index (absent is fine).
    pub fn remove_index(&self) -> Result<(), StateError> {
        fsutil::remove_durable(&self.index_path())?;
        Ok(())
    }
}

/// For each record file, whether it is still the one marked (one `stat`
/// each, on a few threads; a record edited in place while berthd was
/// stopped is read again).
fn unchanged(marks: &[(PathBuf, FileMark)]) -> Vec<bool> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
        * 2;
    let chunk = marks.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = marks
            .chunks(chunk)
            .map(|part| {
                let n = part.len();
                let h = s.spawn(move || {
                    part.iter()
                        .map(|(p, mark)| fs::symlink_metadata(p).is_ok_and(|m| mark.same_file(&m)))
                        .collect::<Vec<bool>>()
                });
                (n, h)
            })
            .collect();
        // A thread that failed vouches for none of its records.
        handles
            .into_iter()
            .flat_map(|(n, h)| h.join().unwrap_or_else(|_| vec![false; n]))
            .collect()
    })
}
