//! Facts that cross layers (a driver records them, the service and the
//! API show or act on them), kept in a record's `driver_data` map under
//! fixed keys — the on-disk format of version 1 — and read and written
//! only through these typed methods.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{SnapshotRecord, VolumeRecord};
use crate::config::Adopt;

/// Key of [`Facts::copy_method`].
const COPY_METHOD_KEY: &str = "copyMethod";
/// Key of [`Facts::frozen_for`].
const FROZEN_KEY: &str = "frozenMicros";
/// Key of [`VolumeRecord::adopted`].
const ADOPTED_KEY: &str = "berth.adopted";
/// Key of the source of [`VolumeRecord::adoption`].
const ADOPTED_FROM_KEY: &str = "berth.adoptedFrom";
/// Key of the state of [`VolumeRecord::adoption`].
const ADOPTION_KEY: &str = "berth.adoption";
/// Key of [`VolumeRecord::requested_type`].
const REQUESTED_TYPE_KEY: &str = "berth.requestedType";
/// Key of [`VolumeRecord::resizing_to`].
pub const RESIZING_KEY: &str = "resizingTo";

/// How a copy (a snapshot, a clone, a volume made from a snapshot) was
/// made, as inspect shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// Shared extents (xfs with reflink, btrfs).
    Reflink,
    /// A sparse copy of the data ranges.
    SparseCopy,
    /// An RBD snapshot and clone.
    RbdClone,
    /// A CephFS subvolume snapshot and clone.
    SubvolumeClone,
}

impl CopyMethod {
    /// The word inspect and the records use.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyMethod::Reflink => "reflink",
            CopyMethod::SparseCopy => "copy",
            CopyMethod::RbdClone => "rbd clone",
            CopyMethod::SubvolumeClone => "subvolume clone",
        }
    }

    /// The method a record names.
    pub fn parse(s: &str) -> Option<Self> {
        [
            CopyMethod::Reflink,
            CopyMethod::SparseCopy,
            CopyMethod::RbdClone,
            CopyMethod::SubvolumeClone,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// Where a volume made by another plugin is in its adoption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// Listed from the pool; no Berth metadata yet (the first mount
    /// writes it).
    Pending(Adopt),
    /// Berth's metadata is on the storage: a volume like any other that
    /// came from `Adopt`.
    Done(Adopt),
}

impl Adoption {
    /// Whose storage it was.
    pub fn from(self) -> Adopt {
        match self {
            Adoption::Pending(a) | Adoption::Done(a) => a,
        }
    }

    /// The word inspect shows.
    pub fn state_str(self) -> &'static str {
        match self {
            Adoption::Pending(_) => "pending",
            Adoption::Done(_) => "adopted",
        }
    }

    fn parse(from: &str, state: &str) -> Option<Self> {
        let a = Adopt::parse(from)?;
        match state {
            "pending" => Some(Adoption::Pending(a)),
            "adopted" => Some(Adoption::Done(a)),
            _ => None,
        }
    }
}

/// Facts every record can carry.
pub trait Facts {
    /// The record's driver data.
    fn data(&self) -> &BTreeMap<String, String>;
    /// The record's driver data, to change.
    fn data_mut(&mut self) -> &mut BTreeMap<String, String>;

    /// How the record's content was copied, when it is a copy.
    fn copy_method(&self) -> Option<CopyMethod> {
        self.data()
            .get(COPY_METHOD_KEY)
            .and_then(|s| CopyMethod::parse(s))
    }

    /// Records how the content was copied.
    fn set_copy_method(&mut self, m: CopyMethod) {
        self.data_mut()
            .insert(COPY_METHOD_KEY.into(), m.as_str().into());
    }

    /// How long writers of the source were held (frozen) for the copy.
    fn frozen_for(&self) -> Option<Duration> {
        self.data()
            .get(FROZEN_KEY)
            .and_then(|s| s.parse().ok())
            .map(Duration::from_micros)
    }

