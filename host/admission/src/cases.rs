//! Test cases kept beside a policy: `policies/<name>/cases.yaml` next to its
//! `policy.yaml`, run offline (no server) by `cargo test` and by
//! `kapsel policy test DIR`, through the same [`PolicySet`] the server uses,
//! so a case sees exactly what admission would decide.
//!
//! A cases file:
//!
//! ```yaml
//! cases:
//!   - name: a pod without the label is refused
//!     object: {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: dev}, spec: {…}}
//!     oldObject: {…}            # optional: the stored object, for UPDATE
//!     operation: CREATE         # CREATE (default), UPDATE or DELETE (object is then the deleted one)
//!     parameters: {…}           # optional: replaces the policy's spec.parameters
//!     inventory: [{…}, {…}]     # optional: existing objects, seen as data.inventory
//!     namespaceLabels: {…}      # optional: the namespace's labels, for match.namespaceSelector
//!     userInfo: {username: alice, groups: [system:authenticated]}   # optional
//!     allowed: false            # what admission decides under the policy's enforcement
//!     messages: ["…"]           # optional: every message, exactly (order does not matter)
//!     contains: ["…"]           # optional: each a substring of some message
//! ```
//!
//! The request is the object's: its kind, namespace and name; a policy whose
//! `match` does not select it admits it with no messages. YAML anchors and
//! merge keys (`<<: *pod`) may be used to share objects between cases.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::{ObjectType, Operation, Policy, PolicyId, PolicySet, Request, UserInfo};
use kapsel_api::kinds::admission_policy::PolicySpec;

/// The policy manifest in a policy folder.
pub const POLICY_FILE: &str = "policy.yaml";
/// The test cases in a policy folder.
pub const CASES_FILE: &str = "cases.yaml";

/// Why a policy folder's cases could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is missing: every policy folder carries its test cases", path.display())]
    MissingCases { path: PathBuf },
    #[error("{} is not valid: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{} does not compile", path.display())]
    Compile {
        path: PathBuf,
        #[source]
        source: crate::CompileError,
    },
}

/// One test case (see the module documentation for the YAML).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub object: Value,
    #[serde(default)]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub inventory: Vec<Value>,
    #[serde(default)]
    pub namespace_labels: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub user_info: Option<CaseUser>,
    pub allowed: bool,
    #[serde(default)]
    pub messages: Option<Vec<String>>,
    #[serde(default)]
    pub contains: Vec<String>,
}

/// `userInfo` of a case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseUser {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    cases: Vec<Case>,
}

/// What a policy decided in a case.
#[derive(Debug, Clone, PartialEq)]
pub struct Got {
    pub allowed: bool,
    /// Whether the policy's `match` selected the request at all.
    pub selected: bool,
    pub messages: Vec<String>,
    /// Why the policy could not be evaluated.
    pub error: Option<String>,
}

/// One case's result: what was expected against what the policy decided.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    pub name: String,
    pub expected_allowed: bool,
    pub got: Got,
    /// What differs, one line each; empty when the case passed.
    pub differences: Vec<String>,
}

impl CaseOutcome {
    pub fn passed(&self) -> bool {
        self.differences.is_empty()
    }
}

/// A policy folder's cases, run.
#[derive(Debug)]
pub struct PolicyReport {
    /// The folder.
    pub dir: PathBuf,
    /// The folder's name (the policy's own name is in its manifest).
    pub policy: String,
    pub outcome: Result<Vec<CaseOutcome>, CasesError>,
}

impl PolicyReport {
    /// The number of cases that passed and failed; a folder whose cases could not run counts as one failure.
    pub fn counts(&self) -> (usize, usize) {
        match &self.outcome {
            Ok(cases) => {
                let passed = cases.iter().filter(|c| c.passed()).count();
                (passed, cases.len() - passed)
            }
            Err(_) => (0, 1),
        }
    }
}

