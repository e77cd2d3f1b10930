//! What Get, Path, List and status show, from memory only; used/free
//! figures come from a background sampler with its own deadline, so a
//! hung backend never holds up a read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{info, warn};

use super::{read, Entry, OperationView, ServiceStatus, VolumeService};
use crate::driver::{self, Usage, DEFAULT_POOL};
use crate::state::{Facts, VolumeRecord};
use crate::volume::{bytes_to_gb, VolumeName};

/// A volume as Get/List show it.
#[derive(Debug, Clone)]
pub struct VolumeView {
    /// Record snapshot.
    pub record: VolumeRecord,
    /// Path Docker uses, when mounted.
    pub mountpoint: Option<PathBuf>,
    /// Used/free bytes as last sampled.
    pub usage: Usage,
    /// Age of `usage` (`None`: not sampled yet).
    pub usage_age: Option<Duration>,
    /// The sample is older than it should be (its backend does not
    /// answer, or sampling is behind).
    pub usage_stale: bool,
    /// Filesystem as inspect shows it.
    pub fs_label: String,
    /// Driver-specific inspect fields.
    pub extra: BTreeMap<String, String>,
    /// Another host took the volume over while it was mounted here.
    pub taken_over: Option<driver::TakeOver>,
}

/// One used/free sample.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    usage: Usage,
    at: Instant,
}

/// Used/free figures of every volume, kept by the sampler.
#[derive(Debug, Default)]
pub(super) struct Samples {
    by_name: RwLock<HashMap<VolumeName, Sample>>,
    /// Volumes whose sampling passed its deadline and has not returned.
    hung: Mutex<HashSet<VolumeName>>,
    /// Asks for a round now (a mount, or a Get of an old sample).
    pub(super) wanted: tokio::sync::Notify,
}

