//! `berth volume …`.

use clap::Subcommand;

use super::exit::{CliError, Kind};
use super::output::{erased, named, parse_opts, s, table, u};
use super::progress::{with_progress, Show, Watch};
use super::Cli;
use crate::client::PluginClient;
use crate::protocol::*;
use crate::volume::human_bytes;

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
    /// Create a volume. An existing volume is success (as in Docker); when
    /// it differs from the options asked, a message says how (nothing is
    /// changed). A copy (-o volumeName=, -o snapshotName=) shows progress.
    Create {
        /// Volume name.
        name: String,
        /// Option KEY=VALUE (repeatable): size, fsType, iops, volumeType, uid, gid, mode, …
        #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
        opts: Vec<String>,
    },
    /// Remove volumes. An unknown name is an error (exit 3) unless --force.
    #[command(alias = "remove")]
    Rm {
        /// Volume names.
        #[arg(required = true)]
        names: Vec<String>,
        /// An unknown volume is not an error.
        #[arg(short, long)]
        force: bool,
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
    /// Grow a volume (mounted xfs and btrfs grow online; shows progress).
    /// Shrinking is refused.
    Resize {
        /// Volume name.
        name: String,
        /// New size: GB, or with a unit (500M, 2G, 1.5T).
        size: String,
    },
    /// Adopt a filesystem image file as a new volume (moved, never formatted).
    Import(super::volume_import::VolumeImport),
}

/// Runs `cmd`; returns what to print.
pub(super) async fn run(
    c: &PluginClient,
    cli: &Cli,
    cmd: &VolumeCommand,
    show: Show,
) -> Result<String, CliError> {
    let e = CliError::from_client;
    let json = |v: &dyn erased::Json| v.to_json();
    match cmd {
        VolumeCommand::Ls => list(c, cli).await,
        VolumeCommand::Inspect { names } => {
            let mut vols = Vec::new();
            for n in names {
                let g: GetResponse = c
                    .call("VolumeDriver.Get", Some(&NameRequest { name: n.clone() }))
                    .await
                    .map_err(e)?;
                vols.extend(g.volume);
            }
            Ok(json(&vols))
        }
        VolumeCommand::Create { name, opts } => {
            let opts = parse_opts(opts).map_err(CliError::usage)?;
            create(c, cli, name, opts, show).await
        }
        VolumeCommand::Rm { names, force } => remove(c, cli, names, *force).await,
        VolumeCommand::Mount { name, id } => {
            let req = MountRequest {
                name: name.clone(),
                id: id.clone(),
            };
            let r: MountpointResponse =
                c.call("VolumeDriver.Mount", Some(&req)).await.map_err(e)?;
            Ok(if cli.json {
                json(&r)
            } else {
                format!("{}\n", r.mountpoint)
            })
        }
        VolumeCommand::Unmount { name, id } => {
            let req = MountRequest {
                name: name.clone(),
                id: id.clone(),
            };
            let _: ErrResponse = c
                .call("VolumeDriver.Unmount", Some(&req))
                .await
                .map_err(e)?;
            Ok(named(cli.json, name))
        }
        VolumeCommand::Clone { source, name, opts } => {
            let mut opts = parse_opts(opts).map_err(CliError::usage)?;
            if let Some(k) = opts.keys().find(|k| is_source_key(k)) {
                return Err(CliError::usage(format!(
                    "option {k} names another source; clone copies {source}"
                )));
            }
            opts.insert("volumeName".into(), source.clone());
            create(c, cli, name, opts, show).await
        }
        VolumeCommand::Resize { name, size } => resize(c, cli, name, size, show).await,
        VolumeCommand::Import(a) => super::volume_import::execute(c, cli.json, a).await,
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
    }
}

/// Whether create option `k` names a source to copy.
fn is_source_key(k: &str) -> bool {
    matches!(
        k.to_ascii_lowercase().as_str(),
        "volumename" | "volumeid" | "snapshotname" | "snapshotid"
    )
}

