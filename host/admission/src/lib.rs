//! Kapsel's admission policies: Rego evaluated by regorus.
//!
//! [`Policy::compile`] parses a policy's module and libraries once (Rego v1,
//! or v0 for OPA Gatekeeper's library text), checks that it defines its
//! decision (`violation` or `deny`), and keeps it prepared. IT's cluster
//! policies are evaluated in this process, each evaluation on a clone of the
//! prepared engine (a clone costs a fraction of a microsecond, a parse
//! hundreds) within the time and memory budget of [`bounds`] (builtins that
//! allocate are guarded). Tenants' namespace policies are compiled and
//! evaluated in Kapsel's Rego evaluator component
//! ([`kapsel_plugins::rego`]), whose deadline and memory cap hold even
//! inside one step of the engine, where [`bounds`] cannot look. [`PolicySet`] holds the
//! loaded policies indexed by kind, so a request meets only the policies
//! whose `match` selects it; together they get [`REQUEST_BUDGET`]. The input is shaped like Gatekeeper's —
//! `input.review` a Kubernetes AdmissionReview request, `input.parameters`
//! the policy's parameters — so Gatekeeper's policies run unmodified.
//!
//! A policy that declares `inventory.kinds` also sees existing objects of
//! those kinds as `data.inventory`, in Gatekeeper's layout ([`inventory`]);
//! the caller loads them ([`PolicySet::inventory_kinds`] says which) and
//! passes them to [`PolicySet::review_with_inventory`]. Policies without an
//! inventory are evaluated exactly as before, on the prepared engine.
//! [`cases`] runs the test cases kept beside a policy (`policies/*/cases.yaml`).
//! [`audit`] selects and reviews objects at rest, for the periodic audit.

pub mod cases;

pub mod audit;

pub mod bounds;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bounds::DECISION_LIMIT;
use kapsel_api::kinds::admission_policy::{Enforcement, PolicyFailurePolicy, PolicySpec, RegoVersion};
use kapsel_api::selector::LabelSelector;
use kapsel_plugins::PluginError;
use kapsel_plugins::rego::SandboxedPolicy;
use regorus::utils::limits::ExecutionTimerConfig;
use serde::Deserialize as _;
use serde_json::Value;

pub use bounds::{Limits, MEMORY_BUDGET, TIME_BUDGET};

/// The longest all the policies matching one request may evaluate together
/// (cluster policies first, then the namespace's): a policy reached after it
/// is spent fails under its failure policy without being evaluated.
pub const REQUEST_BUDGET: Duration = Duration::from_millis(300);

/// The most Rego one policy may hold (its `rego` and its `libs` together).
/// regorus parses and evaluates recursively, a few KiB of stack for each
/// rule a rule depends on; bounding the text bounds that depth.
pub const MAX_SOURCE_BYTES: usize = 64 << 10;

/// The deepest nesting of `[` and `{` a policy's Rego may have. regorus'
/// parser tries each bracket both ways (a collection or a comprehension),
/// so its time doubles with each level: 14 levels took 0.3 s, 18 took 6.5 s.
pub const MAX_BRACKET_NESTING: usize = 10;

/// The deepest nesting of `[` and `{` in Rego `text`, outside strings and comments.
fn bracket_nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            '#' => {
                chars.by_ref().find(|&c| c == '\n');
            }
            '`' => {
                chars.by_ref().find(|&c| c == '`');
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    deepest
}

/// The stack a thread that compiles or evaluates policies needs: enough
/// for the deepest chain of rules [`MAX_SOURCE_BYTES`] can hold (about
/// 6,000 rules of `a1 := [a0]`; 2 MiB overflowed at 500). `kapsel serve`
/// gives its runtime's threads this much.
pub const STACK_BYTES: usize = 128 << 20;

/// A policy's identity: its name, and its namespace for an `AdmissionPolicy`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyId {
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Why a policy does not compile: the field (`spec.rego`, `spec.libs[1]`) and the parser's message with line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CompileError {
    pub field: String,
    pub message: String,
}

