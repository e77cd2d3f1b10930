//! The `berth` command: talks to a running daemon over its plugin socket.
//! Tables for humans, `--json` for scripts, errors on stderr with a
//! non-zero exit.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::client::{ClientError, PluginClient};
use crate::protocol::*;
use crate::volume::human_bytes;

/// Default socket: the `berth` service's.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/berth.sock";

/// Manage Berth volumes through a running berthd.
#[derive(Debug, Parser)]
#[command(name = "berth", version)]
pub struct Cli {
    /// Plugin socket of the service to talk to.
    #[arg(long, global = true, env = "BERTH_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for an answer.
    #[arg(long, global = true, default_value_t = 130)]
    pub timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Services, sockets, volumes and mounts of the daemon.
    Status,
    /// Volume operations.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Snapshot operations.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// `berth snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a crash-consistent snapshot of a volume (mounted or not).
    Create {
        /// Volume to snapshot.
        volume: String,
        /// Name of the new snapshot.
        name: String,
    },
    /// List snapshots.
    #[command(alias = "list")]
    Ls {
        /// Only snapshots of this volume.
        #[arg(long)]
        volume: Option<String>,
    },
    /// Show snapshots in detail (by name or ID).
    Inspect {
        /// Snapshot names or IDs.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove a snapshot (volumes created from it stay).
    #[command(alias = "remove")]
    Rm {
        /// Snapshot name.
        name: String,
    },
}

/// `berth volume …`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List volumes.
    #[command(alias = "list")]
    Ls,
    /// Show volumes in detail.
    Inspect {
        /// Volume names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Create a volume.
    Create {
        /// Volume name.
        name: String,
        /// Option KEY=VALUE (repeatable): size, fsType, iops, volumeType, uid, gid, mode, …
        #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
        opts: Vec<String>,
    },
    /// Remove a volume.
    #[command(alias = "remove")]
    Rm {
        /// Volume name.
        name: String,
    },
    /// Mount a volume (counts as one user; prints the path).
    Mount {
        /// Volume name.
        name: String,
        /// Mount ID to count the use under (default: anonymous).
        #[arg(long)]
        id: Option<String>,
    },
    /// Release one use of a volume (the last one unmounts).
    #[command(alias = "umount")]
    Unmount {
        /// Volume name.
        name: String,
        /// Mount ID the use was counted under.
        #[arg(long)]
        id: Option<String>,
    },
    /// Print the path of a mounted volume.
    Path {
        /// Volume name.
        name: String,
    },
    /// Create a volume as a crash-consistent copy of another (which may be
    /// in use): the same as `create NEW -o volumeName=SOURCE`.
    Clone {
        /// Volume to copy.
        source: String,
        /// Name of the new volume.
        name: String,
        /// More options KEY=VALUE (size to grow the copy, type, uid, gid, mode, …).
        #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
        opts: Vec<String>,
    },
    /// Grow a volume (mounted xfs and btrfs grow online). Shrinking is refused.
    Resize {
        /// Volume name.
        name: String,
        /// New size: GB, or with a unit (500M, 2G, 1.5T).
        size: String,
    },
}

fn parse_opts(opts: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for o in opts {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| format!("option {o:?} is not KEY=VALUE"))?;
        if k.is_empty() {
            return Err(format!("option {o:?} has an empty key"));
        }
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn bar(op: &Operation) -> String {
    const WIDTH: u64 = 30;
    let total = op.total_bytes.max(1);
    let done = op.done_bytes.min(total);
    let filled = (done * WIDTH / total) as usize;
    format!(
        "{} {}: [{}{}] {:>3}% {} of {}",
        op.kind,
        op.target,
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled),
        done * 100 / total,
        human_bytes(done),
        human_bytes(op.total_bytes)
    )
}

/// Awaits `fut`; meanwhile, when `show`, draws a progress bar on stderr
/// for the daemon's operation on `target` (polled from `/Berth.Progress`).
async fn with_progress<T>(
    c: &PluginClient,
    target: &str,
    show: bool,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    if !show {
        return fut.await;
    }
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.tick().await;
    let mut drawn = false;
    loop {
        tokio::select! {
            r = &mut fut => {
                if drawn {
                    eprint!("\r\x1b[K");
                }
                return r;
            }
            _ = tick.tick() => {
                if let Ok(p) = c.call::<(), ProgressResponse>("Berth.Progress", None).await {
                    if let Some(op) = p.operations.iter().find(|o| o.target == target && o.total_bytes > 0) {
                        eprint!("\r\x1b[K{}", bar(op));
                        drawn = true;
                    }
                }
            }
        }
    }
}

fn snapshot_rows(snaps: &[Snapshot]) -> Vec<Vec<String>> {
    snaps
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                if s.volume_exists {
                    s.volume.clone()
                } else {
                    format!("{} (removed)", s.volume)
                },
                human_bytes(s.size_bytes),
                human_bytes(s.allocated_bytes),
                s.fs_type.clone(),
                s.volume_type.clone(),
                if s.copy_method.is_empty() {
                    "-".into()
                } else {
                    s.copy_method.clone()
                },
                s.created_at.clone(),
            ]
        })
        .collect()
}

