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
/// unchanged: a string they would read as something else (`no`, `on`, `y`,
/// `~`, `1.0`, `0755`, `1_000`, `1:20`, `.inf`, dates, timestamps, …) is
/// written double-quoted, as kubectl writes it.
pub fn print_yaml(value: &Value) -> anyhow::Result<()> {
    print!("{}", to_yaml_text(value)?);
    Ok(())
}

/// Block-style YAML for a JSON value, written by serde-saphyr, which quotes
/// for YAML 1.1 readers unless told to write YAML 1.2. A multi-line string is
/// a literal block (`|`); a long one stays on one line rather than folded.
pub fn to_yaml_text(value: &Value) -> anyhow::Result<String> {
    let options = serde_saphyr::ser_options! { folded_wrap_chars: usize::MAX };
    Ok(serde_saphyr::to_string_with_options(value, options)?)
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
            "spec": {"containers": [{"name": "main", "args": ["a b", "--x=1"], "env": []}], "nested": [[1, 2], []]}, "multi": "line one\nline two",
            "more": {"d": "yes", "e": "Off", "f": "y", "g": "N", "h": "~", "i": "null", "j": "0755", "k": "1e3", "l": "1_000", "m": "1:20",
                "r": ".inf", "o": "0x1F", "p": "<<", "q": "", "y": "key", "no": "key"},
            "long": format!("{} {}", "a".repeat(70), "b".repeat(70))});
        let text = to_yaml_text(&manifest).unwrap();
        assert!(text.contains("a: \"no\""), "{text}");
        assert!(text.contains("b: \"on\""), "{text}");
        assert!(text.contains("c: \"1\""), "{text}");
        assert!(text.contains("created: \"2026-11-26T05:34:20Z\""), "{text}");
        assert!(text.contains("since: \"2024-01-01\""), "{text}");
        assert!(text.contains("count: 3"), "{text}");
        // Block sequences under their key, as kubectl writes them; a string
        // with a space is plain, as no YAML reader takes it for anything else.
        assert!(text.contains("  containers:\n  - args:\n    - a b\n"), "{text}");
        for (key, quoted) in [
            ("d", "yes"),
            ("e", "Off"),
            ("f", "y"),
            ("g", "N"),
            ("h", "~"),
            ("i", "null"),
            ("j", "0755"),
            ("k", "1e3"),
            ("l", "1_000"),
            ("m", "1:20"),
            ("r", ".inf"),
            ("o", "0x1F"),
            ("p", "<<"),
            ("q", ""),
        ] {
            assert!(text.contains(&format!("  {key}: \"{quoted}\"\n")), "{key}: {text}");
        }
        // Keys too: YAML 1.1 reads a bare `y` or `no` key as a boolean.
        assert!(text.contains("  \"y\": key\n") && text.contains("  \"no\": key\n"), "{text}");
        assert!(text.contains("multi: |-\n  line one\n  line two\n"), "{text}");
        assert!(text.contains(&format!("long: {} {}\n", "a".repeat(70), "b".repeat(70))), "{text}");
        assert!(text.starts_with("count: 3\n"), "{text}");
        // Read back the same by a reader of YAML 1.1's booleans and by the CLI's own reading.
        let back: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, manifest, "{text}");
        let back: Value = serde_saphyr::from_str_with_options(&text, crate::commands::yaml_options()).unwrap();
        assert_eq!(back, manifest, "{text}");
    }
}