/// One violation a policy reported.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Violation {
    pub msg: String,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

/// A compiled policy with its match criteria.
#[derive(Debug)]
pub struct Policy {
    pub id: PolicyId,
    pub enforcement: Enforcement,
    pub failure_policy: PolicyFailurePolicy,
    evaluator: Evaluator,
    kinds: Vec<String>,
    operations: Vec<String>,
    namespaces: Vec<String>,
    excluded_namespaces: Vec<String>,
    namespace_selector: Option<LabelSelector>,
    label_selector: Option<LabelSelector>,
    /// The kinds of existing objects the policy reads as `data.inventory`.
    inventory_kinds: Vec<String>,
    /// The longest evaluation seen, in microseconds (so callers can move slow policies off latency-sensitive threads).
    slowest_micros: AtomicU64,
}

const MAIN_MODULE: &str = "policy.rego";

/// Where a policy is evaluated.
// One per policy, kept behind an `Arc`: the larger variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Evaluator {
    /// IT's cluster policies: in the server's process, on a clone of the
    /// prepared engine, within the bounds of [`bounds`].
    InProcess {
        engine: regorus::Engine,
        /// `data.<package>.violation` and/or `data.<package>.deny`.
        decisions: Vec<String>,
        parameters: regorus::Value,
    },
    /// Tenants' namespace policies: in Kapsel's Rego evaluator component,
    /// where the sandbox stops what regorus' own checks cannot (see
    /// [`kapsel_plugins::rego`]).
    Sandboxed(SandboxedPolicy),
}

impl Evaluator {
    /// Parses and prepares an IT policy in this process, its allocating builtins guarded (see [`bounds`]).
    fn in_process(spec: &PolicySpec, source: &str) -> Result<Evaluator, CompileError> {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(spec.rego_version == RegoVersion::V0);
        engine.set_execution_timer_config(timer(TIME_BUDGET));
        // Builtins that allocate are guarded (see `bounds`): those the policy's text can call.
        for (name, arity, guard) in bounds::guards(source) {
            engine.add_extension(name, arity, guard).map_err(|e| compile_error("spec.rego", e))?;
        }
        for (i, lib) in spec.libs.iter().enumerate() {
            let field = format!("spec.libs[{i}]");
            engine.add_policy(format!("lib-{i}.rego"), lib.clone()).map_err(|e| compile_error(&field, e))?;
        }
        let package = engine.add_policy(MAIN_MODULE.into(), spec.rego.clone()).map_err(|e| compile_error("spec.rego", e))?;
        let mut decisions = Vec::new();
        for rule in ["violation", "deny"] {
            if engine.has_declared_rule_rooted_at(MAIN_MODULE, rule).unwrap_or(false) {
                decisions.push(format!("{package}.{rule}"));
            }
        }
        if decisions.is_empty() {
            return Err(CompileError {
                field: "spec.rego".into(),
                message: format!("{package} defines neither `violation` (a set of {{\"msg\": …}} objects) nor `deny` (a set of messages)"),
            });
        }
        let parameters = regorus::Value::deserialize(&spec.parameters)
            .map_err(|e| CompileError { field: "spec.parameters".into(), message: e.to_string() })?;
        // Prepare once (parse checks that need the whole program, e.g. unknown functions), on an
        // empty input, within the budget of an evaluation.
        engine.set_input(regorus::Value::new_object());
        let prepared = bounds::metered(Limits::default(), || {
            catch_unwind(AssertUnwindSafe(|| {
                decisions
                    .iter()
                    .try_for_each(|decision| engine.eval_rule(decision.clone()).map(drop).map_err(|e| compile_error("spec.rego", e)))
            }))
        });
        prepared.map_err(|_| CompileError { field: "spec.rego".into(), message: "the policy failed while being prepared".into() })??;
        Ok(Evaluator::InProcess { engine, decisions, parameters })
    }

