//! The `berth` command: talks to a running daemon over its plugin socket.
//! Tables for humans, `--json` for scripts, errors on stderr with a
//! non-zero exit.

use std::collections::BTreeMap;
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
            Ok(out)
        }
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
                Ok(if cli.json {
                    json(&serde_json::json!({ "Name": name }))
                } else {
                    format!("{name}\n")
                })
            }
            VolumeCommand::Rm { name } => {
                let _: ErrResponse = c
                    .call(
                        "VolumeDriver.Remove",
                        Some(&NameRequest { name: name.clone() }),
                    )
                    .await
                    .map_err(e)?;
                Ok(if cli.json {
                    json(&serde_json::json!({ "Name": name }))
                } else {
                    format!("{name}\n")
                })
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
                Ok(if cli.json {
                    json(&serde_json::json!({ "Name": name }))
                } else {
                    format!("{name}\n")
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
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
