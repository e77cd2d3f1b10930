//! `berthd`: the Berth daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use berth::config::{Settings, DEFAULT_PATH};
use berth::daemon::{self, ConfigSource};
use clap::Parser;

/// Berth: Docker volume plugin daemon (loop-device volumes behind
/// socket-activated plugin sockets).
#[derive(Debug, Parser)]
#[command(name = "berthd", version)]
struct Args {
    /// Config file (default /etc/berth/config.toml; built-in default when
    /// that file does not exist).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Serve only this service (repeatable). A name the config does not
    /// declare gets the loop driver with the global [volume] settings.
    /// Used by the systemd template units (berth@NAME).
    #[arg(long = "service", value_name = "NAME")]
    services: Vec<String>,
    /// Validate the configuration, print a summary and exit.
    #[arg(long)]
    check_config: bool,
}

fn describe(s: &Settings) -> String {
    let mut out = format!(
        "configuration OK ({})\n  plugins_dir {}\n  state_dir   {}\n  mount_dir   {}\n",
        s.source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in default".into()),
        s.daemon.plugins_dir.display(),
        s.daemon.state_dir.display(),
        s.daemon.mount_dir.display()
    );
    for svc in s.services.values() {
        out.push_str(&format!(
            "  service {}: driver {}, scope {}, socket {}\n",
            svc.name,
            svc.driver.kind(),
            svc.scope.as_str(),
            s.socket_path(&svc.name).display()
        ));
    }
    out
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Fault injection for tests (FAILPOINTS=...); absent from normal builds.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let source = ConfigSource {
        path: args
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH)),
        explicit: args.config.is_some(),
        only: args.services.clone(),
    };
    let settings = match source.load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        print!("{}", describe(&settings));
        return ExitCode::SUCCESS;
    }
    berth::logging::init(&settings.daemon.log_level);
    // Take systemd's sockets before any thread exists.
    let passed = berth::systemd::passed_listeners();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berthd")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(daemon::run(source, settings, passed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("berthd: {e}");
            ExitCode::FAILURE
        }
    }
}