    /// Compiles a tenant's policy in the sandbox: its libraries, then its main module.
    fn sandboxed(spec: &PolicySpec) -> Result<Evaluator, CompileError> {
        let mut modules: Vec<(String, String)> =
            spec.libs.iter().enumerate().map(|(i, lib)| (format!("lib-{i}.rego"), lib.clone())).collect();
        modules.push((MAIN_MODULE.into(), spec.rego.clone()));
        let parameters = serde_json::to_string(&spec.parameters).map_err(|e| compile_error("spec.parameters", e))?;
        let libs = spec.libs.len();
        SandboxedPolicy::compile(modules, spec.rego_version == RegoVersion::V0, parameters).map(Evaluator::Sandboxed).map_err(|e| {
            let field = match e.module {
                Some(i) if i < libs => format!("spec.libs[{i}]"),
                _ => "spec.rego".to_string(),
            };
            CompileError { field, message: e.message }
        })
    }
}

impl Policy {
    /// Parses and prepares `spec`'s Rego. An `AdmissionPolicy` (`id.namespace`
    /// set) only ever sees requests in its own namespace.
    pub fn compile(id: PolicyId, spec: &PolicySpec) -> Result<Policy, CompileError> {
        let mut source = spec.rego.clone();
        spec.libs.iter().for_each(|lib| source.push_str(lib));
        if source.len() > MAX_SOURCE_BYTES {
            return Err(CompileError {
                field: "spec.rego".into(),
                message: format!(
                    "the policy's Rego (with its libs) is {} bytes, more than the {MAX_SOURCE_BYTES} a policy may hold",
                    source.len()
                ),
            });
        }
        let nesting = bracket_nesting(&source);
        if nesting > MAX_BRACKET_NESTING {
            return Err(CompileError {
                field: "spec.rego".into(),
                message: format!(
                    "the policy's Rego nests brackets ([ and {{) {nesting} deep, more than the {MAX_BRACKET_NESTING} a policy may (parsing time doubles with each level)"
                ),
            });
        }
        let evaluator = match id.namespace {
            Some(_) => Evaluator::sandboxed(spec)?,
            None => Evaluator::in_process(spec, &source)?,
        };
        let selector = |s: &Option<_>, field: &str| {
            s.as_ref()
                .map(LabelSelector::from_k8s)
                .transpose()
                .map_err(|e| CompileError { field: field.to_string(), message: e.to_string() })
        };
        let mut namespaces = spec.match_.namespaces.clone();
        if let Some(own) = &id.namespace {
            namespaces = vec![own.clone()];
        }
        Ok(Policy {
            enforcement: spec.enforcement,
            failure_policy: spec.failure_policy,
            evaluator,
            kinds: spec.match_.kinds.iter().filter(|k| *k != "*").cloned().collect(),
            operations: spec.match_.operations.clone(),
            namespaces,
            excluded_namespaces: spec.match_.excluded_namespaces.clone(),
            namespace_selector: selector(&spec.match_.namespace_selector, "spec.match.namespaceSelector")?,
            label_selector: selector(&spec.match_.label_selector, "spec.match.labelSelector")?,
            inventory_kinds: spec.inventory.as_ref().map(|i| i.kinds.clone()).unwrap_or_default(),
            slowest_micros: AtomicU64::new(0),
            id,
        })
    }

    /// Whether the policy needs the request's namespace labels to decide if it matches.
    pub fn needs_namespace_labels(&self) -> bool {
        self.namespace_selector.is_some()
    }

    /// The kinds of existing objects the policy reads as `data.inventory` (empty: it reads none).
    pub fn inventory_kinds(&self) -> &[String] {
        &self.inventory_kinds
    }

    /// Whether the policy's `match` selects `request` (its kind is already known to match).
    fn selects(&self, request: &Request<'_>) -> bool {
        if !self.operations.is_empty() && !self.operations.iter().any(|o| o == request.operation.as_str()) {
            return false;
        }
        self.selects_object(request.namespace, request.namespace_labels, request.object.or(request.old_object))
    }

