//! The `berth` command: talks to a running daemon over its plugin socket.
//! Tables for humans, `--json` for scripts. Each kind of failure has its
//! own exit code ([`exit`]); errors go to stderr, or with `--json` as one
//! JSON object on stdout.

mod doctor;
mod exit;
mod import_rexray;
mod man;
mod metrics;
mod output;
mod progress;
mod snapshot;
mod status;
mod volume;
mod volume_import;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use crate::client::PluginClient;
use crate::config::{Settings, DEFAULT_PATH};

pub use exit::{CliError, Kind};
pub use snapshot::SnapshotCommand;
pub use volume::VolumeCommand;

/// Socket of a service under the default configuration.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/berth.sock";

/// Environment variable naming the socket (below --socket and --service).
pub const SOCKET_ENV: &str = "BERTH_SOCKET";

/// Manage Berth volumes through a running berthd.
///
/// Exit status: 0 success; 1 the daemon refused or failed the request;
/// 2 usage (bad arguments, nothing sent); 3 no such volume or snapshot;
/// 4 the daemon is unreachable (no socket, nothing listening, permission
/// denied, no answer in time).
#[derive(Debug, Parser)]
#[command(name = "berth", version)]
pub struct Cli {
    /// Plugin socket to talk to [default: the socket of --service, else
    /// $BERTH_SOCKET, else that of service berth].
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "service")]
    pub socket: Option<PathBuf>,
    /// Service to talk to: its socket in the configured plugins_dir.
    #[arg(long, global = true, value_name = "NAME")]
    pub service: Option<String>,
    /// Configuration file (for --service and doctor).
    #[arg(long, global = true, value_name = "PATH", env = "BERTH_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Print JSON instead of tables; errors too, as one object on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for an answer.
    #[arg(long, global = true, default_value_t = 130, value_name = "SECONDS")]
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
    /// Check this host: loop devices, mkfs tools, FUSE for Ceph, each
    /// service's socket, free space, Docker's plugin directory, REX-Ray
    /// leftovers, mount propagation. Prints the fix of each failure; exit 1
    /// when any check fails.
    Doctor,
    /// Print the daemon's Prometheus metrics (text format): requests by
    /// route and status, latency histograms, volumes, mounts, stuck
    /// operations, backend health, usage sample age.
    Metrics {
        /// Instead, write DIR/berth-NAME.prom for every configured service
        /// (atomically; for node_exporter's textfile collector). A
        /// service that does not answer gets berth_up 0 and exit 4.
        #[arg(long, value_name = "DIR")]
        textfile: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Translate REX-Ray's config.yml into a Berth config.toml (no daemon needed).
    ImportRexray(import_rexray::ImportRexray),
    /// Write the manual pages (berth*.1, berth.toml.5) into DIR.
    #[command(hide = true)]
    Man {
        /// Directory to write them to.
        dir: PathBuf,
    },
}

/// Parses `args` (the program name first), runs the command, and returns
/// the exit code. Usage errors exit 2; with `--json` they too are JSON.
pub fn main_with(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => run(cli),
        Err(e) => {
            if !e.use_stderr() {
                // --help, --version
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if args.iter().any(|a| a == "--json") {
                let err = CliError::usage(e.render().to_string().trim().to_string());
                report(&err, true);
                return err.exit_code();
            }
            let _ = e.print();
            ExitCode::from(Kind::Usage.code())
        }
    }
}

/// Prints `e`: on stderr, or with `json` as `{"Error": …}` on stdout
/// (or the output that already tells it).
fn report(e: &CliError, json: bool) {
    if let Some(out) = &e.output {
        print!("{out}");
    } else if json {
        print!(
            "{}",
            output::erased::Json::to_json(&serde_json::json!({ "Error": e }))
        );
    } else {
        eprintln!("berth: {e}");
    }
}

/// The socket to talk to: --socket, else --service's in the configured
/// plugins_dir, else $BERTH_SOCKET, else the berth service's.
pub fn socket_of(cli: &Cli) -> Result<PathBuf, CliError> {
    if let Some(s) = &cli.socket {
        return Ok(s.clone());
    }
    if let Some(name) = &cli.service {
        crate::config::validate_service_name(name)
            .map_err(|e| CliError::usage(format!("--service {name:?}: {e}")))?;
        return Ok(settings(cli)?.socket_path(name));
    }
    if let Some(s) = std::env::var_os(SOCKET_ENV).filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(s));
    }
    Ok(settings(cli)?.socket_path("berth"))
}

/// The configuration: --config (its default may be absent: built-in
/// settings then).
fn settings(cli: &Cli) -> Result<Settings, CliError> {
    let explicit = cli.config != std::path::Path::new(DEFAULT_PATH);
    Settings::load(&cli.config, explicit).map_err(|e| CliError::usage(e.to_string()))
}

/// Runs the command; returns the exit code.
pub fn run(cli: Cli) -> ExitCode {
    match run_local(&cli) {
        Some(Ok(out)) => {
            print!("{out}");
            return ExitCode::SUCCESS;
        }
        Some(Err(e)) => {
            report(&e, cli.json);
            return e.exit_code();
        }
        None => {}
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let e = CliError::new(Kind::Refused, format!("cannot start runtime: {e}"));
            report(&e, cli.json);
            return e.exit_code();
        }
    };
    let result = socket_of(&cli).and_then(|socket| {
        let client = PluginClient::new(socket, Duration::from_secs(cli.timeout));
        rt.block_on(execute(&client, &cli))
    });
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&e, cli.json);
            e.exit_code()
        }
    }
}

/// Commands that need no daemon; `None` for the others.
fn run_local(cli: &Cli) -> Option<Result<String, CliError>> {
    match &cli.command {
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "berth", &mut out);
            Some(Ok(String::from_utf8_lossy(&out).into_owned()))
        }
        Command::Man { dir } => Some(man::write_all(&Cli::command(), dir)),
        Command::Doctor => Some(doctor::run(cli)),
        Command::Metrics {
            textfile: Some(dir),
        } => Some(metrics::textfile(cli, dir)),
        // A file that cannot be read or translated: bad input, exit 2.
        Command::ImportRexray(a) => Some(import_rexray::execute(a).map_err(CliError::usage)),
        _ => None,
    }
}

async fn execute(c: &PluginClient, cli: &Cli) -> Result<String, CliError> {
    let show = progress::Show::choose(cli.json, std::io::stderr().is_terminal());
    match &cli.command {
        Command::Status => status::run(c, cli).await,
        Command::Snapshot(cmd) => snapshot::run(c, cli, cmd, show).await,
        Command::Volume(cmd) => volume::run(c, cli, cmd, show).await,
        Command::Metrics { textfile: None } => metrics::run(c).await,
        Command::Metrics { textfile: Some(_) }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Doctor
        | Command::ImportRexray(_) => Err(CliError::usage(
            "internal error: a local command reached the daemon path",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
