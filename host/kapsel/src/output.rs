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

/// The table of `objects` of `resource`: NAMESPACE (when asked), NAME, the kind's columns, AGE.
pub fn object_table(resource: &ResourceType, objects: &[Value], with_namespace: bool, wide: bool) -> (Vec<String>, Vec<Vec<String>>) {
    let columns: Vec<_> = resource.columns.iter().filter(|c| wide || !c.wide).collect();
    let mut headers = Vec::new();
    if with_namespace {
        headers.push("NAMESPACE".to_string());
    }
    headers.push("NAME".to_string());
    headers.extend(columns.iter().map(|c| c.name.to_string()));
    headers.push("AGE".to_string());
    let now = chrono::Utc::now();
    let rows = objects
        .iter()
        .map(|o| {
            let mut row = Vec::new();
            if with_namespace {
                row.push(object::namespace(o).unwrap_or_default().to_string());
            }
            row.push(object::name(o).unwrap_or_default().to_string());
            row.extend(columns.iter().map(|c| (c.value)(o)));
            row.push(object::age(o, now));
            row
        })
        .collect();
    (headers, rows)
}

pub fn print_yaml(value: &Value) -> anyhow::Result<()> {
    print!("{}", serde_yaml::to_string(value)?);
    Ok(())
}

pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
