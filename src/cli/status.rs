//! `berth status`.

use super::exit::CliError;
use super::output::{erased, table};
use super::Cli;
use crate::client::PluginClient;
use crate::protocol::*;

/// Runs `berth status`; returns what to print.
pub(super) async fn run(c: &PluginClient, cli: &Cli) -> Result<String, CliError> {
    let e = CliError::from_client;
    let json = |v: &dyn erased::Json| v.to_json();
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
        for line in s.stuck.iter().chain(&s.taken_over) {
            out.push_str(&format!("\n{}: {line}\n", s.name));
        }
    }
    out.push_str(&record_formats(&st.services));
    Ok(out)
}

/// The `berth status` lines on state records: formats found per service
/// ("berth: record formats 1 (17)") and the records refused.
fn record_formats(services: &[ServiceInfo]) -> String {
    let mut out = String::from("\n");
    for s in services {
        let found: Vec<String> = s
            .record_formats
            .iter()
            .map(|(f, n)| format!("{f} ({n})"))
            .collect();
        let found = if found.is_empty() {
            "none found".to_string()
        } else {
            found.join(", ")
        };
        out.push_str(&format!("{}: record formats {found}\n", s.name));
        for line in &s.unreadable {
            out.push_str(&format!("{}: refused: {line}\n", s.name));
        }
    }
    out
}
