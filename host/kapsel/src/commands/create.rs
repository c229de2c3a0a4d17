//! `kapsel create from-template NAME --set key=value …`: makes a pod from a
//! workload template through the server's `instantiate` endpoint, so the
//! pod takes the ordinary create path (classes, limit ranges, admission,
//! quota). The namespace's own `WorkloadTemplate` of that name is used
//! when there is one, else IT's `ClusterWorkloadTemplate`
//! (`--cluster` to skip the namespace's).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use kapsel_api::kinds::workload_template::{CLUSTER_WORKLOAD_TEMPLATE, WORKLOAD_TEMPLATE};
use kapsel_client::{ApiFailure, Client, ConnectionArgs};
use serde_json::{Value, json};

use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum CreateCommand {
    /// Create a pod from a workload template (`kapsel get wt,cwt` lists them).
    FromTemplate(FromTemplateArgs),
}

#[derive(Debug, clap::Args)]
pub struct FromTemplateArgs {
    /// The template's name.
    pub template: String,
    /// A parameter's value (repeatable): `--set image=registry.example/web:2`.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
    pub values: Vec<(String, String)>,
    /// An environment variable for every container (repeatable): `--env LOG_LEVEL=debug`.
    #[arg(long, value_name = "NAME=VALUE", value_parser = key_value)]
    pub env: Vec<(String, String)>,
    /// A label for the pod (repeatable): `--label team=web`.
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    pub label: Vec<(String, String)>,
    /// The pod's name; by default the template's name and a random suffix.
    #[arg(long)]
    pub name: Option<String>,
    /// Use IT's ClusterWorkloadTemplate even if the namespace has a template of that name.
    #[arg(long)]
    pub cluster: bool,
    /// Check everything (admission, quota) and create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the created pod as yaml or json instead of its name.
    #[arg(short, long)]
    pub output: Option<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

pub async fn run(connection: &ConnectionArgs, command: CreateCommand) -> anyhow::Result<ExitCode> {
    let CreateCommand::FromTemplate(args) = command;
    let client = Client::connect(connection)?;
    let namespace = args.namespace.clone().unwrap_or_else(|| client.default_namespace.clone());
    let map = |pairs: &[(String, String)]| -> BTreeMap<String, String> { pairs.iter().cloned().collect() };
    let mut request = json!({"parameters": map(&args.values), "labels": map(&args.label), "env": map(&args.env)});
    if let Some(name) = &args.name {
        request["name"] = json!(name);
    }
    let query = if args.dry_run { "?dryRun=All" } else { "" };
    let own = format!("{}/{}/instantiate{query}", WORKLOAD_TEMPLATE.collection_path(Some(&namespace)), args.template);
    let answer = match args.cluster {
        true => None,
        false => match client.post(&own, &request).await {
            Ok(pod) => Some(pod),
            Err(error) if not_found(&error) => None,
            Err(error) => return Err(error),
        },
    };
    let pod = match answer {
        Some(pod) => pod,
        None => {
            request["namespace"] = json!(namespace);
            let cluster = format!("{}/{}/instantiate{query}", CLUSTER_WORKLOAD_TEMPLATE.collection_path(None), args.template);
            client.post(&cluster, &request).await.map_err(|error| {
                if not_found(&error) {
                    anyhow::anyhow!(
                        "no workload template {:?} in namespace {namespace:?} or the cluster (`kapsel get workloadtemplates,clusterworkloadtemplates`)",
                        args.template
                    )
                } else {
                    error
                }
            })?
        }
    };
    match args.output.as_deref() {
        None | Some("name") => {
            let name = pod.pointer("/metadata/name").and_then(Value::as_str).context("the answer names no pod")?;
            println!("pod/{name} created{}", if args.dry_run { " (dry run)" } else { "" });
        }
        Some("yaml") => output::print_yaml(&pod)?,
        Some("json") => output::print_json(&pod)?,
        Some(other) => bail!("unknown output format {other:?}: name, yaml or json"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the server answered 404 about a template (not, say, the namespace).
fn not_found(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<ApiFailure>()
        .is_some_and(|f| f.status.code == 404 && f.status.details.as_ref().is_some_and(|d| d.kind.ends_with("workloadtemplates")))
}
