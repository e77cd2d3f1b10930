//! `berthd`: the Berth daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use berth::cephexec::Handoff;
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
    // Ceph services: the berthd of the package berth-ceph serves them
    // (same process, same arguments), before anything else is set up.
    match berth::cephexec::decide(
        &settings,
        cfg!(feature = "ceph"),
        &berth::cephexec::helper_path(),
    ) {
        Handoff::Serve => {}
        Handoff::Exec(helper) => {
            let e = berth::cephexec::exec(&helper, std::env::args_os().skip(1));
            eprintln!("berthd: cannot run {}: {e}", helper.display());
            return ExitCode::from(2);
        }
        Handoff::Missing(why) => {
            eprintln!("berthd: {why}");
            return ExitCode::from(2);
        }
    }
    if args.check_config {
        print!("{}", describe(&settings));
        return ExitCode::SUCCESS;
    }
    berth::logging::init(&settings.daemon.log_level);
    // Take systemd's sockets before any thread exists.
    let passed = berth::systemd::passed_listeners();
    #[cfg(feature = "failpoints")]
    watch_failpoints();
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

/// Tests switch failpoints at run time through the file named by
/// `BERTH_FAILPOINTS_FILE` (lines `name=actions`, the `FAILPOINTS`
/// syntax); each new content replaces the previous set and is
/// acknowledged by writing it to `<file>.applied`.
#[cfg(feature = "failpoints")]
fn watch_failpoints() {
    let Some(path) = std::env::var_os("BERTH_FAILPOINTS_FILE").map(PathBuf::from) else {
        return;
    };
    let mut ack = path.clone().into_os_string();
    ack.push(".applied");
    std::thread::spawn(move || {
        let mut last = String::new();
        let mut active: Vec<String> = Vec::new();
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                if text != last {
                    for name in active.drain(..) {
                        fail::remove(name);
                    }
                    for line in text.lines().map(str::trim) {
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        let Some((name, actions)) = line.split_once('=') else {
                            eprintln!("berthd: failpoint line {line:?} has no '='");
                            continue;
                        };
                        match fail::cfg(name.trim(), actions.trim()) {
                            Ok(()) => active.push(name.trim().to_string()),
                            Err(e) => eprintln!("berthd: failpoint {line:?}: {e}"),
                        }
                    }
                    let _ = std::fs::write(&ack, &text);
                    last = text;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
}
