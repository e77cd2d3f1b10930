//! `berth volume import NAME PATH`.

use std::path::PathBuf;

use clap::Args;

use super::exit::CliError;
use crate::client::PluginClient;
use crate::protocol::{ErrResponse, ImportRequest};

/// Adopt a filesystem image file as a new volume of the service.
#[derive(Debug, Args)]
pub struct VolumeImport {
    /// Name of the new volume.
    pub name: String,
    /// The image file (moved into the service's image directory, on the
    /// same filesystem; its filesystem is kept).
    pub path: PathBuf,
}

/// Runs it: the line to print.
pub async fn execute(c: &PluginClient, json: bool, a: &VolumeImport) -> Result<String, CliError> {
    let path = std::path::absolute(&a.path)
        .map_err(|e| CliError::usage(format!("{}: {e}", a.path.display())))?;
    let path = path.to_string_lossy().into_owned();
    let _: ErrResponse = c
        .call(
            "Berth.VolumeImport",
            Some(&ImportRequest {
                name: a.name.clone(),
                path: path.clone(),
            }),
        )
        .await
        .map_err(CliError::from_client)?;
    Ok(if json {
        serde_json::json!({ "Name": a.name, "ImportedFrom": path }).to_string() + "\n"
    } else {
        format!("{}\n", a.name)
    })
}
