//! `berth doctor`: the host checks of [`crate::doctor`] as a table (or
//! JSON), with the fix of each failure; exit 1 when any check fails.

use super::exit::{CliError, Kind};
use super::output::{erased, table};
use super::Cli;
use crate::doctor::{self, host::Real};

/// Runs the checks for the configuration of `cli`.
pub(super) fn run(cli: &Cli) -> Result<String, CliError> {
    let settings = super::settings(cli)?;
    let checks = doctor::run(&settings, &Real);
    let failed = checks.iter().filter(|c| !c.ok).count();
    let out = if cli.json {
        erased::Json::to_json(&checks)
    } else {
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                vec![
                    if c.ok { "ok" } else { "FAIL" }.to_string(),
                    c.name.clone(),
                    c.detail.clone(),
                ]
            })
            .collect();
        let mut out = table(&["RESULT", "CHECK", "DETAIL"], &rows);
        for c in checks.iter().filter(|c| !c.ok) {
            if let Some(fix) = &c.fix {
                out.push_str(&format!("\nfix {}: {fix}", c.name));
            }
        }
        if failed > 0 {
            out.push('\n');
        }
        out
    };
    if failed == 0 {
        return Ok(out);
    }
    let mut e = CliError::new(
        Kind::Refused,
        format!("{failed} of {} checks failed", checks.len()),
    );
    e.output = Some(out);
    Err(e)
}
