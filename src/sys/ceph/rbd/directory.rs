//! The version of a pool's image directory: whether its image list
//! changed since it was last read, in one small round trip.

use super::RbdPool;
use crate::sys::ceph::{OmapObject, Result};

/// The object librbd keeps the pool's image names in (format 2 images).
const DIRECTORY: &str = "rbd_directory";

impl RbdPool {
    /// The version of the pool's image directory: it moves whenever an
    /// image is created, removed or renamed, so a listing
    /// ([`RbdPool::list`]) read under one version stays true while the
    /// version does. `None` while the pool never had an image.
    pub fn directory_version(&self) -> Result<Option<u64>> {
        OmapObject::open(self.cluster(), self.pool(), "", DIRECTORY)?.version()
    }
}