    /// The part of `match` that looks at the object and its namespace (not
    /// the kind, known to match, nor the operation): shared by requests and audits.
    fn selects_object(
        &self,
        namespace: Option<&str>,
        namespace_labels: Option<&serde_json::Map<String, Value>>,
        object: Option<&Value>,
    ) -> bool {
        let namespace = namespace.unwrap_or_default();
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == namespace) {
            return false;
        }
        if self.excluded_namespaces.iter().any(|n| n == namespace) {
            return false;
        }
        if let Some(selector) = &self.namespace_selector
            && !selector.matches(namespace_labels)
        {
            return false;
        }
        if let Some(selector) = &self.label_selector {
            let labels = object.and_then(|o| o.pointer("/metadata/labels")).and_then(Value::as_object);
            if !selector.matches(labels) {
                return false;
            }
        }
        true
    }

    /// Whether the policy runs in the Rego sandbox (a tenant's policy), where
    /// an evaluation may block on the async runtime it is called from.
    pub fn is_sandboxed(&self) -> bool {
        matches!(self.evaluator, Evaluator::Sandboxed(_))
    }

    /// The longest one evaluation of this policy has taken so far.
    pub fn slowest_evaluation(&self) -> Duration {
        Duration::from_micros(self.slowest_micros.load(Ordering::Relaxed))
    }

    /// Evaluates the policy on `review` (the `input.review` document), with
    /// `inventory` (built by [`inventory`]) as `data.inventory` when given,
    /// within the default [`Limits`].
    pub fn evaluate(&self, review: &regorus::Value, inventory: Option<&regorus::Value>) -> Result<Vec<Violation>, String> {
        self.evaluate_within(review, inventory, Limits::default())
    }

    /// [`Policy::evaluate`] within `limits`: past its time or memory budget
    /// (builtins included) the evaluation stops with an error naming the limit.
    pub fn evaluate_within(
        &self,
        review: &regorus::Value,
        inventory: Option<&regorus::Value>,
        limits: Limits,
    ) -> Result<Vec<Violation>, String> {
        self.evaluate_review(&Review::new(review), inventory, limits)
    }

    /// [`Policy::evaluate_within`] on a review the policies of one request share.
    fn evaluate_review(&self, review: &Review<'_>, inventory: Option<&regorus::Value>, limits: Limits) -> Result<Vec<Violation>, String> {
        let started = Instant::now();
        let outcome = bounds::metered(limits, || catch_unwind(AssertUnwindSafe(|| self.evaluate_once(review, inventory, limits))));
        let outcome = outcome.unwrap_or_else(|_| Err("the policy's evaluation failed (a fault in the Rego engine)".into()));
        self.slowest_micros.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        outcome
    }

    fn evaluate_once(&self, review: &Review<'_>, inventory: Option<&regorus::Value>, limits: Limits) -> Result<Vec<Violation>, String> {
        let (engine, decisions, parameters) = match &self.evaluator {
            Evaluator::InProcess { engine, decisions, parameters } => (engine, decisions, parameters),
            Evaluator::Sandboxed(policy) => return evaluate_sandboxed(policy, review.json()?, inventory, limits),
        };
        let review = review.value;
        let mut engine = engine.clone();
        if limits.time != TIME_BUDGET {
            engine.set_execution_timer_config(timer(limits.time));
        }
        if let Some(inventory) = inventory {
            // New data makes the engine analyse its modules again on the next
            // evaluation: the price of an inventory, paid only by the policies that ask for one.
            let mut data = regorus::Value::new_object();
            data.as_object_mut().map_err(|e| e.to_string())?.insert("inventory".into(), inventory.clone());
            engine.add_data(data).map_err(|e| format!("{e:#}"))?;
        }
        let mut input = regorus::Value::new_object();
        let fields = input.as_object_mut().map_err(|e| e.to_string())?;
        fields.insert("review".into(), review.clone());
        fields.insert("parameters".into(), parameters.clone());
        engine.set_input(input);
        let mut violations = Vec::new();
        for decision in decisions {
            let value = engine.eval_rule(decision.clone()).map_err(|e| evaluation_error(&e, limits))?;
            // Shared parts of the decision would be copied once per use: measure before converting.
            if bounds::size(&value, DECISION_LIMIT) > DECISION_LIMIT {
                return Err(format!("its decision is larger than the limit of {}", bounds::bytes(DECISION_LIMIT)));
            }
            if bounds::depth(&value, DECISION_LIMIT) > bounds::DECISION_DEPTH {
                return Err(format!("its decision is nested deeper than {} levels", bounds::DECISION_DEPTH));
            }
            let value = serde_json::to_value(&value).map_err(|e| e.to_string())?;
            add_violations(&mut violations, value);
        }
        Ok(violations)
    }
}

