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
/// unchanged: strings such as `no`, `on` or timestamps are quoted.
pub fn print_yaml(value: &Value) -> anyhow::Result<()> {
    print!("{}", to_yaml_text(value)?);
    Ok(())
}

pub fn to_yaml_text(value: &Value) -> anyhow::Result<String> {
    let mut text = String::new();
    let mut emitter = yaml_rust2::YamlEmitter::new(&mut text);
    emitter.multiline_strings(true);
    emitter.dump(&to_yaml(value))?;
    let body = text.strip_prefix("---\n").or_else(|| text.strip_prefix("---")).unwrap_or(&text).trim_start_matches(' ');
    Ok(format!("{body}\n"))
}

fn to_yaml(value: &Value) -> yaml_rust2::Yaml {
    use yaml_rust2::Yaml;
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(items) => Yaml::Array(items.iter().map(to_yaml).collect()),
        Value::Object(map) => Yaml::Hash(map.iter().map(|(k, v)| (Yaml::String(k.clone()), to_yaml(v))).collect()),
    }
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
        let text =
            to_yaml_text(&json!({"labels": {"a": "no", "b": "on", "c": "1"}, "created": "2026-11-26T05:34:20Z", "count": 3, "x": null}))
                .unwrap();
        assert!(text.contains("a: \"no\""), "{text}");
        assert!(text.contains("b: \"on\""), "{text}");
        assert!(text.contains("c: \"1\""), "{text}");
        assert!(text.contains("created: \"2026-11-26T05:34:20Z\""), "{text}");
        assert!(text.contains("count: 3"), "{text}");
        assert!(!text.starts_with("---"), "{text}");
        let back: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back["labels"]["a"], "no");
    }
}
