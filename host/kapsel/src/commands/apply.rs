//! `kapsel apply -f FILE|DIR|-`: create each object of the manifests, or
//! update it to what the file says. Multi-document YAML, JSON, `kind: List`
//! and directories (every `.yaml`, `.yml` and `.json` in name order) are read.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use kapsel_api::{object, registry};
use kapsel_client::{ApiFailure, Client, ConnectionArgs};
use serde_json::Value;

use crate::commands::object_path;

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Manifest file, directory, or `-` for standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Namespace for namespaced objects that name none (default: the kubeconfig's).
    #[arg(short, long)]
    pub namespace: Option<String>,
}

pub async fn run(connection: &ConnectionArgs, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(connection)?;
    let mut objects = Vec::new();
    for path in &args.files {
        objects.extend(read_manifests(path)?);
    }
    if objects.is_empty() {
        bail!("no objects passed to apply");
    }
    let mut failed = false;
    for (source, object) in objects {
        match apply_one(&client, args.namespace.as_deref(), object).await {
            Ok(line) => println!("{line}"),
            Err(error) => {
                failed = true;
                eprintln!("error: {source}: {}", kapsel_client::describe_error(&error));
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Reads every object from a file, a directory or stdin, with where it came from.
pub fn read_manifests(path: &Path) -> anyhow::Result<Vec<(String, Value)>> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
        return parse_documents(&text, "<stdin>");
    }
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json")))
            .collect();
        files.sort();
        let mut objects = Vec::new();
        for file in files {
            objects.extend(read_manifests(&file)?);
        }
        return Ok(objects);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_documents(&text, &path.display().to_string())
}

/// Splits multi-document YAML (JSON is YAML) into objects, expanding `kind: List`;
/// empty documents are skipped (and not counted).
pub fn parse_documents(text: &str, source: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, super::yaml_options()).with_context(|| format!("{source} is not valid YAML"))?;
    let mut objects = Vec::new();
    for (index, value) in documents.into_iter().enumerate() {
        match value {
            Value::Object(ref map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                for item in map.get("items").and_then(Value::as_array).into_iter().flatten() {
                    objects.push((format!("{source} (document {})", index + 1), item.clone()));
                }
            }
            Value::Object(_) => objects.push((format!("{source} (document {})", index + 1), value)),
            _ => bail!("{source}: document {} is not an object", index + 1),
        }
    }
    Ok(objects)
}

/// Whether every field of `desired` has the same value in `current`.
fn contained(desired: &Value, current: &Value) -> bool {
    match (desired, current) {
        (Value::Object(d), Value::Object(c)) => {
            d.iter().all(|(k, v)| c.get(k).is_some_and(|cv| contained(v, cv)) || (v.is_null() && c.get(k).is_none()))
        }
        (d, c) => d == c,
    }
}

async fn apply_one(client: &Client, namespace_flag: Option<&str>, mut desired: Value) -> anyhow::Result<String> {
    let api_version = desired.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
    let kind = desired.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let resource = registry::by_kind(&api_version, &kind)
        .with_context(|| format!("no kind {kind:?} in {api_version:?} is served (set apiVersion and kind)"))?;
    let name = object::name(&desired).context("metadata.name is required to apply")?.to_string();
    let namespace = if resource.namespaced() {
        let ns = object::namespace(&desired)
            .map(str::to_string)
            .or(namespace_flag.map(str::to_string))
            .unwrap_or_else(|| client.default_namespace.clone());
        object::set_meta(&mut desired, "namespace", ns.clone());
        Some(ns)
    } else {
        None
    };
    let label = format!("{}/{name}", resource.singular);
    let path = object_path(resource, namespace.as_deref(), &name);
    match client.get(&path).await {
        Ok(current) => {
            if contained(&desired, &current) {
                return Ok(format!("{label} unchanged"));
            }
            if let Some(rv) = object::meta_str(&current, "resourceVersion") {
                object::set_meta(&mut desired, "resourceVersion", rv.to_string());
            }
            client.put(&path, &desired).await?;
            Ok(format!("{label} configured"))
        }
        Err(error)
            if error.downcast_ref::<ApiFailure>().is_some_and(|f| {
                f.status.code == 404 && f.status.reason == "NotFound" && f.status.details.as_ref().is_some_and(|d| d.name == name)
            }) =>
        {
            client.post(&resource.collection_path(namespace.as_deref()), &desired).await?;
            Ok(format!("{label} created"))
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_multi_document_yaml_and_lists() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: dev}\n---\n---\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: a}}\n- {apiVersion: v1, kind: Pod, metadata: {name: b}}\n";
        let objects = parse_documents(text, "x.yaml").unwrap();
        let names: Vec<_> = objects.iter().map(|(_, o)| o["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["dev", "a", "b"]);
        assert!(parse_documents("- 1\n- 2\n", "bad.yaml").is_err());
        assert!(parse_documents("a: [", "broken.yaml").is_err());
    }

    #[test]
    fn containment_decides_unchanged() {
        let current = json!({"metadata": {"name": "a", "uid": "u"}, "spec": {"x": 1, "y": [1]}});
        assert!(contained(&json!({"metadata": {"name": "a"}, "spec": {"x": 1}}), &current));
        assert!(!contained(&json!({"spec": {"x": 2}}), &current));
        assert!(!contained(&json!({"spec": {"y": [1, 2]}}), &current));
    }
}