/// `PASS  policy / case` or `FAIL  policy / case` with the differences, one line per case.
impl fmt::Display for PolicyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Err(error) => {
                let mut message = error.to_string();
                let mut source = std::error::Error::source(error);
                while let Some(cause) = source {
                    message.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                writeln!(f, "FAIL  {}\n      {}", self.policy, message.replace('\n', "\n      "))
            }
            Ok(cases) => {
                for case in cases {
                    if case.passed() {
                        writeln!(f, "PASS  {} / {}", self.policy, case.name)?;
                    } else {
                        writeln!(f, "FAIL  {} / {}", self.policy, case.name)?;
                        for line in &case.differences {
                            writeln!(f, "      {}", line.replace('\n', "\n      "))?;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// The policy folders under `path`: `path` itself when it holds a
/// `policy.yaml` or `cases.yaml`, otherwise each of its subfolders (by name; hidden ones skipped).
pub fn policy_dirs(path: &Path) -> Result<Vec<PathBuf>, CasesError> {
    if path.join(POLICY_FILE).exists() || path.join(CASES_FILE).exists() {
        return Ok(vec![path.to_path_buf()]);
    }
    let read = |source| CasesError::Read { path: path.to_path_buf(), source };
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read)? {
        let entry = entry.map_err(read)?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.file_type().map_err(read)?.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Runs the cases of every policy folder under `path` (see [`policy_dirs`]).
pub fn run_all(path: &Path) -> Result<Vec<PolicyReport>, CasesError> {
    Ok(policy_dirs(path)?.iter().map(|dir| run_dir(dir)).collect())
}

/// Runs the cases of one policy folder: its `policy.yaml` against every case of its `cases.yaml`.
pub fn run_dir(dir: &Path) -> PolicyReport {
    let policy = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string());
    let outcome = load(dir).and_then(|(manifest, cases)| {
        let policy_path = dir.join(POLICY_FILE);
        // Compile once as written, so a broken manifest fails the folder rather than each case.
        compile(&manifest, None).map_err(|source| CasesError::Compile { path: policy_path.clone(), source })?;
        Ok(cases.iter().map(|case| run_case(&manifest, case)).collect())
    });
    PolicyReport { dir: dir.to_path_buf(), policy, outcome }
}

fn load(dir: &Path) -> Result<(Value, Vec<Case>), CasesError> {
    let manifest: Value = read_yaml(&dir.join(POLICY_FILE))?;
    let cases_path = dir.join(CASES_FILE);
    if !cases_path.exists() {
        return Err(CasesError::MissingCases { path: cases_path });
    }
    let file: CasesFile = read_yaml(&cases_path)?;
    if file.cases.is_empty() {
        return Err(CasesError::Parse { path: cases_path, message: "no cases".into() });
    }
    Ok((manifest, file.cases))
}

/// Reads YAML (or JSON) with anchors and merge keys resolved, its scalars
/// read as the API server reads a YAML body (YAML 1.2's: only `true` and
/// `false` are booleans, `0755` and `1_000` stay strings); a repeated key is an error.
fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CasesError> {
    let text = std::fs::read_to_string(path).map_err(|source| CasesError::Read { path: path.to_path_buf(), source })?;
    let options = serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        null_as_string: true,
    };
    serde_saphyr::from_str_with_options(&text, options).map_err(|e| CasesError::Parse { path: path.to_path_buf(), message: e.to_string() })
}

/// Compiles a policy manifest, with `parameters` in place of its own when given.
fn compile(manifest: &Value, parameters: Option<&Value>) -> Result<Policy, crate::CompileError> {
    let mut spec = manifest.get("spec").cloned().unwrap_or_default();
    if let (Some(parameters), Some(fields)) = (parameters, spec.as_object_mut()) {
        fields.insert("parameters".into(), parameters.clone());
    }
    let spec: PolicySpec =
        serde_json::from_value(spec).map_err(|e| crate::CompileError { field: "spec".into(), message: e.to_string() })?;
    let text = |field: &str| kapsel_api::object::meta_str(manifest, field).filter(|t| !t.is_empty()).map(str::to_string);
    let id = PolicyId { namespace: text("namespace"), name: text("name").unwrap_or_default() };
    Policy::compile(id, &spec)
}

/// Runs one case against a policy manifest.
pub fn run_case(manifest: &Value, case: &Case) -> CaseOutcome {
    let got = decide(manifest, case);
    let mut differences = Vec::new();
    if got.allowed != case.allowed {
        differences.push(format!("allowed: expected {}, got {}", case.allowed, got.allowed));
    }
    if let Some(expected) = &case.messages {
        let mut expected = expected.clone();
        let mut found = got.messages.clone();
        expected.sort();
        found.sort();
        if expected != found {
            differences.push(format!("messages: expected {}\n          got      {}", list(&expected), list(&found)));
        }
    }
    for part in &case.contains {
        if !got.messages.iter().any(|m| m.contains(part.as_str())) {
            differences.push(format!("messages: expected one containing {part:?}, got {}", list(&got.messages)));
        }
    }
    if !differences.is_empty() {
        if !got.selected {
            differences.push("(the policy's match does not select this object, so it was not evaluated)".into());
        }
        if let Some(error) = &got.error {
            differences.push(format!("evaluation error: {error}"));
        } else if case.messages.is_none() && case.contains.is_empty() && !got.messages.is_empty() {
            differences.push(format!("messages: {}", list(&got.messages)));
        }
    }
    CaseOutcome { name: case.name.clone(), expected_allowed: case.allowed, got, differences }
}

fn list(messages: &[String]) -> String {
    serde_json::to_string(messages).unwrap_or_default()
}

/// Evaluates a case as admission would.
fn decide(manifest: &Value, case: &Case) -> Got {
    let failed = |error: String| Got { allowed: false, selected: true, messages: Vec::new(), error: Some(error) };
    let policy = match compile(manifest, case.parameters.as_ref()) {
        Ok(policy) => policy,
        Err(error) => return failed(format!("the policy does not compile with the case's parameters: {error}")),
    };
    let operation = match case.operation.as_deref() {
        None => Operation::Create,
        Some(text) => match Operation::parse(text) {
            Some(operation) => operation,
            None => return failed(format!("unsupported operation {text:?}: CREATE, UPDATE or DELETE")),
        },
    };
    let object_type = ObjectType::of(&case.object);
    let user = match &case.user_info {
        Some(user) => UserInfo { username: user.username.clone(), groups: user.groups.clone() },
        None => UserInfo { username: "tenant".into(), groups: vec!["system:authenticated".into()] },
    };
    let request = Request {
        namespace_labels: case.namespace_labels.as_ref(),
        ..Request::about(&object_type, operation, &case.object, case.old_object.as_ref(), &user)
    };
    let set = PolicySet::default().with(policy);
    let Some(decision) = set.review_with_inventory(&request, &case.inventory).pop() else {
        return Got { allowed: true, selected: false, messages: Vec::new(), error: None };
    };
    let allowed = decision.admits();
    match decision.outcome {
        Ok(violations) => Got { allowed, selected: true, messages: violations.into_iter().map(|v| v.msg).collect(), error: None },
        Err(error) => Got { allowed, selected: true, messages: Vec::new(), error: Some(error) },
    }
}
