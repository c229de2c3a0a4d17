//! Printing for the CLI: aligned tables (as kubectl prints them), YAML and JSON.

use kapsel_api::{ResourceType, object};
use serde_json::Value;

/// How `get` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Extra columns (node, IP, …).
    Wide,
    Yaml,
    Json,
}

/// Prints rows under headers, each column as wide as its widest cell, three spaces apart.
pub fn print_table(headers: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(String::len).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        println!("{}", text.trim_end());
    };
    line(headers);
    for row in rows {
        line(row);
    }
}

/// The table of `objects` of `resource`: NAMESPACE (when asked), NAME, the kind's columns, AGE, then wide columns.
pub fn object_table(resource: &ResourceType, objects: &[Value], with_namespace: bool, wide: bool) -> (Vec<String>, Vec<Vec<String>>) {
    let narrow: Vec<_> = resource.columns.iter().filter(|c| !c.wide).collect();
    let extra: Vec<_> = resource.columns.iter().filter(|c| wide && c.wide).collect();
    let mut headers = Vec::new();
    if with_namespace {
        headers.push("NAMESPACE".to_string());
    }
    headers.push("NAME".to_string());
    headers.extend(narrow.iter().map(|c| c.name.to_uppercase()));
    headers.push("AGE".to_string());
    headers.extend(extra.iter().map(|c| c.name.to_uppercase()));
    let now = chrono::Utc::now();
    let rows = objects
        .iter()
        .map(|o| {
            let mut row = Vec::new();
            if with_namespace {
                row.push(object::namespace(o).unwrap_or_default().to_string());
            }
            row.push(object::name(o).unwrap_or_default().to_string());
            row.extend(narrow.iter().map(|c| (c.value)(o)));
            row.push(object::age(o, now));
            row.extend(extra.iter().map(|c| (c.value)(o)));
            row
        })
        .collect();
    (headers, rows)
}

/// Prints `value` as YAML that YAML 1.1 readers (kubectl, PyYAML) read back
/// unchanged: any string that is not plainly a word (`no`, `on`, `1.0`,
/// dates, timestamps, …) is written double-quoted, as kubectl writes it.
pub fn print_yaml(value: &Value) -> anyhow::Result<()> {
    print!("{}", to_yaml_text(value));
    Ok(())
}

/// Block-style YAML for a JSON value. The emitter is this small because
/// JSON values need only maps, lists and scalars, and because the YAML
/// crates at hand quote for YAML 1.2 readers only.
pub fn to_yaml_text(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_list(&mut out, items, 0),
        scalar => {
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
    out
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&yaml_string(key));
        write_nested(out, value, indent);
    }
}

fn write_list(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key goes on the dash's line, the rest align under it.
                let mut nested = String::new();
                write_map(&mut nested, map, indent + 2);
                out.push(' ');
                out.push_str(&nested[indent + 2..]);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_list(out, inner, indent + 2);
            }
            scalar => {
                out.push(' ');
                out.push_str(&yaml_scalar(scalar));
                out.push('\n');
            }
        }
    }
}

fn write_nested(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push_str(":\n");
            write_map(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str(":\n");
            write_list(out, items, indent);
        }
        scalar => {
            out.push_str(": ");
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => yaml_string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// Words YAML 1.1 reads as booleans or null.
const YAML_1_1_WORDS: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"];

/// A string plain when it is unmistakably a string to every YAML reader, double-quoted (JSON escapes) otherwise.
fn yaml_string(text: &str) -> String {
    let plain = text.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '/')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !YAML_1_1_WORDS.contains(&text.to_ascii_lowercase().as_str())
        && !text.ends_with('.');
    if plain { text.to_string() } else { serde_json::to_string(text).expect("strings serialize") }
}

pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_quotes_what_yaml_1_1_would_misread() {
        let manifest = json!({"labels": {"a": "no", "b": "on", "c": "1"}, "created": "2026-11-26T05:34:20Z", "since": "2024-01-01", "count": 3, "x": null,
            "spec": {"containers": [{"name": "main", "args": ["a b", "--x=1"], "env": []}], "nested": [[1, 2], []]}, "multi": "line one\nline two"});
        let text = to_yaml_text(&manifest);
        assert!(text.contains("a: \"no\""), "{text}");
        assert!(text.contains("b: \"on\""), "{text}");
        assert!(text.contains("c: \"1\""), "{text}");
        assert!(text.contains("created: \"2026-11-26T05:34:20Z\""), "{text}");
        assert!(text.contains("since: \"2024-01-01\""), "{text}");
        assert!(text.contains("count: 3"), "{text}");
        assert!(text.contains("  containers:\n  - args:\n    - \"a b\"\n"), "{text}");
        let back: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, manifest, "{text}");
    }
}
