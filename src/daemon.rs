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
use crate::config::{DriverSettings, Settings};
use crate::driver::{loopdrv::LoopDriver, Driver};
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

fn make_driver(settings: &Settings, name: &str) -> Arc<dyn Driver> {
    let svc = &settings.services[name];
    match &svc.driver {
        DriverSettings::Loop { image_dir } => Arc::new(LoopDriver::new(
            image_dir.clone(),
            settings.daemon.command_timeout,
        )),
        #[cfg(feature = "ceph")]
        DriverSettings::Cephfs { .. } | DriverSettings::Rbd { .. } => {
            crate::driver::ceph::make(settings, name)
        }
        #[cfg(not(feature = "ceph"))]
        DriverSettings::Cephfs { .. } | DriverSettings::Rbd { .. } => {
            unreachable!("config refuses Ceph drivers in builds without the ceph feature")
        }
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
            for b in &st.busy {
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

/// Runs the daemon until SIGTERM/SIGINT. `passed` are the sockets systemd
/// handed over (possibly none).
pub async fn run(
    source: ConfigSource,
    settings: Settings,
    passed: Vec<(String, std::os::unix::net::UnixListener)>,
) -> Result<(), DaemonError> {
    let started = Instant::now();
    // Signal handlers first: a `systemctl reload` (SIGHUP) or stop that
    // arrives while the state loads must not kill berthd with the
    // default action. Signals received meanwhile are handled once serving.
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| DaemonError::Runtime(format!("SIGTERM handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| DaemonError::Runtime(format!("SIGINT handler: {e}")))?;
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| DaemonError::Runtime(format!("SIGHUP handler: {e}")))?;

    // Sockets first: systemd's by name, else our own. Serving starts now;
    // calls that need the volumes wait until they are loaded.
    let mut passed: BTreeMap<String, std::os::unix::net::UnixListener> =
        passed.into_iter().collect();
    let mut endpoints = Vec::new();
    let mut sockets = BTreeMap::new();
    let mut own_sockets = Vec::new();
    for (name, svc_settings) in &settings.services {
        let (std_listener, path, ours) = match passed.remove(name) {
            Some(l) => {
                let path = l
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(Path::to_path_buf))
                    .unwrap_or_default();
                (l, path, false)
            }
            None => {
                let path = settings.socket_path(name);
                let l = systemd::bind(
                    &path,
                    settings.daemon.socket_mode,
                    settings.daemon.socket_group.as_deref(),
                )
                .map_err(|e| DaemonError::Service {
                    service: name.clone(),
                    reason: e.to_string(),
                })?;
                own_sockets.push(path.clone());
                (l, path, true)
            }
        };
        let listener = UnixListener::from_std(std_listener).map_err(|e| DaemonError::Service {
            service: name.clone(),
            reason: format!("cannot use socket {}: {e}", path.display()),
        })?;
        info!(service = %name, socket = %path.display(),
            activation = if ours { "bound by berthd" } else { "passed by systemd" }, "listening");
        sockets.insert(name.clone(), path.to_string_lossy().into_owned());
        endpoints.push(api::Endpoint {
            listener,
            service: name.clone(),
            scope: svc_settings.scope,
        });
    }
    for (name, _) in passed {
        warn!(socket_name = %name, "systemd passed a socket for a service that is not configured; closing it");
    }
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

    let ns = Arc::new(Namespace::default());
    let changed = Arc::new(tokio::sync::Notify::new());
    let mut services = BTreeMap::new();
    for name in settings.services.keys() {
        let s = settings.clone();
        let n = name.clone();
        let ns = ns.clone();
        let changed = changed.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let driver = make_driver(&s, &n);
            VolumeService::open(
                &s.services[&n],
                &s.records_dir(&n),
                &s.daemon.mount_dir,
                driver,
                ns,
                changed,
            )
        })
        .await
        .map_err(|e| DaemonError::Runtime(format!("start-up task failed: {e}")))
        .and_then(|r| {
            r.map_err(|e| DaemonError::Service {
                service: name.clone(),
                reason: e.to_string(),
            })
        });
        match opened {
            Ok(svc) => {
                services.insert(name.clone(), Arc::new(svc));
            }
            Err(e) => {
                drop(gate_tx);
                let _ = stop_tx.send(());
                let _ = server.await;
                for p in own_sockets {
                    let _ = std::fs::remove_file(&p);
                }
                return Err(e);
            }
        }
    }

    let registry = Arc::new(Registry {
        services,
        sockets,
        started,
    });
    let _ = gate_tx.send(Some(registry.clone()));
    let line = status_line(&registry);
    systemd::ready(&line);
    info!(
        duration_ms = started.elapsed().as_millis() as u64,
        "ready: {line}"
    );

    // STATUS= follows changes, coalesced.
    {
        let reg = registry.clone();
        let changed = changed.clone();
        tokio::spawn(async move {
            // Also every 5 s when it changed by itself (a cluster that
            // went away or came back).
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
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(async move {
            let mut t = tokio::time::interval(interval / 2);
            loop {
                t.tick().await;
                systemd::watchdog();
            }
        });
    }

    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
            _ = hup.recv() => reload(&source, &registry),
        }
    }
    systemd::stopping("stopping: finishing requests in flight; mounted volumes stay mounted");
    let _ = stop_tx.send(());
    let _ = server.await;
    for p in own_sockets {
        let _ = std::fs::remove_file(&p);
    }
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