const SNAPSHOT_HEADERS: [&str; 8] = [
    "NAME",
    "VOLUME",
    "SIZE",
    "ALLOCATED",
    "FS",
    "POOL",
    "COPY",
    "CREATED",
];

fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn u(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

/// Runs the command; returns the exit code.
pub fn run(cli: Cli) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = PluginClient::new(cli.socket.clone(), Duration::from_secs(cli.timeout));
    match rt.block_on(execute(&client, &cli)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(c: &PluginClient, cli: &Cli) -> Result<String, String> {
    let e = |e: ClientError| e.to_string();
    let json = |v: &dyn erased::Json| v.to_json();
    let show_progress = !cli.json && std::io::stderr().is_terminal();
    match &cli.command {
        Command::Status => {
            let st: StatusResponse = c.call::<(), _>("Berth.Status", None).await.map_err(e)?;
            if cli.json {
                return Ok(json(&st));
            }
            let mut out = format!(
                "berthd {} — up {}s, answering on {} for service {}\n\n",
                st.version,
                st.uptime_seconds,
                c.socket().display(),
                st.service
            );
            let rows: Vec<Vec<String>> = st
                .services
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.driver.clone(),
                        s.scope.clone(),
                        s.volumes.to_string(),
                        s.mounted.to_string(),
                        s.mount_users.to_string(),
                        s.socket.clone(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "SERVICE", "DRIVER", "SCOPE", "VOLUMES", "MOUNTED", "USERS", "SOCKET",
                ],
                &rows,
            ));
            for s in &st.services {
                if let Some(p) = &s.problem {
                    out.push_str(&format!("\n{}: unavailable: {p}\n", s.name));
                }
            }
            Ok(out)
        }
        Command::Snapshot(cmd) => snapshot_command(c, cli, cmd, show_progress).await,
        Command::Volume(v) => match v {
            VolumeCommand::Ls => {
                let l: DetailedListResponse =
                    c.call::<(), _>("Berth.List", None).await.map_err(e)?;
                if cli.json {
                    return Ok(json(&l.volumes));
                }
                let rows: Vec<Vec<String>> = l
                    .volumes
                    .iter()
                    .map(|v| {
                        let st = v.status.clone().unwrap_or_default();
                        vec![
                            v.name.clone(),
                            u(st.get("sizeBytes")).map(human_bytes).unwrap_or_default(),
                            s(st.get("fsType")),
                            u(st.get("mountCount")).unwrap_or(0).to_string(),
                            if v.mountpoint.is_empty() {
                                "-".into()
                            } else {
                                v.mountpoint.clone()
                            },
                        ]
                    })
                    .collect();
                Ok(table(&["NAME", "SIZE", "FS", "USERS", "MOUNTPOINT"], &rows))
            }
            VolumeCommand::Inspect { names } => {
                let mut vols = Vec::new();
                for n in names {
                    let g: GetResponse = c
                        .call("VolumeDriver.Get", Some(&NameRequest { name: n.clone() }))
                        .await
                        .map_err(e)?;
                    if let Some(v) = g.volume {
                        vols.push(v);
                    }
                }
                Ok(json(&vols))
            }
            VolumeCommand::Create { name, opts } => {
                let opts = parse_opts(opts)?;
                let _: ErrResponse = c
                    .call(
                        "VolumeDriver.Create",
                        Some(&CreateRequest {
                            name: name.clone(),
                            opts: Some(opts),
                        }),
                    )
                    .await
                    .map_err(e)?;
                Ok(named(cli.json, name))
            }
            VolumeCommand::Rm { name } => {
                let _: ErrResponse = c
                    .call(
                        "VolumeDriver.Remove",
                        Some(&NameRequest { name: name.clone() }),
                    )
                    .await
                    .map_err(e)?;
                Ok(named(cli.json, name))
            }
            VolumeCommand::Mount { name, id } => {
                let r: MountpointResponse = c
                    .call(
                        "VolumeDriver.Mount",
                        Some(&MountRequest {
                            name: name.clone(),
                            id: id.clone(),
                        }),
                    )
                    .await
                    .map_err(e)?;
                Ok(if cli.json {
                    json(&r)
                } else {
                    format!("{}\n", r.mountpoint)
                })
            }
            VolumeCommand::Unmount { name, id } => {
                let _: ErrResponse = c
                    .call(
                        "VolumeDriver.Unmount",
                        Some(&MountRequest {
                            name: name.clone(),
                            id: id.clone(),
                        }),
                    )
                    .await
                    .map_err(e)?;
                Ok(named(cli.json, name))
            }
            VolumeCommand::Clone { source, name, opts } => {
                let mut opts = parse_opts(opts)?;
                if let Some(k) = opts.keys().find(|k| {
                    matches!(
                        k.to_ascii_lowercase().as_str(),
                        "volumename" | "volumeid" | "snapshotname" | "snapshotid"
                    )
                }) {
                    return Err(format!(
                        "option {k} names another source; clone copies {source}"
                    ));
                }
                opts.insert("volumeName".into(), source.clone());
                let req = CreateRequest {
                    name: name.clone(),
                    opts: Some(opts),
                };
                let _: ErrResponse = with_progress(
                    c,
                    name,
                    show_progress,
                    c.call("VolumeDriver.Create", Some(&req)),
                )
                .await
                .map_err(e)?;
                Ok(if cli.json {
                    json(&serde_json::json!({ "Name": name, "Source": source }))
                } else {
                    format!("{name}\n")
                })
            }
            VolumeCommand::Resize { name, size } => {
                let r: ResizeResponse = c
                    .call(
                        "Berth.VolumeResize",
                        Some(&ResizeRequest {
                            name: name.clone(),
                            size: size.clone(),
                        }),
                    )
                    .await
                    .map_err(e)?;
                Ok(if cli.json {
                    json(&serde_json::json!({ "Name": name, "SizeBytes": r.size_bytes }))
                } else {
                    format!("{name}: {}\n", human_bytes(r.size_bytes))
                })
            }
            VolumeCommand::Path { name } => {
                let r: MountpointResponse = c
                    .call(
                        "VolumeDriver.Path",
                        Some(&NameRequest { name: name.clone() }),
                    )
                    .await
                    .map_err(e)?;
                Ok(if cli.json {
                    json(&r)
                } else if r.mountpoint.is_empty() {
                    String::new()
                } else {
                    format!("{}\n", r.mountpoint)
                })
            }
        },
    }
}

