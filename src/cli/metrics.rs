//! `berth metrics`: the daemon's Prometheus metrics (text format), on
//! stdout or, with `--textfile DIR`, as one file per daemon for
//! node_exporter's textfile collector.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::exit::{CliError, Kind};
use super::Cli;
use crate::api::metrics::UP_HELP;
use crate::client::PluginClient;
use crate::protocol::StatusResponse;

/// The metrics text of the daemon behind `c`.
async fn fetch(c: &PluginClient) -> Result<String, CliError> {
    let (status, body) = c
        .call_raw("Berth.Metrics", bytes::Bytes::new())
        .await
        .map_err(CliError::from_client)?;
    if !status.is_success() {
        return Err(CliError::new(
            Kind::Refused,
            format!(
                "Berth.Metrics: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `berth metrics` on the chosen socket.
pub(super) async fn run(c: &PluginClient) -> Result<String, CliError> {
    fetch(c).await
}

/// `berth metrics --textfile DIR`: for every configured service, unless
/// a daemon already asked serves it too, writes `DIR/berth-NAME.prom`
/// atomically; a service that does not answer gets `berth_up 0`. Fails
/// (after writing the others) when one did not answer.
pub(super) fn textfile(cli: &Cli, dir: &Path) -> Result<String, CliError> {
    let settings = super::settings(cli)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(Kind::Refused, format!("cannot start runtime: {e}")))?;
    let mut covered = BTreeSet::new();
    let mut written = String::new();
    let mut first_err: Option<CliError> = None;
    for name in settings.services.keys() {
        if covered.contains(name) {
            continue;
        }
        let c = PluginClient::new(settings.socket_path(name), Duration::from_secs(cli.timeout));
        let text = rt.block_on(async {
            let st: StatusResponse = c
                .call::<(), _>("Berth.Status", None)
                .await
                .map_err(CliError::from_client)?;
            let text = fetch(&c).await?;
            Ok::<_, CliError>((st, text))
        });
        let text = match text {
            Ok((st, text)) => {
                covered.extend(st.services.into_iter().map(|s| s.name));
                text
            }
            Err(e) => {
                eprintln!("berth: service {name}: {e}");
                first_err.get_or_insert(e);
                format!(
                    "# HELP berth_up {UP_HELP}.\n# TYPE berth_up gauge\nberth_up{{service=\"{name}\"}} 0\n"
                )
            }
        };
        let path = dir.join(format!("berth-{name}.prom"));
        crate::sys::fsutil::atomic_write(&path, text.as_bytes(), 0o644).map_err(|e| {
            CliError::new(
                Kind::Refused,
                format!("cannot write {}: {e}", path.display()),
            )
        })?;
        written.push_str(&format!("{}\n", path.display()));
    }
    match first_err {
        None => Ok(written),
        Some(mut e) => {
            e.output = Some(written);
            Err(e)
        }
    }
}
