//! CephFS subvolumes through the mgr `volumes` module (`ceph fs subvolume
//! …`, the interface Ceph CSI uses), sent with `rados_mgr_command`.
//!
//! Ceph 16.2.15 has `fs subvolume metadata set|get|ls|rm` (custom
//! key/values stored by the module in the subvolume's `.meta` file), so
//! metadata needs no fallback here.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{CephError, Cluster, Result};

/// A subvolume group of one filesystem.
#[derive(Debug, Clone)]
pub struct CephFs {
    /// The connection.
    pub cluster: Cluster,
    /// The filesystem ("volume" in the mgr's words), e.g. `cephfs`.
    pub fs: String,
    /// The subvolume group; empty = Ceph's default group (`_nogroup`).
    pub group: String,
}

/// What `fs subvolume info` reports (the fields Berth uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubvolumeInfo {
    /// Quota in bytes; `None` = unlimited.
    pub bytes_quota: Option<u64>,
    /// Bytes used (CephFS recursive statistics; updated lazily).
    pub bytes_used: u64,
    /// Creation time as Ceph prints it, `YYYY-MM-DD HH:MM:SS` (UTC).
    pub created_at: String,
    /// Path inside the filesystem (what to mount).
    pub path: String,
    /// Owner of the subvolume's root directory.
    pub uid: u32,
    /// Group of the subvolume's root directory.
    pub gid: u32,
    /// Mode of the root directory, including the type bits (`0o40750`).
    pub mode: u32,
    /// `complete`, or a clone's state while it is being cloned.
    pub state: String,
    /// The data pool.
    pub data_pool: String,
}

/// Progress of an asynchronous clone (`fs clone status`).
#[derive(Debug, Clone, PartialEq)]
pub struct CloneStatus {
    /// `pending`, `in-progress`, `complete`, `failed` or `canceled`.
    pub state: String,
    /// Percent copied, when the cluster reports it (Ceph 16 does not).
    pub progress: Option<f64>,
    /// Why it failed (`failed` state only).
    pub failure: Option<String>,
}

impl CloneStatus {
    /// The clone is usable.
    pub fn is_complete(&self) -> bool {
        self.state == "complete"
    }

    /// The clone will never complete.
    pub fn is_failed(&self) -> bool {
        self.state == "failed" || self.state == "canceled"
    }
}

#[derive(Deserialize)]
struct RawInfo {
    bytes_quota: Value,
    bytes_used: u64,
    created_at: String,
    path: String,
    uid: u32,
    gid: u32,
    mode: u32,
    state: String,
    data_pool: String,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

impl CephFs {
    /// A handle on `group` of filesystem `fs` (nothing is sent yet).
    pub fn new(cluster: Cluster, fs: impl Into<String>, group: impl Into<String>) -> Self {
        CephFs {
            cluster,
            fs: fs.into(),
            group: group.into(),
        }
    }

    fn object(&self, name: &str) -> String {
        let group = if self.group.is_empty() {
            "_nogroup"
        } else {
            &self.group
        };
        if name.is_empty() {
            format!("{}/{group}", self.fs)
        } else {
            format!("{}/{group}/{name}", self.fs)
        }
    }

    /// Sends `prefix` with `vol_name`, `group_name` and `args`; errors
    /// name `prefix` and `fs/group/name`.
    fn call(&self, prefix: &str, name: &str, args: Value) -> Result<Vec<u8>> {
        let mut cmd = Map::new();
        cmd.insert("prefix".into(), prefix.into());
        cmd.insert("vol_name".into(), self.fs.clone().into());
        if !self.group.is_empty() {
            cmd.insert("group_name".into(), self.group.clone().into());
        }
        if let Value::Object(extra) = args {
            cmd.extend(extra);
        }
        self.cluster
            .mgr_command_raw(&Value::Object(cmd))
            .map_err(|f| CephError::Command {
                op: prefix.to_string(),
                object: self.object(name),
                errno: f.errno,
                status: f.status,
            })
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        name: &str,
        out: &[u8],
    ) -> Result<T> {
        serde_json::from_slice(out).map_err(|e| CephError::Reply {
            op: prefix.to_string(),
            object: self.object(name),
            detail: format!("{e}: {}", head(out)),
        })
    }

