//! `berth snapshot …`.

use clap::Subcommand;

use super::exit::{CliError, Kind};
use super::output::{erased, named, table};
use super::progress::{with_progress, Show, Watch};
use super::Cli;
use crate::client::PluginClient;
use crate::protocol::*;
use crate::volume::human_bytes;

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

/// Runs `cmd`; returns what to print.
pub(super) async fn run(
    c: &PluginClient,
    cli: &Cli,
    cmd: &SnapshotCommand,
    show: Show,
) -> Result<String, CliError> {
    let e = CliError::from_client;
    let json = |v: &dyn erased::Json| v.to_json();
    match cmd {
        SnapshotCommand::Create { volume, name } => {
            let req = SnapshotCreateRequest {
                volume: volume.clone(),
                name: name.clone(),
            };
            let watch = Watch {
                kind: "snapshot",
                target: name,
            };
            let r: SnapshotResponse =
                with_progress(c, watch, show, c.call("Berth.SnapshotCreate", Some(&req)))
                    .await
                    .map_err(e)?;
            let snap = r.snapshot.ok_or_else(|| {
                CliError::new(
                    Kind::Refused,
                    format!("snapshot {name}: the daemon answered without it"),
                )
            })?;
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