async fn list(c: &PluginClient, cli: &Cli) -> Result<String, CliError> {
    let l: DetailedListResponse = c
        .call::<(), _>("Berth.List", None)
        .await
        .map_err(CliError::from_client)?;
    if cli.json {
        return Ok(erased::Json::to_json(&l.volumes));
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
                users_cell(&st),
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

/// Create (a copy, with progress, when an option names a source); says
/// so when the volume existed with other options.
async fn create(
    c: &PluginClient,
    cli: &Cli,
    name: &str,
    opts: std::collections::BTreeMap<String, String>,
    show: Show,
) -> Result<String, CliError> {
    let copy = opts.keys().any(|k| is_source_key(k));
    let req = CreateRequest {
        name: name.to_string(),
        opts: Some(opts),
    };
    let call = c.call::<_, VolumeCreateResponse>("Berth.VolumeCreate", Some(&req));
    let r = if copy {
        let watch = Watch {
            kind: "clone",
            target: name,
        };
        with_progress(c, watch, show, call).await
    } else {
        call.await
    }
    .map_err(CliError::from_client)?;
    if cli.json {
        return Ok(erased::Json::to_json(&serde_json::json!({
            "Name": name,
            "Outcome": r.outcome,
            "Differs": r.differs,
        })));
    }
    match r.outcome.as_str() {
        "existed" if !r.differs.is_empty() => eprintln!(
            "berth: volume {name} exists already and was left as it is; it differs from what was asked: {}",
            r.differs.join("; ")
        ),
        "existed" => eprintln!("berth: volume {name} exists already"),
        "disabled" => eprintln!("berth: create.disable is set for this service: nothing was created"),
        _ => {}
    }
    Ok(format!("{name}\n"))
}

/// Removes each of `names`, going on after a failure; the exit code is
/// the first failure's.
async fn remove(
    c: &PluginClient,
    cli: &Cli,
    names: &[String],
    force: bool,
) -> Result<String, CliError> {
    let mut results = Vec::new();
    let mut out = String::new();
    let mut first: Option<CliError> = None;
    for name in names {
        let req = NameRequest { name: name.clone() };
        let r = c
            .call::<_, ErrResponse>("Berth.VolumeRemove", Some(&req))
            .await
            .map_err(CliError::from_client);
        let (removed, err) = match r {
            Ok(_) => (true, None),
            Err(e) if force && e.kind == Kind::NotFound => (false, None),
            Err(e) if e.kind == Kind::Unreachable => return Err(e),
            Err(e) => (false, Some(e)),
        };
        if cli.json {
            results.push(serde_json::json!({ "Name": name, "Removed": removed, "Error": err }));
        } else if let Some(e) = &err {
            eprintln!("berth: {e}");
        } else if removed {
            out.push_str(&format!("{name}\n"));
        } else {
            eprintln!("berth: volume {name} not found; nothing to remove (--force)");
        }
        if first.is_none() {
            first = err;
        }
    }
    if cli.json {
        out = erased::Json::to_json(&results);
    }
    match first {
        None => Ok(out),
        Some(mut e) => {
            e.output = Some(out);
            Err(e)
        }
    }
}

async fn resize(
    c: &PluginClient,
    cli: &Cli,
    name: &str,
    size: &str,
    show: Show,
) -> Result<String, CliError> {
    let req = ResizeRequest {
        name: name.to_string(),
        size: size.to_string(),
    };
    let watch = Watch {
        kind: "resize",
        target: name,
    };
    let r: ResizeResponse = with_progress(c, watch, show, c.call("Berth.VolumeResize", Some(&req)))
        .await
        .map_err(CliError::from_client)?;
    Ok(if cli.json {
        erased::Json::to_json(&serde_json::json!({ "Name": name, "SizeBytes": r.size_bytes }))
    } else {
        format!("{name}: {}\n", human_bytes(r.size_bytes))
    })
}

/// The USERS cell of `berth volume ls`: the mount count, or who took the
/// volume over (its users here still have to unmount it).
fn users_cell(st: &serde_json::Map<String, serde_json::Value>) -> String {
    let users = u(st.get("mountCount")).unwrap_or(0);
    if st.get("takenOver") != Some(&serde_json::Value::Bool(true)) {
        return users.to_string();
    }
    match st.get("takenOverBy").and_then(serde_json::Value::as_str) {
        Some(h) => format!("{users} (taken over by {h})"),
        None => format!("{users} (blocklisted)"),
    }
}