    /// Creates the subvolume group if it does not exist (nothing to do for
    /// the default group).
    pub fn ensure_group(&self) -> Result<()> {
        if self.group.is_empty() {
            return Ok(());
        }
        // `fs subvolumegroup create` of an existing group succeeds.
        self.call("fs subvolumegroup create", "", json!({}))?;
        Ok(())
    }

    /// Creates a subvolume with a quota of `size` bytes (`None` =
    /// unlimited) whose root belongs to `uid:gid` with `mode` (permission
    /// bits, e.g. `0o755`).
    ///
    /// Ceph treats an existing subvolume as success and applies `size`,
    /// `uid`, `gid` and `mode` to it: check [`CephFs::info`] first when
    /// that matters.
    pub fn create(
        &self,
        name: &str,
        size: Option<u64>,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<()> {
        let mut args = json!({
            "sub_name": name,
            "uid": uid,
            "gid": gid,
            "mode": format!("{:o}", mode & 0o7777),
        });
        if let Some(s) = size {
            args["size"] = s.into();
        }
        self.call("fs subvolume create", name, args)?;
        Ok(())
    }

    /// Removes a subvolume (its data is purged asynchronously). With
    /// `force`, a missing subvolume is not an error. Fails (`ENOTEMPTY`)
    /// while it has snapshots.
    pub fn remove(&self, name: &str, force: bool) -> Result<()> {
        self.call(
            "fs subvolume rm",
            name,
            json!({ "sub_name": name, "force": force }),
        )?;
        Ok(())
    }

    /// The filesystem's metadata pool (`fs ls`, a mon command).
    pub fn metadata_pool(&self) -> Result<String> {
        let prefix = "fs ls";
        let out = self.cluster.mon_command(&json!({ "prefix": prefix }))?;
        let all: Vec<Value> = self.parse(prefix, "", &out)?;
        all.iter()
            .find(|f| f.get("name").and_then(Value::as_str) == Some(self.fs.as_str()))
            .and_then(|f| f.get("metadata_pool").and_then(Value::as_str))
            .map(str::to_string)
            .ok_or_else(|| CephError::Reply {
                op: prefix.into(),
                object: self.fs.clone(),
                detail: "no such filesystem, or it has no metadata pool".into(),
            })
    }

    /// Names of the group's subvolumes.
    pub fn list(&self) -> Result<Vec<String>> {
        let prefix = "fs subvolume ls";
        let out = self.call(prefix, "", json!({}))?;
        let v: Vec<Named> = self.parse(prefix, "", &out)?;
        Ok(v.into_iter().map(|n| n.name).collect())
    }

    /// Path of the subvolume inside the filesystem
    /// (`/volumes/<group>/<name>/<uuid>`): what ceph-fuse mounts.
    pub fn getpath(&self, name: &str) -> Result<String> {
        let prefix = "fs subvolume getpath";
        let out = self.call(prefix, name, json!({ "sub_name": name }))?;
        // Plain text, even with format=json.
        let path = String::from_utf8_lossy(&out).trim().to_string();
        if !path.starts_with('/') {
            return Err(CephError::Reply {
                op: prefix.into(),
                object: self.object(name),
                detail: format!("not a path: {}", head(&out)),
            });
        }
        Ok(path)
    }

    /// Quota, usage, path, owner, state of a subvolume.
    pub fn info(&self, name: &str) -> Result<SubvolumeInfo> {
        let prefix = "fs subvolume info";
        let out = self.call(prefix, name, json!({ "sub_name": name }))?;
        let raw: RawInfo = self.parse(prefix, name, &out)?;
        Ok(SubvolumeInfo {
            // An unlimited subvolume says "infinite".
            bytes_quota: raw.bytes_quota.as_u64(),
            bytes_used: raw.bytes_used,
            created_at: raw.created_at,
            path: raw.path,
            uid: raw.uid,
            gid: raw.gid,
            mode: raw.mode,
            state: raw.state,
            data_pool: raw.data_pool,
        })
    }

    /// Sets the quota to `size` bytes. Shrinking below what is used is
    /// refused (`no_shrink`).
    pub fn resize(&self, name: &str, size: u64) -> Result<()> {
        self.call(
            "fs subvolume resize",
            name,
            json!({ "sub_name": name, "new_size": size.to_string(), "no_shrink": true }),
        )?;
        Ok(())
    }

    /// Sets a custom metadata key of a subvolume.
    pub fn metadata_set(&self, name: &str, key: &str, value: &str) -> Result<()> {
        self.call(
            "fs subvolume metadata set",
            name,
            json!({ "sub_name": name, "key_name": key, "value": value }),
        )?;
        Ok(())
    }

    /// A custom metadata value; `None` when the key is not set.
    pub fn metadata_get(&self, name: &str, key: &str) -> Result<Option<String>> {
        match self.call(
            "fs subvolume metadata get",
            name,
            json!({ "sub_name": name, "key_name": key }),
        ) {
            // Plain text, even with format=json.
            Ok(out) => {
                let s = String::from_utf8_lossy(&out);
                Ok(Some(s.strip_suffix('\n').unwrap_or(&s).to_string()))
            }
            // ENOENT both for a missing key and a missing subvolume: tell
            // them apart by Ceph's message.
            Err(CephError::Command { errno, status, .. })
                if errno == libc::ENOENT && status.starts_with("key ") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// All custom metadata of a subvolume.
    pub fn metadata_list(&self, name: &str) -> Result<BTreeMap<String, String>> {
        let prefix = "fs subvolume metadata ls";
        let out = self.call(prefix, name, json!({ "sub_name": name }))?;
        self.parse(prefix, name, &out)
    }

    /// Removes a custom metadata key; a key that is not set is not an
    /// error.
    pub fn metadata_remove(&self, name: &str, key: &str) -> Result<()> {
        self.call(
            "fs subvolume metadata rm",
            name,
            json!({ "sub_name": name, "key_name": key, "force": true }),
        )?;
        Ok(())
    }

    /// Takes a snapshot of a subvolume.
    pub fn snapshot_create(&self, name: &str, snap: &str) -> Result<()> {
        self.call(
            "fs subvolume snapshot create",
            &format!("{name}@{snap}"),
            json!({ "sub_name": name, "snap_name": snap }),
        )?;
        Ok(())
    }

    /// Removes a snapshot (`EAGAIN` while clones from it are pending).
    /// With `force`, a missing snapshot is not an error.
    pub fn snapshot_remove(&self, name: &str, snap: &str, force: bool) -> Result<()> {
        self.call(
            "fs subvolume snapshot rm",
            &format!("{name}@{snap}"),
            json!({ "sub_name": name, "snap_name": snap, "force": force }),
        )?;
        Ok(())
    }

    /// Names of a subvolume's snapshots.
    pub fn snapshot_list(&self, name: &str) -> Result<Vec<String>> {
        let prefix = "fs subvolume snapshot ls";
        let out = self.call(prefix, name, json!({ "sub_name": name }))?;
        let v: Vec<Named> = self.parse(prefix, name, &out)?;
        Ok(v.into_iter().map(|n| n.name).collect())
    }

    /// Starts cloning `src@snap` into a new subvolume `target` of the same
    /// group. The copy runs in the mgr: poll [`CephFs::clone_status`]
    /// until complete; `target` cannot be used (or removed without
    /// `force`) before.
    pub fn snapshot_clone(&self, src: &str, snap: &str, target: &str) -> Result<()> {
        let mut args = json!({
            "sub_name": src,
            "snap_name": snap,
            "target_sub_name": target,
        });
        if !self.group.is_empty() {
            args["target_group_name"] = self.group.clone().into();
        }
        self.call(
            "fs subvolume snapshot clone",
            &format!("{src}@{snap} to {target}"),
            args,
        )?;
        Ok(())
    }

    /// State of a clone started with [`CephFs::snapshot_clone`].
    pub fn clone_status(&self, target: &str) -> Result<CloneStatus> {
        let prefix = "fs clone status";
        let out = self.call(prefix, target, json!({ "clone_name": target }))?;
        let v: Value = self.parse(prefix, target, &out)?;
        let status = &v["status"];
        let state = status["state"]
            .as_str()
            .ok_or_else(|| CephError::Reply {
                op: prefix.into(),
                object: self.object(target),
                detail: format!("no status.state: {}", head(&out)),
            })?
            .to_string();
        let progress = status["progress_report"]["percentage cloned"]
            .as_str()
            .and_then(|p| p.trim_end_matches('%').trim().parse().ok());
        let failure = status["failure"]["error_msg"].as_str().map(str::to_string);
        Ok(CloneStatus {
            state,
            progress,
            failure,
        })
    }
}

fn head(out: &[u8]) -> String {
    let s = String::from_utf8_lossy(out);
    s.chars().take(200).collect()
}
