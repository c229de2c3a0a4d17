//! One compiled policy and its evaluations, in plain Rust: what the
//! component's `compile` and `evaluate` do, natively testable. The host
//! checks the policy's size and shape before it gets here; the sandbox
//! bounds the rest.

use regorus::{Engine, Value};

/// Why the modules did not compile: the index of the module at fault (when
/// one is) and regorus' message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub module: Option<usize>,
    pub message: String,
}

impl CompileError {
    fn program(message: impl Into<String>) -> Self {
        CompileError { module: None, message: message.into() }
    }
}

/// A policy compiled into an engine, ready to evaluate.
#[derive(Debug)]
pub struct Compiled {
    engine: Engine,
    decisions: Vec<String>,
    parameters: Value,
}

/// The rules a policy decides with, in the order they are evaluated.
const DECISION_RULES: [&str; 2] = ["violation", "deny"];

impl Compiled {
    /// Compiles `modules` (name, text): the libraries first, the policy's
    /// main module last. `parameters` is JSON, given to every evaluation as
    /// `input.parameters`.
    pub fn new(modules: &[(String, String)], rego_v0: bool, parameters: &str) -> Result<Compiled, CompileError> {
        let ((main_name, main_text), libraries) = modules.split_last().ok_or_else(|| CompileError::program("no Rego module"))?;
        let mut engine = Engine::new();
        engine.set_rego_v0(rego_v0);
        // `print` output is kept in the engine (cloned away after each
        // evaluation), not written to standard error, which the host keeps for panics.
        engine.set_gather_prints(true);
        for (index, (name, text)) in libraries.iter().enumerate() {
            engine.add_policy(name.clone(), text.clone()).map_err(|e| CompileError { module: Some(index), message: format!("{e:#}") })?;
        }
        let main = Some(libraries.len());
        let package = engine
            .add_policy(main_name.clone(), main_text.clone())
            .map_err(|e| CompileError { module: main, message: format!("{e:#}") })?;
        let decisions: Vec<String> = DECISION_RULES
            .iter()
            .filter(|rule| engine.has_declared_rule_rooted_at(main_name, rule).unwrap_or(false))
            .map(|rule| format!("{package}.{rule}"))
            .collect();
        if decisions.is_empty() {
            return Err(CompileError {
                module: main,
                message: format!("{package} defines neither `violation` (a set of {{\"msg\": …}} objects) nor `deny` (a set of messages)"),
            });
        }
        let parameters = Value::from_json_str(parameters).map_err(|e| CompileError::program(format!("the parameters: {e:#}")))?;
        // Prepare once (the checks that need the whole program, e.g. unknown
        // functions), on an empty input.
        engine.set_input(Value::new_object());
        for decision in &decisions {
            engine.eval_rule(decision.clone()).map_err(|e| CompileError { module: main, message: format!("{e:#}") })?;
        }
        Ok(Compiled { engine, decisions, parameters })
    }

    /// The full paths of the decision rules (`data.<package>.violation`, `…deny`).
    pub fn decisions(&self) -> &[String] {
        &self.decisions
    }

    /// Evaluates every decision rule on `review` (JSON, `input.review`) with
    /// `inventory` (JSON, `data.inventory`) when given; each rule's value as JSON.
    pub fn evaluate(&self, review: &str, inventory: Option<&str>) -> Result<Vec<String>, String> {
        let mut engine = self.engine.clone();
        if let Some(inventory) = inventory {
            let mut data = Value::new_object();
            data.as_object_mut()
                .map_err(|e| format!("{e:#}"))?
                .insert("inventory".into(), Value::from_json_str(inventory).map_err(|e| format!("the inventory: {e:#}"))?);
            engine.add_data(data).map_err(|e| format!("{e:#}"))?;
        }
        let mut input = Value::new_object();
        let fields = input.as_object_mut().map_err(|e| format!("{e:#}"))?;
        fields.insert("review".into(), Value::from_json_str(review).map_err(|e| format!("the review: {e:#}"))?);
        fields.insert("parameters".into(), self.parameters.clone());
        engine.set_input(input);
        self.decisions
            .iter()
            .map(|decision| {
                let value = engine.eval_rule(decision.clone()).map_err(|e| format!("{e:#}"))?;
                // Compact: `Value::to_json_str` would indent it.
                serde_json::to_string(&value).map_err(|e| e.to_string())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(text: &str) -> Vec<(String, String)> {
        vec![("policy.rego".to_string(), text.to_string())]
    }

    #[test]
    fn evaluates_violations_with_parameters() {
        let policy = module(
            "package labels\nimport rego.v1\nviolation contains {\"msg\": msg} if {\n  some key in input.parameters.required\n  not input.review.object.metadata.labels[key]\n  msg := sprintf(\"missing label %s\", [key])\n}",
        );
        let compiled = Compiled::new(&policy, false, r#"{"required": ["team"]}"#).expect("compiles");
        assert_eq!(compiled.decisions(), ["data.labels.violation"]);
        let verdict = compiled.evaluate(r#"{"object": {"metadata": {"labels": {}}}}"#, None).expect("evaluates");
        assert_eq!(verdict, [r#"[{"msg":"missing label team"}]"#]);
        let verdict = compiled.evaluate(r#"{"object": {"metadata": {"labels": {"team": "a"}}}}"#, None).expect("evaluates");
        assert_eq!(verdict, ["[]"]);
    }

    #[test]
    fn reads_the_inventory_as_data() {
        let policy =
            module("package unique\nimport rego.v1\ndeny contains \"taken\" if data.inventory.names[input.review.object.metadata.name]");
        let compiled = Compiled::new(&policy, false, "{}").expect("compiles");
        assert_eq!(
            compiled.evaluate(r#"{"object": {"metadata": {"name": "a"}}}"#, Some(r#"{"names": {"a": true}}"#)).unwrap(),
            [r#"["taken"]"#]
        );
        assert_eq!(compiled.evaluate(r#"{"object": {"metadata": {"name": "b"}}}"#, Some(r#"{"names": {"a": true}}"#)).unwrap(), ["[]"]);
    }

    #[test]
    fn names_the_module_at_fault() {
        let modules = vec![
            ("lib-0.rego".to_string(), "package lib\nbroken(".to_string()),
            ("policy.rego".to_string(), "package p\ndeny[\"x\"] { true }".to_string()),
        ];
        assert_eq!(Compiled::new(&modules, true, "{}").unwrap_err().module, Some(0));
        let error = Compiled::new(&module("package p\nallow := true"), false, "{}").unwrap_err();
        assert_eq!(error.module, Some(0));
        assert!(error.message.contains("neither `violation`"), "{}", error.message);
        assert_eq!(Compiled::new(&[], false, "{}").unwrap_err().module, None);
    }
}