/// `input.review` as the policies of one request share it: the value, and
/// its JSON for the sandbox, written once (compact) when a sandboxed policy first needs it.
struct Review<'a> {
    value: &'a regorus::Value,
    json: OnceLock<Result<String, String>>,
}

impl<'a> Review<'a> {
    fn new(value: &'a regorus::Value) -> Self {
        Review { value, json: OnceLock::new() }
    }

    fn json(&self) -> Result<&str, String> {
        self.json.get_or_init(|| serde_json::to_string(self.value).map_err(|e| e.to_string())).as_deref().map_err(Clone::clone)
    }
}

/// Adds the violations of one decision rule's value to `violations`.
fn add_violations(violations: &mut Vec<Violation>, value: Value) {
    match value {
        Value::Array(items) => violations.extend(items.into_iter().map(violation)),
        Value::String(s) if s == "<undefined>" => {}
        other => violations.push(violation(other)),
    }
}

/// Evaluates a tenant's policy in the sandbox: the review (and inventory)
/// copied in as JSON, each decision back as JSON, within `limits.time`.
fn evaluate_sandboxed(
    policy: &SandboxedPolicy,
    review: &str,
    inventory: Option<&regorus::Value>,
    limits: Limits,
) -> Result<Vec<Violation>, String> {
    let inventory = inventory.map(serde_json::to_string).transpose().map_err(|e| e.to_string())?;
    let decisions = match policy.evaluate(review, inventory.as_deref(), limits.time) {
        Ok(outcome) => outcome?,
        Err(PluginError::Deadline(_)) => return Err(bounds::Exceeded::Time { limit: limits.time }.to_string()),
        Err(PluginError::Memory(bytes)) => return Err(format!("exceeded the memory of its sandbox, {}", bounds::bytes(bytes as u64))),
        Err(PluginError::Trap(message)) => return Err(format!("the policy's evaluation failed in its sandbox: {message}")),
        Err(other) => return Err(format!("the policy's evaluation failed ({other})")),
    };
    let mut violations = Vec::new();
    for decision in decisions {
        if decision.len() as u64 > DECISION_LIMIT {
            return Err(format!("its decision is larger than the limit of {}", bounds::bytes(DECISION_LIMIT)));
        }
        // serde_json refuses nesting deeper than 128 levels rather than recursing further.
        let value: Value = serde_json::from_str(&decision).map_err(|e| format!("its decision could not be read: {e}"))?;
        add_violations(&mut violations, value);
    }
    Ok(violations)
}

/// regorus' timer for a budget of `limit`.
fn timer(limit: Duration) -> ExecutionTimerConfig {
    ExecutionTimerConfig { limit, check_interval: bounds::TIMER_INTERVAL }
}

/// An evaluation's error as the client reads it: regorus' own time limit named as Kapsel's budget.
fn evaluation_error(error: &anyhow::Error, limits: Limits) -> String {
    match error.downcast_ref::<regorus::LimitError>() {
        Some(regorus::LimitError::TimeLimitExceeded { .. }) => bounds::Exceeded::Time { limit: limits.time }.to_string(),
        Some(regorus::LimitError::MemoryLimitExceeded { .. }) => format!("exceeded its memory budget of {}", bounds::bytes(limits.memory)),
        _ => format!("{error:#}"),
    }
}

