//! Wire types of the Docker Volume Plugin API v1 (and Berth's additions),
//! shared by the server and the clients (`berth`, `dvdcli`).
//!
//! Requests are decoded leniently, as dockerd and dvdcli send them:
//! unknown fields are ignored, `Opts` may be null or absent, `ID` may be
//! absent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `/Plugin.Activate` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActivateResponse {
    /// `["VolumeDriver"]`.
    #[serde(rename = "Implements")]
    pub implements: Vec<String>,
}

/// Requests carrying only a name (Remove, Path, Get).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NameRequest {
    /// Volume name.
    #[serde(rename = "Name")]
    pub name: String,
}

/// `/VolumeDriver.Create`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateRequest {
    /// Volume name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Options (`--opt k=v`).
    #[serde(rename = "Opts", default, skip_serializing_if = "Option::is_none")]
    pub opts: Option<BTreeMap<String, String>>,
}

/// `/VolumeDriver.Mount` and `.Unmount`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountRequest {
    /// Volume name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Caller's mount ID (absent from dvdcli).
    #[serde(rename = "ID", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Answers with only `Err`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ErrResponse {
    /// Empty on success.
    #[serde(rename = "Err", default)]
    pub err: String,
}

/// Mount and Path answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct MountpointResponse {
    /// Host path ("" when not mounted, for Path).
    #[serde(rename = "Mountpoint", default)]
    pub mountpoint: String,
    /// Empty on success.
    #[serde(rename = "Err", default)]
    pub err: String,
}

/// A volume in Get/List answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    /// Name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Host path when mounted.
    #[serde(rename = "Mountpoint", default)]
    pub mountpoint: String,
    /// RFC 3339.
    #[serde(rename = "CreatedAt", default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Driver details (Get only).
    #[serde(rename = "Status", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `/VolumeDriver.Get` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GetResponse {
    /// The volume (`null` when not found, with `Err`).
    #[serde(rename = "Volume", default)]
    pub volume: Option<Volume>,
    /// Empty on success.
    #[serde(rename = "Err", default)]
    pub err: String,
}

/// `/VolumeDriver.Get` answer as the server writes it: the same JSON as
/// [`GetResponse`], from borrowed fields.
#[derive(Debug, Serialize)]
pub struct GetAnswer<'a, S: Serialize> {
    /// The volume.
    #[serde(rename = "Volume")]
    pub volume: VolumeAnswer<'a, S>,
    /// Empty on success.
    #[serde(rename = "Err")]
    pub err: &'a str,
}

/// A volume in a [`GetAnswer`].
#[derive(Debug, Serialize)]
pub struct VolumeAnswer<'a, S: Serialize> {
    /// Name.
    #[serde(rename = "Name")]
    pub name: &'a str,
    /// Host path when mounted.
    #[serde(rename = "Mountpoint")]
    pub mountpoint: std::borrow::Cow<'a, str>,
    /// RFC 3339.
    #[serde(rename = "CreatedAt")]
    pub created_at: &'a str,
    /// Driver details.
    #[serde(rename = "Status")]
    pub status: S,
}

/// `/VolumeDriver.List` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListResponse {
    /// Volumes.
    #[serde(rename = "Volumes", default, deserialize_with = "null_as_empty")]
    pub volumes: Vec<Volume>,
    /// Empty on success.
    #[serde(rename = "Err", default)]
    pub err: String,
}

/// `/VolumeDriver.Capabilities` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CapabilitiesResponse {
    /// `{"Scope": "local"|"global"}`.
    #[serde(rename = "Capabilities")]
    pub capabilities: Capabilities,
}

/// Capabilities.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Capabilities {
    /// Scope.
    #[serde(rename = "Scope")]
    pub scope: String,
}

/// `/Berth.Status` answer: the whole daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusResponse {
    /// Berth version.
    #[serde(rename = "Version")]
    pub version: String,
    /// Seconds since start.
    #[serde(rename = "UptimeSeconds")]
    pub uptime_seconds: u64,
    /// The service whose socket answered.
    #[serde(rename = "Service")]
    pub service: String,
    /// Every service.
    #[serde(rename = "Services")]
    pub services: Vec<ServiceInfo>,
}

/// One service in `/Berth.Status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceInfo {
    /// Name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Driver kind.
    #[serde(rename = "Driver")]
    pub driver: String,
    /// Scope.
    #[serde(rename = "Scope")]
    pub scope: String,
    /// Socket path.
    #[serde(rename = "Socket")]
    pub socket: String,
    /// Volumes.
    #[serde(rename = "Volumes")]
    pub volumes: usize,
    /// Mounted volumes.
    #[serde(rename = "Mounted")]
    pub mounted: usize,
    /// Sum of mount counts.
    #[serde(rename = "MountUsers")]
    pub mount_users: u64,
    /// Why the backend cannot serve now (absent when it can).
    #[serde(rename = "Problem", default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Storage operations past their deadline, one line each (absent
    /// when none).
    #[serde(rename = "Stuck", default, skip_serializing_if = "Vec::is_empty")]
    pub stuck: Vec<String>,
    /// Record files (volumes and snapshots) per format found in the
    /// state directory at start-up: format → count.
    #[serde(rename = "RecordFormats", default)]
    pub record_formats: std::collections::BTreeMap<u32, usize>,
    /// Records that could not be read (damaged, or of a newer format),
    /// one line each naming the file (absent when none).
    #[serde(rename = "Unreadable", default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// Mounted volumes another host took over, one line each (absent
    /// when none).
    #[serde(rename = "TakenOver", default, skip_serializing_if = "Vec::is_empty")]
    pub taken_over: Vec<String>,
}