impl Samples {
    pub(super) fn put(&self, name: &VolumeName, usage: Usage) {
        let s = Sample {
            usage,
            at: Instant::now(),
        };
        self.by_name
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), s);
    }

    pub(super) fn forget(&self, name: &VolumeName) {
        self.by_name
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    fn get(&self, name: &VolumeName) -> Option<Sample> {
        read(&self.by_name).get(name).copied()
    }

    fn is_hung(&self, name: &VolumeName) -> bool {
        self.hung
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    fn hung(&self) -> HashSet<VolumeName> {
        self.hung.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Age of the oldest usage sample (None: no samples).
    fn oldest(&self) -> Option<Duration> {
        read(&self.by_name).values().map(|s| s.at.elapsed()).max()
    }

    fn set_hung(&self, name: &VolumeName, hung: bool) {
        let mut h = self.hung.lock().unwrap_or_else(|p| p.into_inner());
        if hung {
            h.insert(name.clone());
        } else {
            h.remove(name);
        }
    }
}

impl VolumeService {
    pub(super) fn view_of(&self, e: &Entry) -> VolumeView {
        let root = read(&self.policy).root_path.clone();
        let every = self.lane.limits().sample_every;
        let sample = self.samples.get(&e.rec.name);
        let age = sample.map(|s| s.at.elapsed());
        let mounted = e.rec.mounted.is_some();
        if mounted && age.is_none_or(|a| a > Duration::from_secs(1)) {
            self.samples.wanted.notify_one();
        }
        let usage_stale = self.samples.is_hung(&e.rec.name)
            || (mounted && age.is_some_and(|a| a > every * 3 + Duration::from_secs(1)));
        VolumeView {
            record: e.rec.clone(),
            mountpoint: e
                .rec
                .mounted
                .as_ref()
                .map(|m| driver::data_path(&m.target, &root)),
            usage: sample.map(|s| s.usage).unwrap_or_default(),
            usage_age: age,
            usage_stale,
            fs_label: self.driver.fs_label(&e.rec),
            extra: self.driver.inspect_fields(&e.rec),
            taken_over: self.takeovers.get(&e.rec.name),
        }
    }

    /// Age of the oldest usage sample of the service's volumes (None
    /// when it has none): how stale `berth volume inspect` can be.
    pub fn oldest_sample_age(&self) -> Option<Duration> {
        self.samples.oldest()
    }

    /// `VolumeDriver.Get`.
    pub fn get(&self, name: &str) -> super::ServiceResult<VolumeView> {
        let name = VolumeName::parse(name)?;
        let cat = read(&self.catalog);
        let e = cat.get(&name).ok_or_else(|| self.missing(&name))?;
        Ok(self.view_of(e))
    }

    /// `VolumeDriver.Path`: the data path when mounted.
    pub fn path(&self, name: &str) -> super::ServiceResult<Option<PathBuf>> {
        let name = VolumeName::parse(name)?;
        let root = read(&self.policy).root_path.clone();
        let cat = read(&self.catalog);
        let e = cat.get(&name).ok_or_else(|| self.missing(&name))?;
        Ok(e.rec
            .mounted
            .as_ref()
            .map(|m| driver::data_path(&m.target, &root)))
    }

    /// Every volume (for the CLI).
    pub fn list_views(&self) -> Vec<VolumeView> {
        let cat = read(&self.catalog);
        cat.values().map(|e| self.view_of(e)).collect()
    }

    /// `VolumeDriver.List` response body, cached until the next change.
    pub fn list_body(
        &self,
        render: impl FnOnce(&mut dyn Iterator<Item = (&str, Option<PathBuf>, &str)>) -> Bytes,
    ) -> Bytes {
        if let Ok(c) = self.list_cache.lock() {
            if let Some(b) = c.as_ref() {
                return b.clone();
            }
        }
        let root = read(&self.policy).root_path.clone();
        let body = {
            let cat = read(&self.catalog);
            let mut it = cat.values().map(|e| {
                (
                    e.rec.name.as_str(),
                    e.rec
                        .mounted
                        .as_ref()
                        .map(|m| driver::data_path(&m.target, &root)),
                    e.rec.created_at.as_str(),
                )
            });
            render(&mut it)
        };
        if let Ok(mut c) = self.list_cache.lock() {
            *c = Some(body.clone());
        }
        body
    }

    /// The records refused at start-up, one line each.
    fn unreadable(&self) -> Vec<String> {
        let vols = read(&self.damaged);
        let snaps = read(&self.damaged_snapshots);
        vols.iter()
            .map(|(n, why)| format!("volume {n}: {why}"))
            .chain(snaps.iter().map(|(n, why)| format!("snapshot {n}: {why}")))
            .collect()
    }

    /// Counts for status lines.
    pub fn status(&self) -> ServiceStatus {
        let cat = read(&self.catalog);
        let mut busy: Vec<String> = self.lane.stuck().iter().map(|s| s.line()).collect();
        busy.extend(self.operations().iter().map(OperationView::line));
        // Volumes mounted here and not taken over by another host.
        let held = || {
            cat.values()
                .filter(|e| e.rec.mounted.is_some() && self.takeovers.get(&e.rec.name).is_none())
        };
        ServiceStatus {
            name: self.name.clone(),
            driver: self.driver.kind().to_string(),
            scope: self.scope.as_str().to_string(),
            volumes: cat.len(),
            mounted: held().count(),
            mount_users: held().map(|e| u64::from(e.rec.mount_count())).sum(),
            snapshots: read(&self.snapshots).len(),
            busy,
            stuck: self.lane.stuck().len(),
            problem: self.driver.health(),
            record_formats: read(&self.formats).clone(),
            unreadable: self.unreadable(),
            taken_over: self.takeovers.lines(),
        }
    }

    /// The service's background work until the process ends: samples
    /// used/free figures, and reconciles work that returned after its
    /// deadline.
    pub async fn run_background(self: Arc<Self>) {
        let every = self.lane.limits().sample_every;
        loop {
            for name in self.lane.take_late() {
                self.resync(&name).await;
            }
            self.sample_round(every).await;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.samples.wanted.notified() => {}
                _ = self.lane.late_ready.notified() => {}
            }
        }
    }

    /// Samples every mounted volume, and unmounted ones without a
    /// figure yet, on one blocking thread. A volume whose sampling does
    /// not return within `deadline` is skipped (shown stale) until it
    /// does; the other volumes go on in the next round.
    pub(super) async fn sample_round(&self, deadline: Duration) {
        let hung = self.samples.hung();
        let todo: Vec<(VolumeRecord, Option<PathBuf>)> = read(&self.catalog)
            .values()
            .filter(|e| !hung.contains(&e.rec.name))
            .filter(|e| e.rec.mounted.is_some() || self.samples.get(&e.rec.name).is_none())
            .map(|e| {
                (
                    e.rec.clone(),
                    e.rec.mounted.as_ref().map(|m| m.target.clone()),
                )
            })
            .collect();
        if todo.is_empty() {
            return;
        }
        let current: Arc<Mutex<Option<VolumeName>>> = Arc::default();
        let (driver, cur, this) = (self.driver.clone(), current.clone(), self.samples_handle());
        let (taken, service) = (self.takeovers.clone(), self.name.clone());
        let mut handle = tokio::task::spawn_blocking(move || {
            for (rec, target) in todo {
                *cur.lock().unwrap_or_else(|p| p.into_inner()) = Some(rec.name.clone());
                // Mounted here: does this host still hold it?
                if target.is_some() && taken.get(&rec.name).is_none() {
                    if let Ok(Some(t)) = driver.check_hold(&rec) {
                        taken.note(&service, &rec.name, t);
                    }
                }
                if let Ok(u) = driver.usage(&rec, target.as_deref()) {
                    this.put(&rec.name, u);
                }
            }
        });
        let limit = deadline.max(Duration::from_secs(2));
        if tokio::time::timeout(limit, &mut handle).await.is_ok() {
            return;
        }
        let Some(name) = current.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            return;
        };
        warn!(service = %self.name, volume = %name,
            "sampling the used/free space of {name} does not return; its figures are shown as stale until it does");
        self.samples.set_hung(&name, true);
        let (samples, service) = (self.samples_handle(), self.name.clone());
        tokio::spawn(async move {
            let _ = handle.await;
            samples.set_hung(&name, false);
            info!(service = %service, volume = %name, "sampling the used/free space of {name} returned");
        });
    }

    fn samples_handle(&self) -> Arc<Samples> {
        self.samples.clone()
    }
}

