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

/// `/VolumeDriver.List` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListResponse {
    /// Volumes.
    #[serde(rename = "Volumes", default)]
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