async fn snapshot_command(
    c: &PluginClient,
    cli: &Cli,
    cmd: &SnapshotCommand,
    show_progress: bool,
) -> Result<String, String> {
    let e = |e: ClientError| e.to_string();
    let json = |v: &dyn erased::Json| v.to_json();
    match cmd {
        SnapshotCommand::Create { volume, name } => {
            let req = SnapshotCreateRequest {
                volume: volume.clone(),
                name: name.clone(),
            };
            let r: SnapshotResponse = with_progress(
                c,
                name,
                show_progress,
                c.call("Berth.SnapshotCreate", Some(&req)),
            )
            .await
            .map_err(e)?;
            let snap = r
                .snapshot
                .ok_or_else(|| format!("snapshot {name}: the daemon answered without it"))?;
            Ok(if cli.json {
                json(&snap)
            } else {
                format!("{}\n", snap.name)
            })
        }
        SnapshotCommand::Ls { volume } => {
            let r: SnapshotListResponse = c
                .call(
                    "Berth.SnapshotList",
                    Some(&SnapshotListRequest {
                        volume: volume.clone(),
                    }),
                )
                .await
                .map_err(e)?;
            if cli.json {
                return Ok(json(&r.snapshots));
            }
            Ok(table(&SNAPSHOT_HEADERS, &snapshot_rows(&r.snapshots)))
        }
        SnapshotCommand::Inspect { names } => {
            let mut snaps = Vec::new();
            for n in names {
                let r: SnapshotResponse = c
                    .call(
                        "Berth.SnapshotInspect",
                        Some(&NameRequest { name: n.clone() }),
                    )
                    .await
                    .map_err(e)?;
                snaps.extend(r.snapshot);
            }
            Ok(json(&snaps))
        }
        SnapshotCommand::Rm { name } => {
            let _: ErrResponse = c
                .call(
                    "Berth.SnapshotRemove",
                    Some(&NameRequest { name: name.clone() }),
                )
                .await
                .map_err(e)?;
            Ok(named(cli.json, name))
        }
    }
}