/// Gatekeeper's `data.inventory` of `objects`:
/// `namespace[<namespace>][<apiVersion>][<kind>][<name>]` for objects with a
/// namespace, `cluster[<apiVersion>][<kind>][<name>]` for the others. Objects
/// without an `apiVersion`, `kind` or name are left out.
pub fn inventory<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Result<regorus::Value, String> {
    let mut namespaced = serde_json::Map::new();
    let mut cluster = serde_json::Map::new();
    for object in objects {
        let text = |field: &str| object.get(field).and_then(Value::as_str).filter(|t| !t.is_empty());
        let (Some(api_version), Some(kind), Some(name)) = (text("apiVersion"), text("kind"), kapsel_api::object::name(object)) else {
            continue;
        };
        let root = match kapsel_api::object::meta_str(object, "namespace").filter(|n| !n.is_empty()) {
            Some(namespace) => entry(&mut namespaced, namespace),
            None => &mut cluster,
        };
        entry(entry(root, api_version), kind).insert(name.to_string(), object.clone());
    }
    let layout = serde_json::json!({"namespace": namespaced, "cluster": cluster});
    regorus::Value::deserialize(&layout).map_err(|e| e.to_string())
}

/// The object under `key` in `map`, created empty when missing (or not an object).
fn entry<'m>(map: &'m mut serde_json::Map<String, Value>, key: &str) -> &'m mut serde_json::Map<String, Value> {
    let slot = map.entry(key.to_string()).or_insert_with(|| Value::Object(serde_json::Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(serde_json::Map::new());
    }
    slot.as_object_mut().expect("an object")
}

/// A decision element as a violation: `{"msg": …, "details": …}` or a bare message.
fn violation(item: Value) -> Violation {
    match item {
        Value::String(msg) => Violation { msg, details: Value::Null },
        Value::Object(mut fields) => {
            let msg = match fields.remove("msg") {
                Some(Value::String(msg)) => msg,
                Some(other) => other.to_string(),
                None => Value::Object(fields.clone()).to_string(),
            };
            Violation { msg, details: fields.remove("details").unwrap_or(Value::Null) }
        }
        other => Violation { msg: other.to_string(), details: Value::Null },
    }
}

/// The operation of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }

    pub fn parse(text: &str) -> Option<Operation> {
        [Operation::Create, Operation::Update, Operation::Delete].into_iter().find(|o| o.as_str() == text)
    }
}

/// Who made a request.
#[derive(Debug, Clone, Default)]
pub struct UserInfo {
    pub username: String,
    pub groups: Vec<String>,
}

/// A request under review.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    /// The resource's plural, as `AdmissionReview.request.resource.resource`.
    pub resource: &'a str,
    pub operation: Operation,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub object: Option<&'a Value>,
    pub old_object: Option<&'a Value>,
    pub user: &'a UserInfo,
    pub dry_run: bool,
    /// The namespace's labels, when a policy's `namespaceSelector` needs them.
    pub namespace_labels: Option<&'a serde_json::Map<String, Value>>,
}

impl Request<'_> {
    /// `input.review`: the request as a Kubernetes AdmissionReview request.
    pub fn review(&self) -> Result<regorus::Value, String> {
        let mut review = serde_json::json!({
            "kind": {"group": self.group, "version": self.version, "kind": self.kind},
            "resource": {"group": self.group, "version": self.version, "resource": self.resource},
            "operation": self.operation.as_str(),
            "name": self.name,
            "userInfo": {"username": self.user.username, "groups": self.user.groups},
            "dryRun": self.dry_run,
        });
        if let Some(namespace) = self.namespace {
            review["namespace"] = Value::String(namespace.to_string());
        }
        if let Some(object) = self.object {
            review["object"] = object.clone();
        }
        if let Some(old) = self.old_object {
            review["oldObject"] = old.clone();
        }
        regorus::Value::deserialize(&review).map_err(|e| e.to_string())
    }
}

