//! `kapsel get` and `kapsel describe` (a namespace's description shows its quotas' usage).

use std::process::ExitCode;

use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::kinds::resource_quota::RESOURCE_QUOTA;
use kapsel_api::object;
use kapsel_api::registry::ResourceType;
use kapsel_client::{Client, ConnectionArgs};
use serde_json::Value;

use crate::commands::{namespace_for, object_path, resolve_kind};
use crate::output::{self, Format};

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Kind: plural, singular or short name (pods, pod, po, ns, nodes, tokens, …).
    pub kind: String,
    /// One object's name; all objects when omitted.
    pub name: Option<String>,
    /// Namespace (default: the kubeconfig's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Across all namespaces (those you can see).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Label selector, e.g. `app=web,tier in (fe,be),!legacy`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector, e.g. `spec.nodeName=node-1`.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// Output format; an aligned table by default.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Format>,
}

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    pub kind: String,
    pub name: String,
    #[arg(short, long)]
    pub namespace: Option<String>,
}

pub async fn run(connection: &ConnectionArgs, args: GetArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(connection)?;
    let resource = resolve_kind(&args.kind)?;
    let namespace = if args.all_namespaces { None } else { namespace_for(resource, args.namespace.as_deref(), &client) };
    let (objects, single) = match &args.name {
        Some(name) => (vec![client.get(&object_path(resource, namespace, name)).await?], true),
        None => {
            let mut query: Vec<(&str, &str)> = Vec::new();
            if let Some(selector) = &args.selector {
                query.push(("labelSelector", selector));
            }
            if let Some(selector) = &args.field_selector {
                query.push(("fieldSelector", selector));
            }
            let encoded = serde_urlencoded::to_string(&query)?;
            let path = if encoded.is_empty() {
                resource.collection_path(namespace)
            } else {
                format!("{}?{encoded}", resource.collection_path(namespace))
            };
            let list = client.get(&path).await?;
            (list.get("items").and_then(Value::as_array).cloned().unwrap_or_default(), false)
        }
    };
    let as_value = || {
        if single { objects[0].clone() } else { serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects}) }
    };
    match args.output {
        Some(Format::Yaml) => output::print_yaml(&as_value())?,
        Some(Format::Json) => output::print_json(&as_value())?,
        format => {
            if objects.is_empty() {
                match namespace {
                    Some(ns) => eprintln!("No resources found in {ns} namespace."),
                    None => eprintln!("No resources found"),
                }
                return Ok(ExitCode::SUCCESS);
            }
            let with_namespace = args.all_namespaces && resource.namespaced();
            let (headers, rows) = output::object_table(resource, &objects, with_namespace, format == Some(Format::Wide));
            output::print_table(&headers, &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn describe(connection: &ConnectionArgs, args: DescribeArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(connection)?;
    let resource = resolve_kind(&args.kind)?;
    let namespace = namespace_for(resource, args.namespace.as_deref(), &client);
    let object = client.get(&object_path(resource, namespace, &args.name)).await?;
    print_description(resource, &object)?;
    if resource.kind == NAMESPACE.kind {
        print_quotas(&client, &args.name).await?;
    }
    // Events about the object, when the caller may read them.
    let events_namespace = namespace.unwrap_or("default");
    let selector = format!("involvedObject.name={},involvedObject.kind={}", args.name, resource.kind);
    let query = serde_urlencoded::to_string([("fieldSelector", selector.as_str())])?;
    let events = client.get(&format!("/api/v1/namespaces/{events_namespace}/events?{query}")).await.ok();
    let events: Vec<Value> = events.and_then(|e| e.get("items").and_then(Value::as_array).cloned()).unwrap_or_default();
    if events.is_empty() {
        println!("Events:       <none>");
    } else {
        println!("Events:");
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                ["type", "reason", "message"].iter().map(|f| e.get(*f).and_then(Value::as_str).unwrap_or_default().to_string()).collect()
            })
            .collect();
        output::print_table(
            &["  TYPE".into(), "REASON".into(), "MESSAGE".into()],
            &rows
                .into_iter()
                .map(|mut r| {
                    r[0] = format!("  {}", r[0]);
                    r
                })
                .collect::<Vec<_>>(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_description(resource: &ResourceType, object: &Value) -> anyhow::Result<()> {
    let field = |label: &str, value: String| println!("{:<14}{value}", format!("{label}:"));
    field("Name", object::name(object).unwrap_or_default().to_string());
    if resource.namespaced() {
        field("Namespace", object::namespace(object).unwrap_or_default().to_string());
    }
    field("Kind", resource.kind.to_string());
    let pairs = |map: Option<&serde_json::Map<String, Value>>| match map {
        Some(m) if !m.is_empty() => {
            m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join("\n              ")
        }
        _ => "<none>".into(),
    };
    field("Labels", pairs(object::labels(object)));
    field("Annotations", pairs(object.pointer("/metadata/annotations").and_then(Value::as_object)));
    field("Created", object::meta_str(object, "creationTimestamp").unwrap_or("<unknown>").to_string());
    field("UID", object::meta_str(object, "uid").unwrap_or_default().to_string());
    for column in resource.columns {
        field(column.name, (column.value)(object));
    }
    // The whole spec and status follow the summary, under headings that do not repeat its fields.
    for (section, heading) in [("spec", "Spec"), ("status", "Status details"), ("involvedObject", "Involved object")] {
        if let Some(value) = object.get(section).filter(|v| !v.is_null()) {
            println!("{heading}:");
            for line in output::to_yaml_text(value)?.lines() {
                println!("  {line}");
            }
        }
    }
    Ok(())
}

/// A namespace's quotas, each resource's usage against its limit (as `kubectl describe namespace` shows them).
async fn print_quotas(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let quotas = client.get(&RESOURCE_QUOTA.collection_path(Some(namespace))).await?;
    let quotas = quotas.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    if quotas.is_empty() {
        println!("Resource Quotas: <none>");
        return Ok(());
    }
    println!("Resource Quotas:");
    for quota in &quotas {
        println!("  {}:", object::name(quota).unwrap_or_default());
        let hard = quota.pointer("/spec/hard").and_then(Value::as_object).cloned().unwrap_or_default();
        let rows: Vec<Vec<String>> = hard
            .iter()
            .map(|(name, limit)| {
                let used = quota.pointer(&format!("/status/used/{}", name.replace('~', "~0").replace('/', "~1"))).and_then(Value::as_str);
                vec![format!("    {name}"), used.unwrap_or("?").to_string(), limit.as_str().unwrap_or_default().to_string()]
            })
            .collect();
        output::print_table(&["    RESOURCE".into(), "USED".into(), "HARD".into()], &rows);
    }
    Ok(())
}
