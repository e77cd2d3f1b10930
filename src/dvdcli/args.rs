//! dvdcli's command line, parsed by hand.
//!
//! dvdcli is a cobra/pflag program, and callers (mesos-module-dvdi, Mesos'
//! `docker/volume` isolator, scripts) depend on pflag's quirks rather than
//! on any documented grammar:
//!
//! - `--flag=value` and `--flag value` for string flags, the last one wins;
//! - `--volumeopts` is a pflag `StringSlice`: repeatable, and each value is
//!   split on commas as one CSV record (so `"k=a,b"` in double quotes keeps
//!   its comma, `""` is a literal quote, and `--volumeopts=` adds nothing);
//! - bool flags are `--explicitcreate` or `--explicitcreate=<bool>` with
//!   Go's `strconv.ParseBool` spellings; `--explicitcreate false` does not
//!   take `false` as its value;
//! - flags may come before or after the command; `--` ends the flags;
//! - `--volumeopts` is known to `create` and `mount` only, `--explicitcreate`
//!   to `mount` only.
//!
//! A derive-based parser would have to be bent into each of these (CSV
//! splitting, a second case-sensitive spelling `--explicitCreate`, which is
//! what mesos-module-dvdi passes, flags before the command), so a small
//! table-driven parser states the grammar more plainly. Unlike dvdcli,
//! anything it does not understand (an unknown flag or command, a stray
//! argument such as the `false` of `--explicitcreate false`) is an error.

use std::collections::BTreeMap;
use std::ffi::OsStr;

/// A command-line error; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArgError(pub String);

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Get, create unless it exists (or fail with `--explicitcreate`),
    /// mount; print the mountpoint.
    Mount,
    /// Get, unmount.
    Unmount,
    /// Get; print the mountpoint (asking Path if Get has none).
    Path,
    /// Create with the options.
    Create,
    /// Get, remove.
    Remove,
    /// Get; print the name.
    Get,
    /// List; print the names.
    List,
    /// Print the version.
    Version,
    /// Print the usage.
    Help,
}

impl Command {
    /// Every command, as typed.
    pub const ALL: [(&'static str, Command); 9] = [
        ("mount", Command::Mount),
        ("unmount", Command::Unmount),
        ("path", Command::Path),
        ("create", Command::Create),
        ("remove", Command::Remove),
        ("get", Command::Get),
        ("list", Command::List),
        ("version", Command::Version),
        ("help", Command::Help),
    ];

    fn parse(s: &str) -> Option<Command> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, c)| *c)
    }

    /// The command as typed.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Whether the command talks to a plugin (needs `--volumedriver`).
    pub fn needs_driver(self) -> bool {
        !matches!(self, Command::Version | Command::Help)
    }

    /// Whether the command acts on one volume (needs `--volumename`).
    pub fn needs_name(self) -> bool {
        self.needs_driver() && self != Command::List
    }

    fn takes_opts(self) -> bool {
        matches!(self, Command::Mount | Command::Create | Command::Help)
    }

    fn takes_explicit_create(self) -> bool {
        matches!(self, Command::Mount | Command::Help)
    }
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The command.
    pub command: Command,
    /// `--volumedriver`.
    pub driver: Option<String>,
    /// `--volumename`.
    pub name: Option<String>,
    /// `--volumeopts` items, split as pflag splits them, in order.
    pub opts: Vec<String>,
    /// `--explicitcreate` / `--explicitCreate`.
    pub explicit_create: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flag {
    Driver,
    Name,
    Opts,
    ExplicitCreate,
    Help,
    Version,
}

fn flag_of(name: &str) -> Option<Flag> {
    Some(match name {
        "volumedriver" => Flag::Driver,
        "volumename" => Flag::Name,
        "volumeopts" => Flag::Opts,
        // dvdcli registers the lower-case name; mesos-module-dvdi and
        // dvdcli's README pass the camel-case one.
        "explicitcreate" | "explicitCreate" => Flag::ExplicitCreate,
        "help" => Flag::Help,
        "version" => Flag::Version,
        _ => return None,
    })
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(flag: &str, v: &str) -> Result<bool, ArgError> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(ArgError(format!(
            "invalid value {v:?} for --{flag}: expected true or false"
        ))),
    }
}

