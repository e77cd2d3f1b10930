//! Logging: journald with structured fields (`BERTH_SERVICE`,
//! `BERTH_VOLUME`, `BERTH_OPERATION`, `BERTH_DURATION_MS`, …) when running
//! under systemd, readable lines on stderr otherwise. `RUST_LOG`
//! overrides the configured level.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Never fails start-up: without
/// journald, logs go to stderr.
pub fn init(level: &str) {
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_field_prefix(Some("BERTH".into()))
                .with_syslog_identifier("berthd".into());
            let _ = tracing_subscriber::registry()
                .with(filter())
                .with(layer)
                .try_init();
            return;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
