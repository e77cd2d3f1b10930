//! `[services.NAME.ceph] adopt`: RBD images another volume plugin made,
//! shown and mounted as volumes of an rbd service.

/// Whose images an rbd service adopts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopt {
    /// REX-Ray's rbd driver: an image named as the volume, in the
    /// service's pool, `layering` only, a filesystem made on first attach
    /// (so it may be blank), no Berth metadata.
    Rexray,
}

impl Adopt {
    /// Every value, for messages.
    pub const ALL: [Adopt; 1] = [Adopt::Rexray];

    /// The word the config (and inspect) uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Adopt::Rexray => "rexray",
        }
    }

    /// The value a config names.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// The `adopt` setting at `key`: absent is `None`; an unknown value is
/// refused, naming the values there are.
pub(super) fn resolve(v: Option<&str>, key: &str) -> Result<Option<Adopt>, String> {
    let Some(v) = v else {
        return Ok(None);
    };
    Adopt::parse(v).map(Some).ok_or_else(|| {
        let known: Vec<String> = Adopt::ALL
            .iter()
            .map(|a| format!("{:?}", a.as_str()))
            .collect();
        format!(
            "{key}: unknown value {v:?} (available: {}); leave it out to adopt nothing",
            known.join(", ")
        )
    })
}