    /// Records how long writers were held.
    fn set_frozen_for(&mut self, d: Duration) {
        self.data_mut()
            .insert(FROZEN_KEY.into(), d.as_micros().to_string());
    }
}

impl Facts for VolumeRecord {
    fn data(&self) -> &BTreeMap<String, String> {
        &self.driver_data
    }
    fn data_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.driver_data
    }
}

impl Facts for SnapshotRecord {
    fn data(&self) -> &BTreeMap<String, String> {
        &self.driver_data
    }
    fn data_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.driver_data
    }
}

impl VolumeRecord {
    /// Whether the volume's storage was there before Berth created it
    /// (an image an operator put in place): an interrupted create gives
    /// it back untouched.
    pub fn adopted(&self) -> bool {
        self.driver_data
            .get(ADOPTED_KEY)
            .is_some_and(|v| v == "true")
    }

    /// Marks the storage as adopted.
    pub fn set_adopted(&mut self) {
        self.driver_data.insert(ADOPTED_KEY.into(), "true".into());
    }

    /// Whether (and how far) the volume was adopted from storage another
    /// plugin made ([`Adoption`]).
    pub fn adoption(&self) -> Option<Adoption> {
        Adoption::parse(
            self.driver_data.get(ADOPTED_FROM_KEY)?,
            self.driver_data.get(ADOPTION_KEY)?,
        )
    }

    /// Whether the volume still waits for its first mount to be adopted.
    pub fn adoption_pending(&self) -> bool {
        matches!(self.adoption(), Some(Adoption::Pending(_)))
    }

    /// Records the adoption state.
    pub fn set_adoption(&mut self, a: Adoption) {
        self.driver_data
            .insert(ADOPTED_FROM_KEY.into(), a.from().as_str().into());
        self.driver_data
            .insert(ADOPTION_KEY.into(), a.state_str().into());
    }

    /// The `volumeType` a create asked for that names no pool of the
    /// service (REX-Ray's storage classes: `io1`, `gp2`…): recorded and
    /// shown; the volume lives in the default pool.
    pub fn requested_type(&self) -> Option<&str> {
        self.driver_data.get(REQUESTED_TYPE_KEY).map(String::as_str)
    }

    /// Records a requested type that names no pool.
    pub fn set_requested_type(&mut self, t: &str) {
        self.driver_data
            .insert(REQUESTED_TYPE_KEY.into(), t.to_string());
    }

    /// The size a resize in progress is growing the storage to.
    pub fn resizing_to(&self) -> Option<u64> {
        self.driver_data
            .get(RESIZING_KEY)
            .and_then(|s| s.parse().ok())
    }

    /// Records (`Some`) or clears (`None`) a resize in progress.
    pub fn set_resizing_to(&mut self, size: Option<u64>) {
        match size {
            Some(s) => self.driver_data.insert(RESIZING_KEY.into(), s.to_string()),
            None => self.driver_data.remove(RESIZING_KEY),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_methods_round_trip_through_their_words() {
        for m in [
            CopyMethod::Reflink,
            CopyMethod::SparseCopy,
            CopyMethod::RbdClone,
            CopyMethod::SubvolumeClone,
        ] {
            assert_eq!(CopyMethod::parse(m.as_str()), Some(m));
        }
        assert_eq!(CopyMethod::parse("teleport"), None);
    }

    #[test]
    fn adoption_round_trips_through_the_record() {
        let mut rec: VolumeRecord = serde_json::from_str(
            r#"{"version":1,"name":"v","id":"rbd.v","phase":"ready","created_at":"",
               "size":0,"fs_type":"ext4","uid":0,"gid":0,"mode":493}"#,
        )
        .expect("record");
        assert_eq!(rec.adoption(), None);
        rec.set_adoption(Adoption::Pending(Adopt::Rexray));
        assert!(rec.adoption_pending());
        rec.set_adoption(Adoption::Done(Adopt::Rexray));
        assert_eq!(rec.adoption(), Some(Adoption::Done(Adopt::Rexray)));
        assert!(!rec.adoption_pending());
    }
}