/// The type of an object reviewed on its own (a policy review, a test
/// case): group, version and kind from its `apiVersion` and `kind`, the
/// plural from the registry (or guessed, for a kind Kapsel does not serve).
#[derive(Debug, Clone)]
pub struct ObjectType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
}

impl ObjectType {
    pub fn of(object: &Value) -> ObjectType {
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
        let plural = kapsel_api::registry::by_kind(api_version, kind)
            .map(|r| r.plural.to_string())
            .unwrap_or_else(|| format!("{}s", kind.to_lowercase()));
        ObjectType { group: group.into(), version: version.into(), kind: kind.into(), plural }
    }
}

impl<'a> Request<'a> {
    /// A request about `object` (of `object_type`) as a client would send it:
    /// for a DELETE, `object` is the object deleted (`oldObject`).
    pub fn about(
        object_type: &'a ObjectType,
        operation: Operation,
        object: &'a Value,
        old_object: Option<&'a Value>,
        user: &'a UserInfo,
    ) -> Request<'a> {
        let deleting = operation == Operation::Delete;
        Request {
            group: &object_type.group,
            version: &object_type.version,
            kind: &object_type.kind,
            resource: &object_type.plural,
            operation,
            name: kapsel_api::object::name(object).unwrap_or_default(),
            namespace: kapsel_api::object::meta_str(object, "namespace").filter(|n| !n.is_empty()),
            object: (!deleting).then_some(object),
            old_object: if deleting { Some(object) } else { old_object },
            user,
            dry_run: false,
            namespace_labels: None,
        }
    }
}

/// Whether a policy's outcome admits the request: no violations, or an
/// enforcement that does not deny; an evaluation that failed admits only
/// under `failurePolicy: Ignore`.
pub fn admits(enforcement: Enforcement, failure_policy: PolicyFailurePolicy, outcome: &Result<Vec<Violation>, String>) -> bool {
    match outcome {
        Ok(violations) => violations.is_empty() || enforcement != Enforcement::Deny,
        Err(_) => failure_policy == PolicyFailurePolicy::Ignore,
    }
}

/// What one policy decided about a request.
#[derive(Debug, Clone)]
pub struct Decision {
    pub policy: PolicyId,
    pub enforcement: Enforcement,
    pub failure_policy: PolicyFailurePolicy,
    /// The violations, or why the policy could not be evaluated.
    pub outcome: Result<Vec<Violation>, String>,
}

impl Decision {
    /// Whether this decision admits the request (see [`admits`]).
    pub fn admits(&self) -> bool {
        admits(self.enforcement, self.failure_policy, &self.outcome)
    }
}

/// The loaded policies, indexed by the kinds they match.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: BTreeMap<PolicyId, Arc<Policy>>,
    /// Kind → the policies naming it; `None` → the policies matching every kind.
    by_kind: HashMap<Option<String>, Vec<Arc<Policy>>>,
}

impl PolicySet {
    /// A set with `policy` added (or replacing the one with its id).
    pub fn with(&self, policy: Policy) -> PolicySet {
        let mut policies = self.policies.clone();
        policies.insert(policy.id.clone(), Arc::new(policy));
        PolicySet::index(policies)
    }

    /// A set without the policy `id`.
    pub fn without(&self, id: &PolicyId) -> PolicySet {
        let mut policies = self.policies.clone();
        policies.remove(id);
        PolicySet::index(policies)
    }

    /// A set with only the policies whose id `keep` accepts.
    pub fn retaining(&self, keep: impl Fn(&PolicyId) -> bool) -> PolicySet {
        let policies = self.policies.iter().filter(|(id, _)| keep(id)).map(|(id, p)| (id.clone(), p.clone())).collect();
        PolicySet::index(policies)
    }

