//! REX-Ray's YAML read into a flat list of settings: one entry per leaf,
//! its dotted key as written, its line, and its text. Scalars are kept as
//! written (REX-Ray read YAML 1.1: `0700` is octal, `yes` is true), and
//! interpreted by the key map.

use saphyr::{MarkedYaml, YamlData, YamlLoader};
use saphyr_parser::Parser;

/// One leaf setting of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The dotted key as written (`libstorage.integration.volume…`).
    pub key: String,
    /// The dotted key lowercased: REX-Ray's keys are case-insensitive.
    pub lower: String,
    /// 1-based line of the key.
    pub line: usize,
    /// The value.
    pub value: Value,
}

/// A leaf value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar, as written (quotes removed).
    Text(String),
    /// `~`, `null` or nothing.
    Null,
    /// A list of scalars.
    List(Vec<String>),
}

impl Value {
    /// The value for a comment.
    pub fn show(&self) -> String {
        match self {
            Value::Text(t) => t.clone(),
            Value::Null => "null".into(),
            Value::List(l) => format!("[{}]", l.join(", ")),
        }
    }
}

/// A file that is not YAML REX-Ray could have read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}, column {col}: {msg}")]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub msg: String,
}

fn at(node: &MarkedYaml<'_>, msg: impl Into<String>) -> YamlError {
    YamlError {
        line: node.span.start.line(),
        col: node.span.start.col() + 1,
        msg: msg.into(),
    }
}

/// Reads `text` into its leaf settings, in file order.
pub fn flatten(text: &str) -> Result<Vec<Entry>, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut loader: YamlLoader<'_, MarkedYaml<'_>> = YamlLoader::default();
    loader.early_parse(false);
    parser.load(&mut loader, true).map_err(|e| YamlError {
        line: e.marker().line(),
        col: e.marker().col() + 1,
        msg: e.info().to_string(),
    })?;
    if let Some(e) = loader.error() {
        return Err(YamlError {
            line: e.marker().line(),
            col: e.marker().col() + 1,
            msg: e.info().to_string(),
        });
    }
    let docs = loader.into_documents();
    if let Some(second) = docs.get(1) {
        return Err(at(second, "a second YAML document; REX-Ray reads one"));
    }
    let mut out = Vec::new();
    let Some(root) = docs.first() else {
        return Ok(out);
    };
    match &root.data {
        YamlData::Mapping(_) => walk(root, "", &mut out)?,
        YamlData::Representation(..) | YamlData::Value(_) if scalar(root).is_none() => {}
        _ => return Err(at(root, "the file must be a mapping of settings")),
    }
    Ok(out)
}

/// A scalar's text; `None` for null.
fn scalar(node: &MarkedYaml<'_>) -> Option<String> {
    match &node.data {
        YamlData::Representation(text, style, _) => {
            let plain = matches!(style, saphyr::ScalarStyle::Plain);
            if plain && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                None
            } else {
                Some(text.to_string())
            }
        }
        YamlData::Value(v) => match v {
            saphyr::Scalar::Null => None,
            saphyr::Scalar::Boolean(b) => Some(b.to_string()),
            saphyr::Scalar::Integer(i) => Some(i.to_string()),
            saphyr::Scalar::FloatingPoint(f) => Some(f.to_string()),
            saphyr::Scalar::String(s) => Some(s.to_string()),
        },
        YamlData::Tagged(_, inner) => scalar(inner),
        _ => None,
    }
}

fn walk(node: &MarkedYaml<'_>, prefix: &str, out: &mut Vec<Entry>) -> Result<(), YamlError> {
    let YamlData::Mapping(map) = &node.data else {
        return Err(at(node, "expected a mapping"));
    };
    for (k, v) in map {
        let Some(name) = scalar(k).filter(|n| !n.is_empty()) else {
            return Err(at(k, "a key must be a plain word"));
        };
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        leaf_or_walk(k, v, key, out)?;
    }
    Ok(())
}

fn leaf_or_walk(
    k: &MarkedYaml<'_>,
    v: &MarkedYaml<'_>,
    key: String,
    out: &mut Vec<Entry>,
) -> Result<(), YamlError> {
    let value = match &v.data {
        YamlData::Mapping(_) => return walk(v, &key, out),
        YamlData::Tagged(_, inner) => return leaf_or_walk(k, inner, key, out),
        YamlData::Sequence(items) => {
            let mut list = Vec::new();
            for item in items {
                match scalar(item) {
                    Some(s) => list.push(s),
                    None => return Err(at(item, format!("{key}: a list may hold only words"))),
                }
            }
            Value::List(list)
        }
        YamlData::Alias(_) => return Err(at(v, format!("{key}: YAML aliases are not read"))),
        YamlData::BadValue => return Err(at(v, format!("{key}: not a value"))),
        YamlData::Representation(..) | YamlData::Value(_) => match scalar(v) {
            Some(t) => Value::Text(t),
            None => Value::Null,
        },
    };
    out.push(Entry {
        lower: key.to_ascii_lowercase(),
        key,
        line: k.span.start.line(),
        value,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_with_lines_and_text_as_written() {
        let e =
            flatten("libstorage:\n  service: virtualbox\nlinux:\n  volume:\n    filemode: 0700\n")
                .expect("yaml");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].key, "libstorage.service");
        assert_eq!(e[0].line, 2);
        assert_eq!(e[1].lower, "linux.volume.filemode");
        assert_eq!(e[1].value, Value::Text("0700".into()));
        assert_eq!(e[1].line, 5);
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let err = flatten("libstorage:\n  service: a\n   bad: [\n").expect_err("bad");
        assert!(err.line >= 3, "{err}");
    }

    #[test]
    fn empty_file_is_no_settings() {
        assert!(flatten("").expect("empty").is_empty());
        assert!(flatten("# only a comment\n").expect("comment").is_empty());
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = flatten("a:\n  b: 1\n  b: 2\n").expect_err("dup");
        assert_eq!(err.line, 3, "{err}");
    }
}
