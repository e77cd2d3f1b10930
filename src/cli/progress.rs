//! Progress of the daemon's long operations (snapshot, clone, create from
//! a snapshot, resize), polled from `/Berth.Progress` while the request
//! runs, and shown on stderr: a bar on a terminal, a line every few
//! seconds otherwise.

use std::future::Future;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{ClientError, PluginClient};
use crate::protocol::*;
use crate::volume::human_bytes;

/// How often the daemon is asked.
const POLL: Duration = Duration::from_millis(200);

/// How often a line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// A bar redrawn in place (stderr is a terminal, no `--json`).
    Bar,
    /// A line every few seconds.
    Lines,
}

impl Show {
    /// A bar on a terminal (unless `--json`), lines otherwise.
    pub fn choose(json: bool, tty: bool) -> Show {
        if tty && !json {
            Show::Bar
        } else {
            Show::Lines
        }
    }
}

/// The operation of `kind` on `target` a request started.
#[derive(Debug, Clone, Copy)]
pub struct Watch<'a> {
    /// "snapshot", "clone" or "resize" (the daemon's `Kind`).
    pub kind: &'a str,
    /// What it makes or changes (the daemon's `Target`).
    pub target: &'a str,
}

/// One line for `op`: "clone v2 from volume v1: 45% (450.0 MiB of 1.0 GiB), 12 s".
pub fn line(op: &Operation) -> String {
    let secs = op.elapsed_ms / 1000;
    if op.total_bytes == 0 {
        return format!("{} {} from {}: {secs} s", op.kind, op.target, op.source);
    }
    let done = op.done_bytes.min(op.total_bytes);
    format!(
        "{} {} from {}: {}% ({} of {}), {secs} s",
        op.kind,
        op.target,
        op.source,
        done * 100 / op.total_bytes,
        human_bytes(done),
        human_bytes(op.total_bytes)
    )
}

/// What is on screen.
struct Drawn {
    show: Show,
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
}

impl Drawn {
    fn update(&mut self, op: &Operation) {
        match self.show {
            Show::Lines => {
                if self.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
                    eprintln!("berth: {}", line(op));
                    self.last_line = Some(Instant::now());
                }
            }
            Show::Bar => {
                let bar = self.bar.get_or_insert_with(|| new_bar(op));
                if op.total_bytes > 0 {
                    if bar.length() != Some(op.total_bytes) {
                        bar.set_style(bytes_style());
                        bar.set_length(op.total_bytes);
                    }
                    bar.set_position(op.done_bytes.min(op.total_bytes));
                } else {
                    bar.tick();
                }
            }
        }
    }
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} [{wide_bar}] {percent:>3}% {bytes}/{total_bytes} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#>.")
}

fn new_bar(op: &Operation) -> ProgressBar {
    let bar = ProgressBar::new(op.total_bytes);
    if op.total_bytes > 0 {
        bar.set_style(bytes_style());
    } else {
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}, {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
    }
    bar.set_message(format!("{} {} from {}", op.kind, op.target, op.source));
    bar
}

/// Awaits `fut`; meanwhile shows the progress of the daemon's operation
/// `watch`.
pub(super) async fn with_progress<T>(
    c: &PluginClient,
    watch: Watch<'_>,
    show: Show,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(POLL);
    tick.tick().await;
    let mut drawn = Drawn {
        show,
        bar: None,
        last_line: None,
    };
    loop {
        tokio::select! {
            r = &mut fut => {
                if let Some(bar) = drawn.bar {
                    bar.finish_and_clear();
                }
                return r;
            }
            _ = tick.tick() => {
                if let Ok(p) = c.call::<(), ProgressResponse>("Berth.Progress", None).await {
                    if let Some(op) = p.operations.iter().find(|o| o.kind == watch.kind && o.target == watch.target) {
                        drawn.update(op);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(done: u64, total: u64) -> Operation {
        Operation {
            id: 1,
            kind: "snapshot".into(),
            target: "s1".into(),
            source: "volume v".into(),
            done_bytes: done,
            total_bytes: total,
            elapsed_ms: 12_300,
        }
    }

    #[test]
    fn lines_say_what_how_far_and_how_long() {
        assert_eq!(
            line(&op(50 << 20, 100 << 20)),
            "snapshot s1 from volume v: 50% (50.0 MiB of 100.0 MiB), 12 s"
        );
        assert_eq!(line(&op(0, 0)), "snapshot s1 from volume v: 12 s");
    }

    #[test]
    fn bar_only_on_a_terminal_without_json() {
        assert_eq!(Show::choose(false, true), Show::Bar);
        assert_eq!(Show::choose(true, true), Show::Lines);
        assert_eq!(Show::choose(false, false), Show::Lines);
    }
}
