//! The daemon's main job: load config, open and reconcile every service,
//! take or bind the sockets, tell systemd, serve until SIGTERM, reload on
//! SIGHUP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::api::{self, Registry};
use crate::config::Settings;
use crate::service::{Namespace, VolumeService};
use crate::systemd;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A service could not be opened.
    #[error("service {service}: {reason}")]
    Service {
        /// Service name.
        service: String,
        /// Why.
        reason: String,
    },
    /// Runtime set-up failed.
    #[error("{0}")]
    Runtime(String),
}

/// Where the config comes from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// Path.
    pub path: PathBuf,
    /// Given with `--config` (a missing file is then an error).
    pub explicit: bool,
    /// `--service NAME` selection (empty: every configured service).
    pub only: Vec<String>,
}

impl ConfigSource {
    /// Loads the settings.
    pub fn load(&self) -> Result<Settings, crate::config::ConfigError> {
        Settings::load_only(&self.path, self.explicit, &self.only)
    }
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn status_line(reg: &Registry) -> String {
    let parts: Vec<String> = reg
        .services
        .values()
        .map(|s| {
            let st = s.status();
            let mut line = format!(
                "{}: {}, {} mounted, {}",
                st.name,
                count(st.volumes, "volume"),
                st.mounted,
                count(st.snapshots, "snapshot")
            );
            // Long copies (snapshot, clone) show their progress here.
            if let Some(p) = &st.problem {
                line.push_str(&format!(" (unavailable: {p})"));
            }
            if !st.unreadable.is_empty() {
                line.push_str(&format!(
                    " ({} refused: see berth status)",
                    count(st.unreadable.len(), "unreadable record")
                ));
            }
            for b in st.busy.iter().chain(&st.taken_over) {
                line.push_str(&format!(" [{b}]"));
            }
            line
        })
        .collect();
    format!(
        "serving {} service(s) — {}",
        reg.services.len(),
        parts.join("; ")
    )
}

/// The signals berthd handles.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers: a `systemctl reload` (SIGHUP) or stop that
    /// arrives while the state loads must not kill berthd with the
    /// default action. Signals received meanwhile are handled once serving.
    fn install() -> Result<Self, DaemonError> {
        let one = |kind: SignalKind, what: &str| {
            signal(kind).map_err(|e| DaemonError::Runtime(format!("{what} handler: {e}")))
        };
        Ok(Signals {
            term: one(SignalKind::terminate(), "SIGTERM")?,
            int: one(SignalKind::interrupt(), "SIGINT")?,
            hup: one(SignalKind::hangup(), "SIGHUP")?,
        })
    }
}

/// The plugin sockets, ready to serve.
struct Listening {
    endpoints: Vec<api::Endpoint>,
    /// Socket path of each service.
    sockets: BTreeMap<String, String>,
    /// Sockets berthd bound itself (removed on exit).
    own: Vec<PathBuf>,
}

/// systemd's sockets by name, else our own.
fn listen(
    settings: &Settings,
    passed: Vec<(String, std::os::unix::net::UnixListener)>,
) -> Result<Listening, DaemonError> {
    let mut passed: BTreeMap<String, std::os::unix::net::UnixListener> =
        passed.into_iter().collect();
    let mut l = Listening {
        endpoints: Vec::new(),
        sockets: BTreeMap::new(),
        own: Vec::new(),
    };
    for (name, svc_settings) in &settings.services {
        let err = |reason: String| DaemonError::Service {
            service: name.clone(),
            reason,
        };
        let (std_listener, path, ours) = match passed.remove(name) {
            Some(sock) => {
                let path = sock
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(Path::to_path_buf))
                    .unwrap_or_default();
                let d = &settings.daemon;
                if let Some(w) =
                    systemd::disagreement(&path, d.socket_mode, d.socket_group.as_deref())
                {
                    warn!(service = %name, "{w}");
                }
                (sock, path, false)
            }
            None => {
                let path = settings.socket_path(name);
                let d = &settings.daemon;
                let sock = systemd::bind(&path, d.socket_mode, d.socket_group.as_deref())
                    .map_err(|e| err(e.to_string()))?;
                l.own.push(path.clone());
                (sock, path, true)
            }
        };
        let listener = UnixListener::from_std(std_listener)
            .map_err(|e| err(format!("cannot use socket {}: {e}", path.display())))?;
        info!(service = %name, socket = %path.display(),
            activation = if ours { "bound by berthd" } else { "passed by systemd" }, "listening");
        l.sockets
            .insert(name.clone(), path.to_string_lossy().into_owned());
        l.endpoints.push(api::Endpoint {
            listener,
            service: name.clone(),
            scope: svc_settings.scope,
        });
    }
    for (name, _) in passed {
        warn!(socket_name = %name, "systemd passed a socket for a service that is not configured; closing it");
    }
    Ok(l)
}

/// Sets up every service (nothing loaded yet) on a blocking thread.
async fn make_services(
    settings: &Settings,
    changed: &Arc<tokio::sync::Notify>,
) -> Result<BTreeMap<String, Arc<VolumeService>>, DaemonError> {
    let ns = Arc::new(Namespace::default());
    let mut services = BTreeMap::new();
    for name in settings.services.keys() {
        let (s, n, ns, changed) = (settings.clone(), name.clone(), ns.clone(), changed.clone());
        let svc = tokio::task::spawn_blocking(move || {
            let driver = crate::driver::make(&s, &n);
            let records = s.records_dir(&n);
            VolumeService::new(
                &s.services[&n],
                &records,
                &s.daemon.mount_dir,
                driver,
                ns,
                changed,
            )
        })
        .await
        .map_err(|e| DaemonError::Runtime(format!("start-up task failed: {e}")))?
        .map_err(|e| DaemonError::Service {
            service: name.clone(),
            reason: e.to_string(),
        })?;
        services.insert(name.clone(), Arc::new(svc));
    }
    Ok(services)
}