/// Splits one `--volumeopts` value as pflag's `StringSlice` does: one
/// record of Go's `encoding/csv` (comma-separated, a field that starts
/// with `"` is quoted, `""` inside it is a quote).
pub fn split_csv(value: &str) -> Result<Vec<String>, ArgError> {
    let bad = |why: &str| {
        Err(ArgError(format!(
            "invalid --volumeopts value {value:?}: {why}"
        )))
    };
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let mut fields = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return bad("a quoted item has no closing quote"),
                    Some('"') => {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            field.push('"');
                        } else {
                            break;
                        }
                    }
                    Some(c) => field.push(c),
                }
            }
            match chars.peek() {
                None | Some(',') => {}
                Some(_) => return bad("text after the closing quote of an item"),
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ',' => break,
                    '"' => {
                        return bad(
                            "a quote inside an unquoted item (quote the whole item: \"k=v\")",
                        )
                    }
                    '\n' | '\r' => return bad("a line break"),
                    _ => {
                        field.push(c);
                        chars.next();
                    }
                }
            }
        }
        fields.push(field);
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some(_) => return bad("unexpected character"),
        }
    }
    Ok(fields)
}

/// Turns option items into the `Opts` map: each item is `KEY=VALUE`,
/// split at the first `=` so the value keeps any further `=`. A later
/// item with the same key wins, as in dvdcli.
pub fn parse_opts(items: &[String]) -> Result<BTreeMap<String, String>, ArgError> {
    let mut m = BTreeMap::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            return Err(ArgError(format!(
                "volume option {item:?} is not KEY=VALUE (for example --volumeopts=size=5)"
            )));
        };
        if k.is_empty() {
            return Err(ArgError(format!(
                "volume option {item:?} has an empty key (expected KEY=VALUE)"
            )));
        }
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Invocation, ArgError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            a.as_ref()
                .to_str()
                .map(str::to_string)
                .ok_or_else(|| ArgError(format!("argument {:?} is not UTF-8", a.as_ref())))
        })
        .collect::<Result<_, _>>()?;
    let mut positional: Vec<String> = Vec::new();
    let mut driver = None;
    let mut name = None;
    let mut opts = Vec::new();
    let mut explicit = false;
    let mut help = false;
    let mut version = false;
    let mut seen_opts = false;
    let mut seen_explicit = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--" {
            positional.extend(it.by_ref());
            break;
        }
        if a == "-h" {
            help = true;
            continue;
        }
        if let Some(body) = a.strip_prefix("--") {
            let (fname, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(flag) = flag_of(fname) else {
                return Err(ArgError(format!("unknown flag: --{fname}")));
            };
            match flag {
                Flag::Help => {
                    if let Some(v) = inline {
                        help = parse_go_bool(fname, &v)?;
                    } else {
                        help = true;
                    }
                }
                Flag::Version => {
                    if let Some(v) = inline {
                        return Err(ArgError(format!(
                            "flag --version takes no value (got {v:?})"
                        )));
                    }
                    version = true;
                }
                Flag::ExplicitCreate => {
                    seen_explicit = true;
                    explicit = match inline {
                        Some(v) => parse_go_bool(fname, &v)?,
                        None => true,
                    };
                }
                Flag::Driver | Flag::Name | Flag::Opts => {
                    let value = match inline {
                        Some(v) => v,
                        None => it.next().ok_or_else(|| {
                            ArgError(format!("flag needs an argument: --{fname}"))
                        })?,
                    };
                    match flag {
                        Flag::Driver => driver = Some(value),
                        Flag::Name => name = Some(value),
                        _ => {
                            seen_opts = true;
                            opts.extend(split_csv(&value)?);
                        }
                    }
                }
            }
            continue;
        }
        if a.len() > 1 && a.starts_with('-') {
            return Err(ArgError(format!(
                "unknown flag: {a} (flags are spelled with two dashes, like --volumename=NAME)"
            )));
        }
        positional.push(a);
    }
    let mut positional = positional.into_iter();
    let command = match positional.next() {
        None if help => Command::Help,
        None if version => Command::Version,
        None => {
            return Err(ArgError(
                "no command given (mount, unmount, path, create, remove, get, list, version)"
                    .into(),
            ))
        }
        Some(c) => Command::parse(&c).ok_or_else(|| {
            ArgError(format!(
                "unknown command {c:?} (commands: mount, unmount, path, create, remove, get, list, version)"
            ))
        })?,
    };
    let command = if help {
        Command::Help
    } else if version {
        Command::Version
    } else {
        command
    };
    if command != Command::Help {
        if let Some(extra) = positional.next() {
            let hint = if extra == "true" || extra == "false" {
                " (a bool flag takes its value with '=', like --explicitcreate=false)"
            } else {
                ""
            };
            return Err(ArgError(format!(
                "unexpected argument {extra:?} for {}{hint}",
                command.as_str()
            )));
        }
        if seen_opts && !command.takes_opts() {
            return Err(ArgError(format!(
                "unknown flag: --volumeopts (only create and mount take options, not {})",
                command.as_str()
            )));
        }
        if seen_explicit && !command.takes_explicit_create() {
            return Err(ArgError(format!(
                "unknown flag: --explicitcreate (only mount takes it, not {})",
                command.as_str()
            )));
        }
    }
    Ok(Invocation {
        command,
        driver,
        name,
        opts,
        explicit_create: explicit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Invocation, ArgError> {
        parse(args)
    }

    #[test]
    fn mesos_module_dvdi_command_line() {
        // What mesos-module-dvdi builds from the seed's Marathon env vars.
        let inv = p(&[
            "mount",
            "--volumedriver=berth",
            "--volumename=test12345",
            "--volumeopts=size=5",
            "--volumeopts=iops=150",
            "--volumeopts=volumetype=io1",
            "--volumeopts=newfstype=xfs",
            "--volumeopts=overwritefs=true",
            "--explicitCreate=false",
        ])
        .expect("valid");
        assert_eq!(inv.command, Command::Mount);
        assert_eq!(inv.driver.as_deref(), Some("berth"));
        assert_eq!(inv.name.as_deref(), Some("test12345"));
        assert!(!inv.explicit_create);
        let m = parse_opts(&inv.opts).expect("opts");
        assert_eq!(m.len(), 5);
        assert_eq!(m["size"], "5");
        assert_eq!(m["newfstype"], "xfs");
        assert_eq!(m["overwritefs"], "true");
    }

    #[test]
    fn mesos_isolator_and_readme_forms() {
        let inv = p(&[
            "mount",
            "--volumedriver",
            "rexray",
            "--volumename",
            "v",
            "--volumeopts=size=5,iops=150",
            "--explicitcreate",
        ])
        .expect("valid");
        assert_eq!(inv.driver.as_deref(), Some("rexray"));
        assert_eq!(inv.opts, ["size=5", "iops=150"]);
        assert!(inv.explicit_create);
        let inv = p(&["--volumedriver=d", "--volumename=v", "unmount"]).expect("flags first");
        assert_eq!(inv.command, Command::Unmount);
        let inv = p(&[
            "mount",
            "--volumedriver=d",
            "--volumename=v",
            "--explicitCreate=true",
        ])
        .expect("camel case");
        assert!(inv.explicit_create);
        let inv = p(&["mount", "--volumename=a", "--volumename=b"]).expect("last wins");
        assert_eq!(inv.name.as_deref(), Some("b"));
    }

    #[test]
    fn bools_are_go_bools() {
        for (v, want) in [
            ("true", true),
            ("1", true),
            ("T", true),
            ("False", false),
            ("0", false),
            ("f", false),
        ] {
            let inv = p(&["mount", &format!("--explicitcreate={v}")]).expect(v);
            assert_eq!(inv.explicit_create, want, "{v}");
        }
        assert!(p(&["mount", "--explicitcreate=yes"]).is_err());
        let e = p(&["mount", "--explicitcreate", "false"]).expect_err("stray arg");
        assert!(e.0.contains("--explicitcreate=false"), "{e}");
    }

    #[test]
    fn csv_splitting_is_pflags() {
        assert_eq!(split_csv("").expect("empty"), Vec::<String>::new());
        assert_eq!(split_csv("a=1").expect("one"), ["a=1"]);
        assert_eq!(split_csv("a=1,b=2").expect("two"), ["a=1", "b=2"]);
        assert_eq!(split_csv("a=1,").expect("trailing"), ["a=1", ""]);
        assert_eq!(
            split_csv("\"k=a,b\",c=d").expect("quoted"),
            ["k=a,b", "c=d"]
        );
        assert_eq!(
            split_csv("\"k=say \"\"hi\"\"\"").expect("escaped"),
            ["k=say \"hi\""]
        );
        assert_eq!(split_csv(" a = 1 ").expect("spaces kept"), [" a = 1 "]);
        for bad in ["k=\"x\"", "\"open", "\"a\"b", "a\nb"] {
            assert!(split_csv(bad).is_err(), "{bad:?}");
        }
        let inv = p(&["create", "--volumeopts=", "--volumeopts=a=1"]).expect("empty adds none");
        assert_eq!(inv.opts, ["a=1"]);
    }

    #[test]
    fn options_keep_their_equals_and_refuse_no_equals() {
        let m = parse_opts(&[
            "opt=a=b=c".into(),
            "empty=".into(),
            "k=1".into(),
            "k=2".into(),
        ])
        .expect("valid");
        assert_eq!(m["opt"], "a=b=c", "value keeps every '='");
        assert_eq!(m["empty"], "");
        assert_eq!(m["k"], "2", "later wins");
        let e = parse_opts(&["size".into()]).expect_err("no =");
        assert!(e.0.contains("\"size\"") && e.0.contains("KEY=VALUE"), "{e}");
        let e = parse_opts(&["=5".into()]).expect_err("empty key");
        assert!(e.0.contains("empty key"), "{e}");
        assert!(parse_opts(&["".into()]).is_err());
    }

    #[test]
    fn refusals() {
        for (args, needle) in [
            (
                &["mount", "--volumesize=1"][..],
                "unknown flag: --volumesize",
            ),
            (&["mount", "--VolumeName=x"][..], "unknown flag"),
            (&["mount", "-volumename=x"][..], "two dashes"),
            (&["mount", "--volumename"][..], "needs an argument"),
            (
                &["unmount", "--volumeopts=a=1"][..],
                "only create and mount",
            ),
            (&["path", "--explicitcreate"][..], "only mount"),
            (&["frobnicate"][..], "unknown command"),
            (&[][..], "no command"),
            (&["mount", "extra"][..], "unexpected argument"),
            (&["mount", "--volumeopts=k=\"v\""][..], "quote"),
        ] {
            let e = p(args).expect_err(&format!("{args:?}"));
            assert!(e.0.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn help_and_terminator() {
        assert_eq!(p(&["--help"]).expect("help").command, Command::Help);
        assert_eq!(p(&["mount", "-h"]).expect("help").command, Command::Help);
        assert_eq!(p(&["help", "mount"]).expect("help").command, Command::Help);
        let e = p(&["mount", "--", "--volumename=x"]).expect_err("after --");
        assert!(e.0.contains("unexpected argument"), "{e}");
        assert_eq!(p(&["--", "list"]).expect("list").command, Command::List);
        assert_eq!(
            p(&["--version"]).expect("version").command,
            Command::Version
        );
        assert!(p(&["--version=1"]).is_err());
    }

    #[test]
    fn commands_know_what_they_need() {
        assert!(Command::Mount.needs_name() && Command::Mount.needs_driver());
        assert!(!Command::List.needs_name() && Command::List.needs_driver());
        assert!(!Command::Version.needs_driver());
        for (n, c) in Command::ALL {
            assert_eq!(c.as_str(), n);
        }
    }
}