/// What a command that acts on one named object prints.
fn named(json: bool, name: &str) -> String {
    if json {
        erased::Json::to_json(&serde_json::json!({ "Name": name }))
    } else {
        format!("{name}\n")
    }
}

mod erased {
    /// Pretty JSON of anything serializable, newline-terminated.
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            let mut s = serde_json::to_string_pretty(self)
                .unwrap_or_else(|e| format!("{{\"Err\":\"{e}\"}}"));
            s.push('\n');
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opts_parse() {
        let m = parse_opts(&["size=1".into(), "a=b=c".into()]).expect("valid");
        assert_eq!(m["size"], "1");
        assert_eq!(m["a"], "b=c", "value keeps its '='");
        assert!(parse_opts(&["novalue".into()]).is_err());
        assert!(parse_opts(&["=x".into()]).is_err());
    }

    #[test]
    fn progress_bar() {
        let op = Operation {
            id: 1,
            kind: "snapshot".into(),
            target: "s1".into(),
            source: "volume v".into(),
            done_bytes: 50 << 20,
            total_bytes: 100 << 20,
            elapsed_ms: 10,
        };
        let b = bar(&op);
        assert!(
            b.starts_with("snapshot s1: [###############..............."),
            "{b}"
        );
        assert!(b.contains(" 50% 50.0 MiB of 100.0 MiB"), "{b}");
    }

    #[test]
    fn cli_parses_new_commands() {
        let c = Cli::try_parse_from(["berth", "snapshot", "create", "v1", "s1"]).expect("parse");
        assert!(matches!(
            c.command,
            Command::Snapshot(SnapshotCommand::Create { .. })
        ));
        let c = Cli::try_parse_from(["berth", "volume", "clone", "v1", "v2", "-o", "size=3"])
            .expect("parse");
        assert!(matches!(
            c.command,
            Command::Volume(VolumeCommand::Clone { .. })
        ));
        let c = Cli::try_parse_from(["berth", "volume", "resize", "v1", "2G"]).expect("parse");
        assert!(matches!(
            c.command,
            Command::Volume(VolumeCommand::Resize { .. })
        ));
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
