//! `kapsel policy test POLICY.yaml --object OBJECT.yaml`: evaluates a policy
//! (a `ClusterAdmissionPolicy` or `AdmissionPolicy` manifest, not yet
//! applied) against an object through the server's `PolicyReview`, which
//! stores nothing, and prints what admission would decide. Exit status 0
//! when the object would be admitted, 1 when it would be refused.
//!
//! `kapsel policy test DIR` runs the test cases of a policy folder
//! (`policy.yaml` and `cases.yaml`), or of every folder under DIR (e.g.
//! `policies/`), offline with kapsel-admission — no server — and prints
//! PASS or FAIL per case with what differs; exit status 1 when any failed.
//!
//! `kapsel policy audit NAME [-n NS]` audits a stored policy now against the
//! existing objects it matches and prints what it found.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use kapsel_client::{Client, ConnectionArgs};
use serde_json::{Value, json};

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Evaluate a policy manifest against an object (the server stores nothing), or run a policy folder's cases offline.
    Test {
        /// The policy manifest (YAML or JSON); or a folder: a policy's (policy.yaml, cases.yaml) or one holding many (policies/), whose cases run offline.
        policy: PathBuf,
        /// The object under review (YAML or JSON); required with a manifest.
        #[arg(long)]
        object: Option<PathBuf>,
        /// The object before the change, for an UPDATE.
        #[arg(long)]
        old_object: Option<PathBuf>,
        /// CREATE, UPDATE or DELETE.
        #[arg(long, default_value = "CREATE")]
        operation: String,
    },
    /// Audit a stored policy now: evaluate it against the existing objects it matches and print what it found (also recorded in its status).
    Audit {
        /// The policy's name.
        name: String,
        /// The namespace of an `AdmissionPolicy` (without it, NAME is a `ClusterAdmissionPolicy`).
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

/// `kapsel policy test DIR`: every case of every policy folder under `dir`, offline.
fn test_cases(dir: &Path) -> anyhow::Result<ExitCode> {
    let reports = kapsel_admission::cases::run_all(dir).with_context(|| format!("reading {}", dir.display()))?;
    anyhow::ensure!(!reports.is_empty(), "{} holds no policy folders (policy.yaml and cases.yaml)", dir.display());
    let (mut passed, mut failed) = (0, 0);
    for report in &reports {
        print!("{report}");
        let (p, f) = report.counts();
        passed += p;
        failed += f;
    }
    println!("{passed} passed, {failed} failed ({} policy folder(s))", reports.len());
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn read_manifest(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str_with_options(&text, super::yaml_options()).with_context(|| format!("{} is not YAML or JSON", path.display()))
}

pub async fn run(connection: &ConnectionArgs, command: PolicyCommand) -> anyhow::Result<ExitCode> {
    let (policy, object, old_object, operation) = match command {
        PolicyCommand::Test { policy, .. } if policy.is_dir() => return test_cases(&policy),
        PolicyCommand::Test { policy, object: Some(object), old_object, operation } => (policy, object, old_object, operation),
        PolicyCommand::Test { policy, object: None, .. } => {
            anyhow::bail!(
                "{} is not a folder of policy cases; to review a policy manifest against an object, give --object",
                policy.display()
            )
        }
        PolicyCommand::Audit { name, namespace } => return audit(connection, &name, namespace.as_deref()).await,
    };
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

/// `kapsel policy audit NAME [-n NS]`: runs the policy's audit now
/// (`POST …/{policy}/audit`) and prints the total and the violations listed
/// in its `status.audit`. Exit status 1 when it found violations.
async fn audit(connection: &ConnectionArgs, name: &str, namespace: Option<&str>) -> anyhow::Result<ExitCode> {
    let path = match namespace {
        Some(namespace) => format!("/apis/kapsel.io/v1alpha1/namespaces/{namespace}/admissionpolicies/{name}/audit"),
        None => format!("/apis/kapsel.io/v1alpha1/clusteradmissionpolicies/{name}/audit"),
    };
    let client = Client::connect(connection)?;
    let policy = client.post(&path, &json!({})).await?;
    let audit = &policy["status"]["audit"];
    let count = |field: &str| audit[field].as_u64().unwrap_or_default();
    let total = count("totalViolations");
    let plural = |n: u64, word: &str| if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") };
    println!("{} in {} reviewed", plural(total, "violation"), plural(count("objectsReviewed"), "object"));
    for violation in audit["violations"].as_array().into_iter().flatten() {
        let text = |field: &str| violation[field].as_str().unwrap_or_default().to_string();
        let object = match violation["namespace"].as_str() {
            Some(namespace) => format!("{namespace}/{}", text("name")),
            None => text("name"),
        };
        println!("  {} {object}: {}", text("kind"), text("message"));
    }
    let listed = audit["violations"].as_array().map_or(0, Vec::len) as u64;
    if listed < total {
        println!("  … and {} more", total - listed);
    }
    if audit["truncated"].as_bool() == Some(true) {
        println!("  (the audit stopped early: more objects match than one pass reviews)");
    }
    if let Some(error) = audit["error"].as_str() {
        println!("  error: {error}");
    }
    Ok(if total == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