/// REX-Ray's inspect `Status` keys plus Berth's own, borrowed from a
/// view and serialized as they are (Get answers without building a map).
/// Fields in key order, so the JSON is the same as [`status_map`]'s
/// (driver fields come last).
#[derive(Debug, serde::Serialize)]
pub struct StatusFields<'a> {
    /// Whose storage an adopted volume was (`rexray`).
    #[serde(rename = "adoptedFrom", skip_serializing_if = "Option::is_none")]
    adopted_from: Option<&'static str>,
    /// `pending` (no Berth metadata yet: the first mount adopts it) or
    /// `adopted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    adoption: Option<&'static str>,
    #[serde(rename = "availabilityZone")]
    availability_zone: &'a str,
    #[serde(rename = "copyMethod", skip_serializing_if = "Option::is_none")]
    copy_method: Option<&'static str>,
    #[serde(rename = "dataGid")]
    data_gid: u32,
    #[serde(rename = "dataMode")]
    data_mode: String,
    #[serde(rename = "dataUid")]
    data_uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<std::borrow::Cow<'a, str>>,
    fields: (),
    #[serde(rename = "freeBytes")]
    free_bytes: Option<u64>,
    #[serde(rename = "fsType")]
    fs_type: &'a str,
    id: &'a str,
    iops: u64,
    #[serde(rename = "mountCount")]
    mount_count: u32,
    mounted: bool,
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    origin: &'a str,
    pool: &'a str,
    server: &'a str,
    service: &'a str,
    size: f64,
    #[serde(rename = "sizeBytes")]
    size_bytes: u64,
    /// Present (true) only when another host took the volume over.
    #[serde(rename = "takenOver", skip_serializing_if = "Option::is_none")]
    taken_over: Option<bool>,
    #[serde(rename = "takenOverAt", skip_serializing_if = "Option::is_none")]
    taken_over_at: Option<String>,
    /// The host, when known (absent when the host was only blocklisted).
    #[serde(rename = "takenOverBy", skip_serializing_if = "Option::is_none")]
    taken_over_by: Option<&'a str>,
    #[serde(rename = "takenOverReason", skip_serializing_if = "Option::is_none")]
    taken_over_reason: Option<String>,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(rename = "usageAgeSeconds")]
    usage_age_seconds: Option<u64>,
    #[serde(rename = "usageStale")]
    usage_stale: bool,
    #[serde(rename = "usedBytes")]
    used_bytes: u64,
    #[serde(flatten)]
    extra: &'a BTreeMap<String, String>,
}

impl<'a> StatusFields<'a> {
    /// The fields of `view`, served by `service`.
    pub fn of(view: &'a VolumeView, service: &'a str) -> Self {
        let r = &view.record;
        let t = view.taken_over.as_ref();
        let pool = if r.volume_type.is_empty() {
            DEFAULT_POOL
        } else {
            r.volume_type.as_str()
        };
        let adoption = r.adoption();
        StatusFields {
            adopted_from: adoption.map(|a| a.from().as_str()),
            adoption: adoption.map(|a| a.state_str()),
            availability_zone: &r.availability_zone,
            copy_method: r.copy_method().map(|m| m.as_str()),
            data_gid: r.gid,
            data_mode: format!("{:04o}", r.mode),
            data_uid: r.uid,
            device: r.mounted.as_ref().map(|m| m.device.to_string_lossy()),
            fields: (),
            free_bytes: view.usage.free,
            fs_type: &view.fs_label,
            id: &r.id,
            iops: r.iops,
            mount_count: r.mount_count(),
            // A volume another host took over is no longer mounted here
            // in any useful sense: its Docker users still have to unmount it.
            mounted: r.mounted.is_some() && t.is_none(),
            name: r.name.as_str(),
            origin: &r.origin,
            pool,
            server: service,
            service,
            size: bytes_to_gb(r.size),
            size_bytes: r.size,
            taken_over: t.map(|_| true),
            taken_over_at: t.map(|t| t.at_rfc3339()),
            taken_over_by: t.and_then(|t| t.host()),
            taken_over_reason: t.map(|t| t.line()),
            // REX-Ray's `type` is the class asked for; `pool` where it lives.
            kind: r.requested_type().unwrap_or(pool),
            usage_age_seconds: view.usage_age.map(|a| a.as_secs()),
            usage_stale: view.usage_stale,
            used_bytes: view.usage.used,
            extra: &view.extra,
        }
    }
}

/// REX-Ray's inspect `Status` keys plus Berth's own, as a map.
pub fn status_map(view: &VolumeView, service: &str) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(StatusFields::of(view, service)) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}
