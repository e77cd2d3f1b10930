//! The routes a plugin socket answers, and their names.

/// The calls a plugin socket answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/Plugin.Activate`.
    Activate,
    /// `/VolumeDriver.Create`.
    Create,
    /// `/VolumeDriver.Remove`.
    Remove,
    /// `/VolumeDriver.Mount`.
    Mount,
    /// `/VolumeDriver.Unmount`.
    Unmount,
    /// `/VolumeDriver.Path`.
    Path,
    /// `/VolumeDriver.Get`.
    Get,
    /// `/VolumeDriver.List`.
    List,
    /// `/VolumeDriver.Capabilities`.
    Capabilities,
    /// `/Berth.Status`.
    Status,
    /// `/Berth.List`.
    DetailedList,
    /// `/Berth.SnapshotCreate`.
    SnapshotCreate,
    /// `/Berth.SnapshotList`.
    SnapshotList,
    /// `/Berth.SnapshotInspect`.
    SnapshotInspect,
    /// `/Berth.SnapshotRemove`.
    SnapshotRemove,
    /// `/Berth.VolumeResize`.
    VolumeResize,
    /// `/Berth.VolumeImport`.
    VolumeImport,
    /// `/Berth.Progress`.
    Progress,
    /// `/Berth.VolumeCreate`: Create, telling what it did.
    VolumeCreate,
    /// `/Berth.VolumeRemove`: Remove, refusing an unknown volume.
    VolumeRemove,
    /// `/Berth.Metrics`: Prometheus text.
    Metrics,
}

impl Route {
    /// Maps a request path to a route.
    pub fn from_path(path: &str) -> Option<Route> {
        Some(match path {
            "/Plugin.Activate" => Route::Activate,
            "/VolumeDriver.Create" => Route::Create,
            "/VolumeDriver.Remove" => Route::Remove,
            "/VolumeDriver.Mount" => Route::Mount,
            "/VolumeDriver.Unmount" => Route::Unmount,
            "/VolumeDriver.Path" => Route::Path,
            "/VolumeDriver.Get" => Route::Get,
            "/VolumeDriver.List" => Route::List,
            "/VolumeDriver.Capabilities" => Route::Capabilities,
            "/Berth.Status" => Route::Status,
            "/Berth.List" => Route::DetailedList,
            "/Berth.SnapshotCreate" => Route::SnapshotCreate,
            "/Berth.SnapshotList" => Route::SnapshotList,
            "/Berth.SnapshotInspect" => Route::SnapshotInspect,
            "/Berth.SnapshotRemove" => Route::SnapshotRemove,
            "/Berth.VolumeResize" => Route::VolumeResize,
            "/Berth.VolumeImport" => Route::VolumeImport,
            "/Berth.Progress" => Route::Progress,
            "/Berth.VolumeCreate" => Route::VolumeCreate,
            "/Berth.VolumeRemove" => Route::VolumeRemove,
            "/Berth.Metrics" => Route::Metrics,
            _ => return None,
        })
    }

    /// The route's name, as metrics label it ("VolumeDriver.Mount").
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Activate => "Plugin.Activate",
            Route::Create => "VolumeDriver.Create",
            Route::Remove => "VolumeDriver.Remove",
            Route::Mount => "VolumeDriver.Mount",
            Route::Unmount => "VolumeDriver.Unmount",
            Route::Path => "VolumeDriver.Path",
            Route::Get => "VolumeDriver.Get",
            Route::List => "VolumeDriver.List",
            Route::Capabilities => "VolumeDriver.Capabilities",
            Route::Status => "Berth.Status",
            Route::DetailedList => "Berth.List",
            Route::SnapshotCreate => "Berth.SnapshotCreate",
            Route::SnapshotList => "Berth.SnapshotList",
            Route::SnapshotInspect => "Berth.SnapshotInspect",
            Route::SnapshotRemove => "Berth.SnapshotRemove",
            Route::VolumeResize => "Berth.VolumeResize",
            Route::VolumeImport => "Berth.VolumeImport",
            Route::Progress => "Berth.Progress",
            Route::VolumeCreate => "Berth.VolumeCreate",
            Route::VolumeRemove => "Berth.VolumeRemove",
            Route::Metrics => "Berth.Metrics",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::from_path("/Plugin.Activate"), Some(Route::Activate));
        assert_eq!(Route::from_path("/VolumeDriver.Mount"), Some(Route::Mount));
        assert_eq!(
            Route::from_path("/Berth.SnapshotCreate"),
            Some(Route::SnapshotCreate)
        );
        assert_eq!(Route::from_path("/Berth.Progress"), Some(Route::Progress));
        assert_eq!(Route::from_path("/VolumeDriver.mount"), None);
        assert_eq!(Route::from_path("/VolumeDriver.Mount/"), None);
        assert_eq!(Route::from_path("/"), None);
    }

    #[test]
    fn names_are_the_paths() {
        for path in [
            "/Plugin.Activate",
            "/VolumeDriver.Create",
            "/VolumeDriver.Capabilities",
            "/Berth.List",
            "/Berth.VolumeCreate",
            "/Berth.VolumeRemove",
            "/Berth.Metrics",
        ] {
            let r = Route::from_path(path).expect(path);
            assert_eq!(format!("/{}", r.as_str()), path);
        }
    }
}
