//! Logging: journald with structured fields (`BERTH_SERVICE`,
//! `BERTH_VOLUME`, `BERTH_OPERATION`, `BERTH_DURATION_MS`, …) when running
//! under systemd, readable lines on stderr otherwise. `RUST_LOG`
//! overrides the configured level (a level, or `target=level` pairs).

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. Never fails start-up: without
/// journald, logs go to stderr.
pub fn init(level: &str) {
    let filter = || {
        std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| parse_filter(&v))
            .or_else(|| parse_filter(level))
            .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
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
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .try_init();
}

/// A log filter: a level (`info`), or `target=level` pairs with an
/// optional default (`berth=debug,warn`). `None` when it does not parse.
pub fn parse_filter(text: &str) -> Option<Targets> {
    use tracing_subscriber::filter::LevelFilter;
    let level_ok = |l: &str| l.trim().parse::<LevelFilter>().is_ok();
    let every_part_ok = text.split(',').all(|part| match part.split_once('=') {
        Some((target, level)) => !target.trim().is_empty() && level_ok(level),
        None => level_ok(part),
    });
    if !every_part_ok {
        return None;
    }
    text.trim().parse::<Targets>().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_filter;

    #[test]
    fn filters_parse_levels_and_targets() {
        for ok in [
            "info",
            "debug",
            "berth=debug,warn",
            "warn,berth::service=trace",
        ] {
            assert!(parse_filter(ok).is_some(), "{ok}");
        }
        for bad in ["loud", "berth=noisy"] {
            assert!(parse_filter(bad).is_none(), "{bad}");
        }
    }
}