    fn index(policies: BTreeMap<PolicyId, Arc<Policy>>) -> PolicySet {
        let mut by_kind: HashMap<Option<String>, Vec<Arc<Policy>>> = HashMap::new();
        for policy in policies.values() {
            if policy.kinds.is_empty() {
                by_kind.entry(None).or_default().push(policy.clone());
            }
            for kind in &policy.kinds {
                by_kind.entry(Some(kind.clone())).or_default().push(policy.clone());
            }
        }
        PolicySet { policies, by_kind }
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn get(&self, id: &PolicyId) -> Option<&Arc<Policy>> {
        self.policies.get(id)
    }

    /// The policies of `kind` before their other criteria are checked; say whether any needs namespace labels.
    pub fn candidates(&self, kind: &str) -> impl Iterator<Item = &Arc<Policy>> {
        let named = self.by_kind.get(&Some(kind.to_string())).into_iter().flatten();
        named.chain(self.by_kind.get(&None).into_iter().flatten())
    }

    /// The kinds of existing objects the policies selecting `request` read
    /// as `data.inventory`; empty when none reads any.
    pub fn inventory_kinds(&self, request: &Request<'_>) -> BTreeSet<&str> {
        self.candidates(request.kind)
            .filter(|p| !p.inventory_kinds.is_empty() && p.selects(request))
            .flat_map(|p| p.inventory_kinds.iter().map(String::as_str))
            .collect()
    }

    /// Evaluates every policy whose `match` selects `request`, in name order,
    /// with an empty inventory for the policies that read one.
    pub fn review(&self, request: &Request<'_>) -> Vec<Decision> {
        self.review_with_inventory(request, &[])
    }

    /// Evaluates every policy whose `match` selects `request`, in name order;
    /// a policy that declares inventory kinds sees the objects of `existing`
    /// of those kinds as `data.inventory`. Together they get [`REQUEST_BUDGET`].
    pub fn review_with_inventory(&self, request: &Request<'_>, existing: &[Value]) -> Vec<Decision> {
        self.review_within(request, existing, REQUEST_BUDGET)
    }

    /// [`PolicySet::review_with_inventory`] with `total` for all the policies
    /// together: each gets its own budget or what is left of `total`, if less;
    /// once `total` is spent, the policies not yet evaluated fail (each then
    /// decides by its failure policy), with a message naming the limit.
    pub fn review_within(&self, request: &Request<'_>, existing: &[Value], total: Duration) -> Vec<Decision> {
        let mut selected: Vec<&Arc<Policy>> = self.candidates(request.kind).filter(|p| p.selects(request)).collect();
        if selected.is_empty() {
            return Vec::new();
        }
        // Cluster policies (no namespace) sort first: IT's policies are never starved by a namespace's.
        selected.sort_by(|a, b| a.id.cmp(&b.id));
        let review = request.review();
        let review = review.as_ref().map(Review::new);
        let started = Instant::now();
        selected
            .into_iter()
            .map(|policy| {
                let left = total.saturating_sub(started.elapsed());
                let outcome = if left.is_zero() {
                    Err(format!("not evaluated: the policies matching this request spent its admission budget of {} ms", total.as_millis()))
                } else {
                    let limits = Limits { time: left.min(TIME_BUDGET), ..Limits::default() };
                    review.as_ref().map_err(|e| (*e).clone()).and_then(|review| {
                        if policy.inventory_kinds.is_empty() {
                            return policy.evaluate_review(review, None, limits);
                        }
                        let kinds = &policy.inventory_kinds;
                        let wanted =
                            existing.iter().filter(|o| o.get("kind").and_then(Value::as_str).is_some_and(|k| kinds.iter().any(|w| w == k)));
                        policy.evaluate_review(review, Some(&inventory(wanted)?), limits)
                    })
                };
                Decision { policy: policy.id.clone(), enforcement: policy.enforcement, failure_policy: policy.failure_policy, outcome }
            })
            .collect()
    }
}

/// A regorus error (an `anyhow::Error`, printed whole: it carries the line and column) at `field`.
fn compile_error(field: &str, error: impl fmt::Display) -> CompileError {
    CompileError { field: field.to_string(), message: format!("{error:#}") }
}
