//! Adopting an existing image file as a volume (`berth volume import`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use tracing::{info, warn};

use super::lane::Op;
use super::{ServiceError, ServiceResult, VolumeService};
use crate::volume::VolumeName;

impl VolumeService {
    /// `/Berth.VolumeImport`: the driver moves the image file at `path`
    /// (untouched) to where volume `name` keeps its storage, then the
    /// volume is created, which adopts it: its filesystem is detected and
    /// kept, its size is the file's.
    pub async fn import_image(&self, name: &str, path: &str) -> ServiceResult<()> {
        let name = VolumeName::parse(name)?;
        let from = PathBuf::from(path);
        {
            let mut held = self.lock_for(Op::Create, vec![self.vkey(&name)]).await?;
            if self.known(&name).await?.is_some() {
                return Err(ServiceError::Conflict {
                    volume: name.to_string(),
                    reason: "a volume of that name exists; import makes a new one".into(),
                });
            }
            let driver = self.driver.clone();
            let n = name.clone();
            self.run(Op::Create, &name, &mut held, move |_| {
                driver.place_image(&n, &from).map_err(ServiceError::from)
            })
            .await?;
        }
        info!(service = %self.name, volume = %name, operation = "import", path,
            "image moved into place; adopting it");
        let created = self.create(name.as_str(), &BTreeMap::new()).await;
        if let Err(e) = &created {
            warn!(service = %self.name, volume = %name, operation = "import",
                "the image stays in the image directory, where a create of {name} adopts it: {e}");
        }
        created
    }
}
