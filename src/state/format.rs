//! Format versions of the records: which ones this build reads, how an
//! older one is brought up to date, and the refusal of a newer one.
//!
//! Every record carries its format in the integer field `version` (there
//! since the first release, so every record Berth ever wrote has it).
//! A record is read in any format from [`OLDEST_RECORD_VERSION`] to
//! [`RECORD_VERSION`]: an older one is upgraded in memory, step by step
//! ([`UPGRADES`]), and reaches the disk in the current format only when
//! the record is next written (atomically, like every write). A record of
//! a newer format is refused with its path and format, and left as it is.
//!
//! The format changes only when an older berthd would misread a record
//! written in the new layout; a field an older build can safely ignore
//! (serde skips unknown fields) is added without a new format, so that a
//! rollback keeps reading it.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::StoredRecord;

/// Format of the records this build writes.
pub const RECORD_VERSION: u32 = 1;

/// Oldest format this build reads (the first release's).
pub const OLDEST_RECORD_VERSION: u32 = 1;

/// One step up: turns a record of format `from` (as JSON) into format
/// `from + 1`. The step of format N is `UPGRADES[N - OLDEST]`.
type Upgrade = fn(&mut serde_json::Map<String, Value>) -> Result<(), String>;

/// The upgrade steps, oldest first: empty while every format ever
/// written is the current one.
const UPGRADES: [Upgrade; (RECORD_VERSION - OLDEST_RECORD_VERSION) as usize] = [];

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The format it says it has, when it says one.
    pub format: Option<u32>,
    /// What is wrong, naming the file.
    pub reason: String,
}

/// Just the format of a record, whatever else it holds.
#[derive(Deserialize)]
struct Probe {
    version: Option<u32>,
}

/// Parses the record in `bytes` (read from `path`), of any format this
/// build reads; returns it in the current format with the format the
/// file had.
pub fn decode<T: StoredRecord>(path: &Path, bytes: &[u8]) -> Result<(T, u32), Unreadable> {
    // The common case in one parse: a record of the current format.
    if let Ok(r) = serde_json::from_slice::<T>(bytes) {
        if r.format_version() == RECORD_VERSION {
            return Ok((r, RECORD_VERSION));
        }
    }
    let bad = |format: Option<u32>, reason: String| Unreadable { format, reason };
    let format = match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe { version: Some(v) }) => v,
        Ok(Probe { version: None }) => {
            return Err(bad(
                None,
                format!("{}: no format version (field `version`)", path.display()),
            ))
        }
        Err(e) => return Err(bad(None, format!("{}: {e}", path.display()))),
    };
    if format > RECORD_VERSION {
        return Err(bad(
            Some(format),
            format!(
                "{} has record format {format}, newer than this berthd reads \
                 (formats {OLDEST_RECORD_VERSION} to {RECORD_VERSION}): it was written by a \
                 newer berthd; the file is left as it is",
                path.display()
            ),
        ));
    }
    if format < OLDEST_RECORD_VERSION {
        return Err(bad(
            Some(format),
            format!(
                "{} has record format {format}, which no berthd wrote \
                 (formats {OLDEST_RECORD_VERSION} to {RECORD_VERSION} are read)",
                path.display()
            ),
        ));
    }
    let parsed = if format == RECORD_VERSION {
        serde_json::from_slice::<T>(bytes).map_err(|e| e.to_string())
    } else {
        upgrade(bytes, format)
            .and_then(|v| serde_json::from_value::<T>(v).map_err(|e| e.to_string()))
    };
    parsed.map(|r| (r, format)).map_err(|e| {
        bad(
            Some(format),
            format!("{} (record format {format}): {e}", path.display()),
        )
    })
}

/// Brings a record of an older `format` up to the current one.
fn upgrade(bytes: &[u8], format: u32) -> Result<Value, String> {
    let mut v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let map = v
        .as_object_mut()
        .ok_or_else(|| "not a JSON object".to_string())?;
    for (i, step) in UPGRADES.iter().enumerate() {
        let from = OLDEST_RECORD_VERSION + i as u32;
        if from >= format {
            step(map).map_err(|e| format!("upgrading format {from} to {}: {e}", from + 1))?;
        }
    }
    map.insert("version".into(), Value::from(RECORD_VERSION));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::VolumeRecord;

    const V1: &[u8] = include_bytes!("../../tests/fixtures/v1/loop/records/berth/mounted.json");

    fn with_version(v: u32) -> Vec<u8> {
        let mut j: Value = serde_json::from_slice(V1).expect("fixture");
        j["version"] = Value::from(v);
        serde_json::to_vec(&j).expect("encode")
    }

    #[test]
    fn current_format_reads() {
        let (r, f) = decode::<VolumeRecord>(Path::new("/x/mounted.json"), V1).expect("v1");
        assert_eq!(f, 1);
        assert_eq!(r.version, RECORD_VERSION);
        assert_eq!(r.mount_count(), 4);
    }

    #[test]
    fn newer_format_is_refused_naming_file_and_format() {
        let e = decode::<VolumeRecord>(Path::new("/x/mounted.json"), &with_version(7))
            .expect_err("format 7 is newer");
        assert_eq!(e.format, Some(7));
        assert!(e.reason.contains("/x/mounted.json"), "{}", e.reason);
        assert!(e.reason.contains("record format 7, newer"), "{}", e.reason);
    }

    #[test]
    fn newer_format_with_an_unparsable_layout_still_says_newer() {
        // A future layout the current types cannot parse at all.
        let text = br#"{"version": 9, "name": {"new": "shape"}, "mounts": [1, 2]}"#;
        let e = decode::<VolumeRecord>(Path::new("/x/v.json"), text).expect_err("newer");
        assert_eq!(e.format, Some(9));
        assert!(
            e.reason.contains("newer than this berthd reads"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn no_format_or_never_written_format_is_refused() {
        let mut j: Value = serde_json::from_slice(V1).expect("fixture");
        j.as_object_mut().expect("object").remove("version");
        let text = serde_json::to_vec(&j).expect("encode");
        let e = decode::<VolumeRecord>(Path::new("/x/v.json"), &text).expect_err("no version");
        assert_eq!(e.format, None);
        assert!(e.reason.contains("no format version"), "{}", e.reason);
        let e = decode::<VolumeRecord>(Path::new("/x/v.json"), &with_version(0)).expect_err("0");
        assert_eq!(e.format, Some(0));
        assert!(e.reason.contains("which no berthd wrote"), "{}", e.reason);
    }

    #[test]
    fn damaged_current_record_names_the_file() {
        let e =
            decode::<VolumeRecord>(Path::new("/x/v.json"), &V1[..V1.len() / 2]).expect_err("cut");
        assert!(e.reason.starts_with("/x/v.json"), "{}", e.reason);
    }

    #[test]
    fn upgrade_stamps_the_current_format() {
        let v = upgrade(V1, RECORD_VERSION).expect("no steps");
        assert_eq!(v["version"], Value::from(RECORD_VERSION));
        let r: VolumeRecord = serde_json::from_value(v).expect("parse");
        assert_eq!(r.name.as_str(), "mounted");
    }
}