/// `/Berth.List` answer: every volume with its Status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DetailedListResponse {
    /// Volumes with Status.
    #[serde(rename = "Volumes")]
    pub volumes: Vec<Volume>,
    /// Empty on success.
    #[serde(rename = "Err", default)]
    pub err: String,
}

/// A snapshot in `/Berth.Snapshot*` answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Snapshot name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Snapshot ID (the `snapshotID` create option takes it).
    #[serde(rename = "ID")]
    pub id: String,
    /// Volume it was taken from.
    #[serde(rename = "Volume")]
    pub volume: String,
    /// ID of that volume.
    #[serde(rename = "VolumeID")]
    pub volume_id: String,
    /// Whether that volume still exists.
    #[serde(rename = "VolumeExists")]
    pub volume_exists: bool,
    /// RFC 3339.
    #[serde(rename = "CreatedAt")]
    pub created_at: String,
    /// Size of the volume when taken, bytes.
    #[serde(rename = "SizeBytes")]
    pub size_bytes: u64,
    /// Bytes its storage takes (extents shared by a reflink count in full).
    #[serde(rename = "AllocatedBytes")]
    pub allocated_bytes: u64,
    /// Filesystem.
    #[serde(rename = "FsType")]
    pub fs_type: String,
    /// Storage pool.
    #[serde(rename = "Type")]
    pub volume_type: String,
    /// How it was copied: "reflink" or "copy" (empty when unknown).
    #[serde(rename = "CopyMethod", default)]
    pub copy_method: String,
    /// How long the mounted source was frozen, microseconds (absent when
    /// it was not mounted).
    #[serde(
        rename = "FrozenMicros",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub frozen_micros: Option<u64>,
}

/// `/Berth.SnapshotCreate`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotCreateRequest {
    /// Volume to snapshot.
    #[serde(rename = "Volume")]
    pub volume: String,
    /// Name of the new snapshot.
    #[serde(rename = "Name")]
    pub name: String,
}

/// `/Berth.SnapshotList` (all snapshots, or those of `Volume`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SnapshotListRequest {
    /// Only snapshots of this volume.
    #[serde(rename = "Volume", default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
}

/// `/Berth.SnapshotCreate` and `/Berth.SnapshotInspect` answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotResponse {
    /// The snapshot.
    #[serde(rename = "Snapshot", default)]
    pub snapshot: Option<Snapshot>,
    /// Empty on success.
    #[serde(rename = "Err", default)]
    pub err: String,
}

/// `/Berth.SnapshotList` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotListResponse {
    /// Snapshots, by name.
    #[serde(rename = "Snapshots", default)]
    pub snapshots: Vec<Snapshot>,
    /// Empty on success.
    #[serde(rename = "Err", default)]
    pub err: String,
}

/// `/Berth.VolumeResize`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResizeRequest {
    /// Volume name.
    #[serde(rename = "Name")]
    pub name: String,
    /// New size: GB, or with a unit ("2G", "1500M").
    #[serde(rename = "Size")]
    pub size: String,
}

/// `/Berth.VolumeImport`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImportRequest {
    /// Name of the new volume.
    #[serde(rename = "Name")]
    pub name: String,
    /// Absolute path of the image file to adopt.
    #[serde(rename = "Path")]
    pub path: String,
}

/// `/Berth.VolumeResize` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ResizeResponse {
    /// The size now, bytes.
    #[serde(rename = "SizeBytes", default)]
    pub size_bytes: u64,
    /// Empty on success.
    #[serde(rename = "Err", default)]
    pub err: String,
}

/// `/Berth.VolumeCreate` answer (the request is a [`CreateRequest`]):
/// what `VolumeDriver.Create` did, which answers only `{"Err": ""}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct VolumeCreateResponse {
    /// "created", "existed" or "disabled" (`create.disable` is set).
    #[serde(rename = "Outcome", default)]
    pub outcome: String,
    /// For an existing volume: each asked option it does not have (they
    /// were ignored), e.g. "size: 1.0 GiB, asked 2.0 GiB".
    #[serde(rename = "Differs", default, skip_serializing_if = "Vec::is_empty")]
    pub differs: Vec<String>,
    /// Empty on success.
    #[serde(rename = "Err", default)]
    pub err: String,
}

/// A long operation in `/Berth.Progress`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Operation {
    /// Operation ID.
    #[serde(rename = "ID")]
    pub id: u64,
    /// "snapshot", "clone" or "resize".
    #[serde(rename = "Kind")]
    pub kind: String,
    /// What is being made.
    #[serde(rename = "Target")]
    pub target: String,
    /// What it is made from.
    #[serde(rename = "Source")]
    pub source: String,
    /// Bytes done.
    #[serde(rename = "DoneBytes")]
    pub done_bytes: u64,
    /// Bytes to do (0: not known yet).
    #[serde(rename = "TotalBytes")]
    pub total_bytes: u64,
    /// Milliseconds since it started.
    #[serde(rename = "ElapsedMs")]
    pub elapsed_ms: u64,
}

/// `/Berth.Progress` answer: the service's long operations in flight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ProgressResponse {
    /// Operations.
    #[serde(rename = "Operations", default)]
    pub operations: Vec<Operation>,
    /// Empty on success.
    #[serde(rename = "Err", default)]
    pub err: String,
}

/// Go plugins encode an empty slice as `null`.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_accepts_null_volumes() {
        let r: ListResponse = serde_json::from_str(r#"{"Volumes":null,"Err":""}"#).expect("null");
        assert!(r.volumes.is_empty());
        let r: ListResponse = serde_json::from_str(r#"{"Err":""}"#).expect("absent");
        assert!(r.volumes.is_empty());
    }
}
