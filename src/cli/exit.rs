//! Exit codes and errors of `berth`: each kind of failure has its own
//! code, and a message (plain on stderr, or JSON on stdout with `--json`)
//! with a hint where one helps.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | the daemon refused or failed the request |
//! | 2 | usage: bad arguments or options (nothing was sent) |
//! | 3 | the volume or snapshot does not exist |
//! | 4 | the daemon is unreachable: no socket, nothing listening, permission denied, no answer in time |

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::client::ClientError;

/// What went wrong, by exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// 1: the daemon refused or failed the request.
    Refused,
    /// 2: bad arguments; nothing was sent.
    Usage,
    /// 3: no such volume or snapshot.
    NotFound,
    /// 4: the daemon could not be reached or did not answer.
    Unreachable,
}

impl Kind {
    /// The exit code.
    pub fn code(self) -> u8 {
        match self {
            Kind::Refused => 1,
            Kind::Usage => 2,
            Kind::NotFound => 3,
            Kind::Unreachable => 4,
        }
    }
}

/// A failed command: kind, message, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CliError {
    /// The kind (`refused`, `usage`, `not-found`, `unreachable`).
    #[serde(rename = "Kind")]
    pub kind: Kind,
    /// The exit code.
    #[serde(rename = "Exit")]
    pub exit: u8,
    /// What went wrong.
    #[serde(rename = "Message")]
    pub message: String,
    /// What to do about it.
    #[serde(rename = "Hint", skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// What to print on stdout instead of this error, which it (or
    /// stderr) already tells: a command on several names that went on
    /// after one failed.
    #[serde(skip)]
    pub output: Option<String>,
}

impl CliError {
    /// An error of `kind`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        CliError {
            kind,
            exit: kind.code(),
            message: message.into(),
            hint: None,
            output: None,
        }
    }

    /// Bad arguments (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }

    /// With a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The exit code as a process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit)
    }

    /// A client error, classified; unreachable sockets get a hint naming
    /// the socket unit and the group.
    pub fn from_client(e: ClientError) -> Self {
        match e {
            ClientError::Plugin {
                message, not_found, ..
            } => Self::new(
                if not_found {
                    Kind::NotFound
                } else {
                    Kind::Refused
                },
                message,
            ),
            ClientError::Connect { socket, source } => {
                let hint = connect_hint(&socket, &source);
                Self::new(
                    Kind::Unreachable,
                    format!("cannot connect to {}: {source}", socket.display()),
                )
                .hint(hint)
            }
            e @ ClientError::Timeout { .. } => {
                Self::new(Kind::Unreachable, e.to_string()).hint(
                    "berthd did not answer in time (--timeout); a long operation may still go on: see `berth status`",
                )
            }
            e @ ClientError::Transport { .. } => Self::new(Kind::Unreachable, e.to_string()),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

/// The service a socket belongs to: its file name without `.sock`.
pub fn service_of(socket: &Path) -> String {
    socket
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".sock").unwrap_or(n).to_string())
        .unwrap_or_else(|| "berth".into())
}

fn connect_hint(socket: &Path, e: &std::io::Error) -> String {
    let service = service_of(socket);
    let unit = format!("berth@{service}.socket");
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            let (group, mode) = match std::fs::metadata(socket) {
                Ok(m) => (group_name(m.gid()), format!("{:o}", m.mode() & 0o777)),
                Err(_) => ("the socket's group".into(), "?".into()),
            };
            format!(
                "the socket is group {group}, mode {mode}: run as root, or join the group \
                 (`usermod -aG {group} $USER`, then log in again); the group is SocketGroup= \
                 of {unit} (socket_group in the configuration when berthd binds it itself)"
            )
        }
        std::io::ErrorKind::ConnectionRefused => format!(
            "the socket exists but nothing listens: `systemctl restart {unit}` \
             (or start berthd); `journalctl -u berth@{service}.service` tells why it stopped"
        ),
        _ => format!(
            "no berthd serves service {service} here: `systemctl enable --now {unit}`, \
             or name another service with --service NAME (or the socket with --socket PATH)"
        ),
    }
}

fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| gid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        let codes = [
            Kind::Refused.code(),
            Kind::Usage.code(),
            Kind::NotFound.code(),
            Kind::Unreachable.code(),
        ];
        assert_eq!(codes, [1, 2, 3, 4]);
    }

    #[test]
    fn service_from_socket() {
        assert_eq!(
            service_of(Path::new("/run/docker/plugins/fast.sock")),
            "fast"
        );
        assert_eq!(service_of(Path::new("/x/odd")), "odd");
    }

    #[test]
    fn missing_socket_names_the_unit() {
        let e = CliError::from_client(ClientError::Connect {
            socket: "/nonexistent/fast.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(e.kind, Kind::Unreachable);
        assert!(e.to_string().contains("berth@fast.socket"), "{e}");
        let j = serde_json::to_value(&e).expect("json");
        assert_eq!(j["Kind"], "unreachable");
        assert_eq!(j["Exit"], 4);
    }
}