/// Loads and reconciles every service's state on a blocking thread, one
/// after the other in name order (so a name two services claim goes to
/// the same one every time).
async fn load_services(services: &BTreeMap<String, Arc<VolumeService>>) -> Result<(), DaemonError> {
    for (name, svc) in services {
        let svc = svc.clone();
        tokio::task::spawn_blocking(move || svc.load())
            .await
            .map_err(|e| DaemonError::Runtime(format!("start-up task failed: {e}")))?
            .map_err(|e| DaemonError::Service {
                service: name.clone(),
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

/// Writes every service's state index (a clean stop), so the next start
/// reads one file per service.
async fn save_indexes(services: &BTreeMap<String, Arc<VolumeService>>) {
    for svc in services.values() {
        let svc = svc.clone();
        let _ = tokio::task::spawn_blocking(move || svc.save_index()).await;
    }
}

/// `STATUS=` follows changes, coalesced, and every 5 s when it changed
/// by itself (a cluster that went away or came back, stuck work).
fn follow_status(reg: Arc<Registry>, changed: Arc<tokio::sync::Notify>) {
    tokio::spawn(async move {
        let mut last = String::new();
        loop {
            tokio::select! {
                _ = changed.notified() => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            let line = status_line(&reg);
            if line != last {
                systemd::status(&line);
                last = line;
            }
        }
    });
}

/// Counts of failed requests that were not logged one by one reach the
/// log within a second or two, even when the flood stops.
fn flush_failure_summaries() {
    tokio::spawn(async {
        let mut t = tokio::time::interval(Duration::from_secs(1));
        loop {
            t.tick().await;
            api::failures::flush();
        }
    });
}

fn keep_watchdog() {
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(async move {
            let mut t = tokio::time::interval(interval / 2);
            loop {
                t.tick().await;
                systemd::watchdog();
            }
        });
    }
}

/// Runs the daemon until SIGTERM/SIGINT. `passed` are the sockets systemd
/// handed over (possibly none).
pub async fn run(
    source: ConfigSource,
    settings: Settings,
    passed: Vec<(String, std::os::unix::net::UnixListener)>,
) -> Result<(), DaemonError> {
    let started = Instant::now();
    let ceph = settings.ceph_services();
    if !cfg!(feature = "ceph") && !ceph.is_empty() {
        return Err(DaemonError::Runtime(crate::cephexec::missing_message(
            &ceph,
            &crate::cephexec::helper_path(),
        )));
    }
    let mut sig = Signals::install()?;
    // Serving starts now; calls that need the volumes wait until they
    // are loaded.
    let Listening {
        endpoints,
        sockets,
        own,
    } = listen(&settings, passed)?;
    let (gate_tx, gate) = tokio::sync::watch::channel(None);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(
        endpoints,
        gate,
        settings.daemon.max_connections,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let stop = |server, own: Vec<PathBuf>| async move {
        let _ = stop_tx.send(());
        let _: Result<(), _> = tokio::join!(server).0;
        for p in own {
            let _ = std::fs::remove_file(&p);
        }
    };
    let changed = Arc::new(tokio::sync::Notify::new());
    let services = match make_services(&settings, &changed).await {
        Ok(s) => s,
        Err(e) => {
            drop(gate_tx);
            stop(server, own).await;
            return Err(e);
        }
    };
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let registry = Arc::new(Registry {
        services,
        sockets,
        started,
        metrics: Default::default(),
        ready,
    });
    // Get is answered from here on (one record read); the rest waits.
    let _ = gate_tx.send(Some(registry.clone()));
    if let Err(e) = load_services(&registry.services).await {
        drop(ready_tx);
        stop(server, own).await;
        return Err(e);
    }
    for svc in registry.services.values() {
        tokio::spawn(svc.clone().run_background());
    }
    let _ = ready_tx.send(true);
    let line = status_line(&registry);
    systemd::ready(&line);
    info!(
        duration_ms = started.elapsed().as_millis() as u64,
        "ready: {line}"
    );
    follow_status(registry.clone(), changed);
    keep_watchdog();
    flush_failure_summaries();
    loop {
        tokio::select! {
            _ = sig.term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sig.int.recv() => { info!("SIGINT: stopping"); break; }
            _ = sig.hup.recv() => reload(&source, &registry),
        }
    }
    systemd::stopping("stopping: finishing requests in flight; mounted volumes stay mounted");
    stop(server, own).await;
    save_indexes(&registry.services).await;
    info!("stopped; volumes in use stay mounted and their counts are on disk");
    Ok(())
}

fn reload(source: &ConfigSource, reg: &Registry) {
    systemd::reloading();
    match source.load() {
        Err(e) => {
            error!("reload failed, keeping the running configuration: {e}");
        }
        Ok(new) => {
            for (name, svc) in &reg.services {
                match new.services.get(name) {
                    Some(s) => {
                        svc.set_policy(s.policy.clone());
                    }
                    None => {
                        warn!(service = %name, "service removed from the config; it keeps running until berthd restarts")
                    }
                }
            }
            for name in new.services.keys() {
                if !reg.services.contains_key(name) {
                    warn!(service = %name, "new service in the config; it starts when berthd restarts (see docs/systemd.md)");
                }
            }
            info!("configuration reloaded from {}", source.path.display());
        }
    }
    systemd::ready(&status_line(reg));
}
