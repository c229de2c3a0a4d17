//! Workload templates (`kapsel.io/v1alpha1`): pod templates with
//! parameters that tenants instantiate (`kapsel create from-template NAME
//! --set image=… --set class=…`). `ClusterWorkloadTemplate` (cluster-scoped)
//! is IT's catalogue, readable by every tenant; `WorkloadTemplate`
//! (namespaced) is a namespace owner's own. `spec.template` is a pod's
//! `metadata` (labels, annotations) and `spec`, in whose strings
//! `${parameter}` stands for a parameter's value; `spec.parameters` declares
//! each one (`name`, `description`, `required`, `default`). Instantiation
//! (the server's `templates` module) substitutes the values and creates the
//! pod through the ordinary request path, so admission, quotas, classes and
//! limit ranges apply to it as to any pod.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{required_spec, text_at};
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_subdomain};

const COLUMNS: &[Column] = &[
    Column { name: "Parameters", wide: false, value: parameters_column },
    Column { name: "Description", wide: false, value: |t| text_at(t, "spec.description") },
];

pub static CLUSTER_WORKLOAD_TEMPLATE: ResourceType = ResourceType {
    group: crate::KAPSEL_GROUP,
    version: crate::KAPSEL_VERSION,
    kind: "ClusterWorkloadTemplate",
    plural: "clusterworkloadtemplates",
    singular: "clusterworkloadtemplate",
    short_names: &["cwt"],
    scope: Scope::Cluster,
    tenant_access: TenantAccess::ClusterReadable,
    selectable_fields: &[],
    status_subresource: false,
    typed_roundtrip: None,
    validate_name: dns1123_subdomain,
    validate,
    columns: COLUMNS,
};

pub static WORKLOAD_TEMPLATE: ResourceType = ResourceType {
    group: crate::KAPSEL_GROUP,
    version: crate::KAPSEL_VERSION,
    kind: "WorkloadTemplate",
    plural: "workloadtemplates",
    singular: "workloadtemplate",
    short_names: &["wt"],
    scope: Scope::Namespaced,
    tenant_access: TenantAccess::NamespaceOwned,
    selectable_fields: &[],
    status_subresource: false,
    typed_roundtrip: None,
    validate_name: dns1123_subdomain,
    validate,
    columns: COLUMNS,
};

/// One parameter of a template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateParameter {
    /// Referenced as `${name}` in the template's strings.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Whether instantiation must give a value (when there is no default).
    #[serde(default)]
    pub required: bool,
    /// The value when none is given.
    #[serde(default)]
    pub default: Option<String>,
}

/// The spec of a workload template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadTemplateSpec {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parameters: Vec<TemplateParameter>,
    /// A pod's `metadata` (labels, annotations, generateName) and `spec`.
    pub template: Value,
}

/// The parameter names a string refers to with `${name}`.
pub fn references(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        names.push(&after[..end]);
        rest = &after[end + 1..];
    }
    names
}

/// Every string in `value` (not keys), with its path.
fn strings<'a>(value: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(text) => out.push((path, text)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                strings(item, format!("{path}.{key}"), out);
            }
        }
        _ => {}
    }
}

fn parameter_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn validate(object: &Value) -> Vec<FieldError> {
    let spec: WorkloadTemplateSpec = match required_spec(object) {
        Ok(spec) => spec,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    let mut declared = BTreeSet::new();
    for (i, parameter) in spec.parameters.iter().enumerate() {
        let at = format!("spec.parameters[{i}].name");
        if !parameter_name_ok(&parameter.name) {
            errors.push(FieldError::invalid(at, "a parameter name is a letter or _ followed by letters, digits, _ or -"));
        } else if !declared.insert(parameter.name.as_str()) {
            errors.push(FieldError::duplicate(at, &parameter.name));
        }
    }
    let Some(template) = spec.template.as_object() else {
        errors.push(FieldError::invalid("spec.template", "must be a pod's metadata and spec"));
        return errors;
    };
    for field in template.keys().filter(|k| !matches!(k.as_str(), "metadata" | "spec")) {
        errors.push(FieldError::invalid(format!("spec.template.{field}"), "a template holds a pod's metadata and spec only"));
    }
    if !template.get("spec").is_some_and(|s| s.get("containers").is_some_and(Value::is_array)) {
        errors.push(FieldError::required("spec.template.spec.containers"));
    }
    let mut texts = Vec::new();
    strings(&spec.template, "spec.template".into(), &mut texts);
    for (path, text) in texts {
        for name in references(text) {
            if !declared.contains(name) {
                errors.push(FieldError::invalid(path.clone(), format!("refers to ${{{name}}}, which spec.parameters does not declare")));
            }
        }
    }
    errors
}

fn parameters_column(template: &Value) -> String {
    let names: Vec<String> = template
        .pointer("/spec/parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?;
            Some(if p.get("required").and_then(Value::as_bool) == Some(true) { format!("{name}*") } else { name.to_string() })
        })
        .collect();
    if names.is_empty() { "<none>".into() } else { names.join(",") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_references_and_refuses_undeclared_ones() {
        assert_eq!(references("${registry}/app:${tag}"), ["registry", "tag"]);
        assert!(references("no ${ closing").is_empty());
        let template = json!({"spec": {
            "parameters": [{"name": "image", "required": true}],
            "template": {"spec": {"containers": [{"name": "app", "image": "${image}", "args": ["${level}"]}]}}}});
        let errors = validate(&template);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec.template.spec.containers[0].args[0]");
        assert!(errors[0].message.contains("${level}"));
    }
}
