//! Label selectors (`app=web,tier!=db,env in (dev,qa),!legacy`) and field
//! selectors (`metadata.name=x,spec.nodeName!=n1`), parsed once per request
//! and matched against objects held as JSON.

use std::collections::BTreeMap;

/// A selector that failed to parse; the message says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse selector {text:?}: {reason}")]
pub struct SelectorError {
    pub text: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector: every requirement must hold (logical AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax. An empty string selects everything.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let fail = |reason: &str| SelectorError { text: text.to_string(), reason: reason.to_string() };
        let mut requirements = Vec::new();
        for term in split_top_level(text).map_err(|r| fail(&r))? {
            let term = term.trim();
            if term.is_empty() {
                return Err(fail("empty requirement"));
            }
            let requirement = if let Some(key) = term.strip_prefix('!') {
                LabelRequirement::DoesNotExist(valid_key(key.trim()).map_err(|r| fail(&r))?)
            } else if let Some((key, value)) = term.split_once("!=") {
                LabelRequirement::NotEquals(valid_key(key.trim()).map_err(|r| fail(&r))?, valid_value(value.trim()).map_err(|r| fail(&r))?)
            } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
                LabelRequirement::Equals(valid_key(key.trim()).map_err(|r| fail(&r))?, valid_value(value.trim()).map_err(|r| fail(&r))?)
            } else if let Some((key, values)) = split_set(term, " notin ") {
                LabelRequirement::NotIn(valid_key(key).map_err(|r| fail(&r))?, parse_set(values).map_err(|r| fail(&r))?)
            } else if let Some((key, values)) = split_set(term, " in ") {
                LabelRequirement::In(valid_key(key).map_err(|r| fail(&r))?, parse_set(values).map_err(|r| fail(&r))?)
            } else {
                LabelRequirement::Exists(valid_key(term).map_err(|r| fail(&r))?)
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector { requirements })
    }

    /// A selector requiring each `key=value` of `labels` (a `matchLabels` map).
    pub fn from_match_labels(labels: &BTreeMap<String, String>) -> Self {
        LabelSelector { requirements: labels.iter().map(|(k, v)| LabelRequirement::Equals(k.clone(), v.clone())).collect() }
    }

    /// The selector of a Kubernetes `LabelSelector` object (`matchLabels` and
    /// `matchExpressions` with `In`, `NotIn`, `Exists`, `DoesNotExist`).
    pub fn from_k8s(selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = match &selector.match_labels {
            Some(labels) => Self::from_match_labels(labels).requirements,
            None => Vec::new(),
        };
        for expression in selector.match_expressions.iter().flatten() {
            let fail = |reason: &str| SelectorError { text: expression.key.clone(), reason: reason.to_string() };
            let key = valid_key(&expression.key).map_err(|r| fail(&r))?;
            let values = expression.values.clone().unwrap_or_default();
            let needs_values = matches!(expression.operator.as_str(), "In" | "NotIn");
            if needs_values == values.is_empty() {
                return Err(fail(if needs_values { "In and NotIn need values" } else { "Exists and DoesNotExist take no values" }));
            }
            requirements.push(match expression.operator.as_str() {
                "In" => LabelRequirement::In(key, values),
                "NotIn" => LabelRequirement::NotIn(key, values),
                "Exists" => LabelRequirement::Exists(key),
                "DoesNotExist" => LabelRequirement::DoesNotExist(key),
                other => return Err(fail(&format!("unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"))),
            });
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object with these labels (`metadata.labels`) is selected.
    pub fn matches(&self, labels: Option<&serde_json::Map<String, serde_json::Value>>) -> bool {
        let get = |key: &str| labels.and_then(|l| l.get(key)).and_then(|v| v.as_str());
        self.requirements.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, values) => get(k).is_some_and(|have| values.iter().any(|v| v == have)),
            LabelRequirement::NotIn(k, values) => get(k).is_none_or(|have| values.iter().all(|v| v != have)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside a `( … )` set.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or("unbalanced ')'")?,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn split_set<'a>(term: &'a str, operator: &str) -> Option<(&'a str, &'a str)> {
    let (key, rest) = term.split_once(operator)?;
    Some((key.trim(), rest.trim()))
}

fn parse_set(text: &str) -> Result<Vec<String>, String> {
    let inner =
        text.strip_prefix('(').and_then(|t| t.strip_suffix(')')).ok_or_else(|| format!("expected a set in parentheses, found {text:?}"))?;
    inner.split(',').map(|v| valid_value(v.trim())).collect()
}

fn valid_key(key: &str) -> Result<String, String> {
    crate::validation::label_key(key).map_err(|e| format!("invalid label key {key:?}: {e}"))?;
    Ok(key.to_string())
}

fn valid_value(value: &str) -> Result<String, String> {
    crate::validation::label_value(value).map_err(|e| format!("invalid label value {value:?}: {e}"))?;
    Ok(value.to_string())
}

/// A parsed field selector: `path=value` or `path!=value` terms over dotted
/// paths of the object (`metadata.name`, `metadata.namespace`, `spec.nodeName`, `status.phase`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

/// The field paths every kind supports in a field selector.
pub const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

impl FieldSelector {
    /// Parses a field selector; `allowed` are the paths this kind supports
    /// beyond [`COMMON_FIELDS`].
    pub fn parse(text: &str, allowed: &[&str]) -> Result<Self, SelectorError> {
        let fail = |reason: String| SelectorError { text: text.to_string(), reason };
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (p, true, v)
            } else {
                return Err(fail(format!("invalid field selector term {term:?}: expected field=value or field!=value")));
            };
            let path = path.trim();
            if !COMMON_FIELDS.contains(&path) && !allowed.contains(&path) {
                return Err(fail(format!("field label not supported: {path}")));
            }
            terms.push((path.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value this selector requires `path` to equal, if it has such a term.
    pub fn required_value(&self, path: &str) -> Option<&str> {
        self.terms.iter().find(|(p, equal, _)| *equal && p == path).map(|(_, _, v)| v.as_str())
    }

    /// Whether `object` is selected. A missing field reads as the empty string.
    pub fn matches(&self, object: &serde_json::Value) -> bool {
        self.terms.iter().all(|(path, equal, value)| {
            let mut current = Some(object);
            for part in path.split('.') {
                current = current.and_then(|c| c.get(part));
            }
            let actual = match current {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn label_operators() {
        let l = labels(json!({"app": "web", "env": "dev"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(Some(&l));
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app!=web"));
        assert!(m("env in (dev, qa)"));
        assert!(!m("env notin (dev,qa)"));
        assert!(m("tier notin (db)"));
        assert!(m("app,!tier"));
        assert!(!m("tier"));
        assert!(m("app=web,env in (dev),!legacy"));
        assert!(!LabelSelector::parse("app=web").unwrap().matches(None));
    }

    #[test]
    fn label_errors() {
        for bad in ["app=(", "env in dev", "bad key=1", "a=b,,c", "x in (a"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p1", "namespace": "dev"}, "spec": {"nodeName": "n1"}});
        let m = |s: &str| FieldSelector::parse(s, &["spec.nodeName", "status.phase"]).unwrap().matches(&pod);
        assert!(m("metadata.name=p1"));
        assert!(m("metadata.namespace!=prod"));
        assert!(m("spec.nodeName=n1,metadata.name==p1"));
        assert!(m("status.phase="));
        assert!(!m("metadata.name=p2"));
        assert!(FieldSelector::parse("spec.foo=1", &[]).is_err());
        assert!(FieldSelector::parse("metadata.name", &[]).is_err());
    }
}
