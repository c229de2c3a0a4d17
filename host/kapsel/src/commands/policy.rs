//! `kapsel policy test POLICY.yaml --object OBJECT.yaml`: evaluates a policy
//! (a `ClusterAdmissionPolicy` or `AdmissionPolicy` manifest, not yet
//! applied) against an object through the server's `PolicyReview`, which
//! stores nothing, and prints what admission would decide. Exit status 0
//! when the object would be admitted, 1 when it would be refused.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::client::{Client, ConnectionArgs};

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Evaluate a policy manifest against an object (the server stores nothing).
    Test {
        /// The policy manifest (YAML or JSON).
        policy: PathBuf,
        /// The object under review (YAML or JSON).
        #[arg(long)]
        object: PathBuf,
        /// The object before the change, for an UPDATE.
        #[arg(long)]
        old_object: Option<PathBuf>,
        /// CREATE, UPDATE or DELETE.
        #[arg(long, default_value = "CREATE")]
        operation: String,
    },
}

fn read_manifest(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("{} is not YAML or JSON", path.display()))
}

pub async fn run(connection: &ConnectionArgs, command: PolicyCommand) -> anyhow::Result<ExitCode> {
    let PolicyCommand::Test { policy, object, old_object, operation } = command;
    let mut spec = json!({"policy": read_manifest(&policy)?, "object": read_manifest(&object)?, "operation": operation});
    if let Some(old) = old_object {
        spec["oldObject"] = read_manifest(&old)?;
    }
    let review = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": spec});
    let client = Client::connect(connection)?;
    let answer = client.post("/apis/kapsel.io/v1alpha1/policyreviews", &review).await?;
    let status = &answer["status"];
    let allowed = status["allowed"].as_bool().unwrap_or(false);
    let enforcement = status["enforcement"].as_str().unwrap_or("deny");
    println!("{} (enforcement: {enforcement})", if allowed { "ALLOWED" } else { "DENIED" });
    for violation in status["violations"].as_array().into_iter().flatten() {
        println!("  violation: {}", violation["msg"].as_str().unwrap_or_default());
        if let Some(details) = violation.get("details").filter(|d| !d.is_null()) {
            println!("    details: {details}");
        }
    }
    if let Some(error) = status["error"].as_str() {
        println!("  error: {error}");
    }
    Ok(if allowed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
