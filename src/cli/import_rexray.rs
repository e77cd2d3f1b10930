//! `berth import-rexray`: REX-Ray's config.yml → Berth's config.toml.
//! Runs without a daemon.

use std::path::PathBuf;

use clap::Args;

use crate::rexray;

/// `berth import-rexray [PATH] [--output FILE]`.
#[derive(Debug, Args)]
pub struct ImportRexray {
    /// REX-Ray's configuration file.
    #[arg(default_value = rexray::DEFAULT_PATH)]
    pub path: PathBuf,
    /// Write the Berth configuration here (mode 0644) instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Runs it: the TOML to print (empty when written to `--output`).
pub fn execute(a: &ImportRexray) -> Result<String, String> {
    let file = a.path.display().to_string();
    let text = std::fs::read_to_string(&a.path).map_err(|e| format!("{file}: {e}"))?;
    let toml = rexray::import(&text, &file).map_err(|e| e.to_string())?;
    match &a.output {
        None => Ok(toml),
        Some(out) => {
            let out = std::path::absolute(out).map_err(|e| format!("{}: {e}", out.display()))?;
            crate::sys::fsutil::atomic_write(&out, toml.as_bytes(), 0o644)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            Ok(String::new())
        }
    }
}
