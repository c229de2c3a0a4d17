//! Auditing objects at rest: which stored objects a policy's `match`
//! selects, and the review each is given. As OPA Gatekeeper's audit does, a
//! stored object is reviewed as an AdmissionReview request carrying only what
//! an object at rest has — `kind`, `resource`, `name`, `namespace` and
//! `object` — with no `operation`, `oldObject`, `userInfo` or `dryRun`, and
//! `match.operations` is not consulted (there is no request). A policy whose
//! decision depends on those fields finds nothing to report in an audit.

use serde::Deserialize as _;
use serde_json::{Map, Value};

use std::sync::Arc;

use crate::{Policy, PolicySet};

/// A stored object under audit.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    /// The resource's plural, as `AdmissionReview.request.resource.resource`.
    pub resource: &'a str,
    pub object: &'a Value,
    /// The labels of the object's namespace, when a policy's `namespaceSelector` needs them.
    pub namespace_labels: Option<&'a Map<String, Value>>,
}

impl Stored<'_> {
    /// The object's namespace (`None` for a cluster-scoped object).
    pub fn namespace(&self) -> Option<&str> {
        self.object.pointer("/metadata/namespace").and_then(Value::as_str).filter(|n| !n.is_empty())
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
    }

    /// `input.review` for the object at rest.
    pub fn review(&self) -> Result<regorus::Value, String> {
        let mut review = serde_json::json!({
            "kind": {"group": self.group, "version": self.version, "kind": self.kind},
            "resource": {"group": self.group, "version": self.version, "resource": self.resource},
            "name": self.name(),
            "object": self.object,
        });
        if let Some(namespace) = self.namespace() {
            review["namespace"] = Value::String(namespace.to_string());
        }
        regorus::Value::deserialize(&review).map_err(|e| e.to_string())
    }
}

impl PolicySet {
    /// Every loaded policy, in name order (cluster policies first).
    pub fn all(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.policies.values()
    }
}

impl Policy {
    /// The kind names the policy matches; empty when it matches every kind.
    pub fn kinds(&self) -> &[String] {
        &self.kinds
    }

    /// Whether the policy's `match` selects `stored`, its operations aside.
    pub fn audits(&self, stored: &Stored<'_>) -> bool {
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| k == stored.kind) {
            return false;
        }
        self.selects_object(stored.namespace(), stored.namespace_labels, Some(stored.object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PolicyId;
    use kapsel_api::kinds::admission_policy::PolicySpec;
    use serde_json::json;

    fn policy(namespace: Option<&str>, spec: Value) -> Policy {
        let spec: PolicySpec = serde_json::from_value(spec).unwrap();
        Policy::compile(PolicyId { namespace: namespace.map(str::to_string), name: "p".into() }, &spec).unwrap()
    }

    fn pod(namespace: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": namespace, "labels": labels}})
    }

    fn stored<'a>(object: &'a Value, namespace_labels: Option<&'a Map<String, Value>>) -> Stored<'a> {
        Stored { group: "", version: "v1", kind: "Pod", resource: "pods", object, namespace_labels }
    }

    const REGO: &str = "package t\ndeny contains \"no\" if { input.review.object.metadata.name == \"web\" }\n";

    #[test]
    fn selects_without_operations() {
        let only_deletes = policy(None, json!({"rego": REGO, "match": {"kinds": ["Pod"], "operations": ["DELETE"]}}));
        let web = pod("dev", json!({}));
        assert!(only_deletes.audits(&stored(&web, None)), "operations do not limit an audit");
        let nodes = policy(None, json!({"rego": REGO, "match": {"kinds": ["Node"]}}));
        assert!(!nodes.audits(&stored(&web, None)));
    }

    #[test]
    fn namespaces_and_selectors() {
        let web = pod("dev", json!({"tier": "front"}));
        let own = policy(Some("qa"), json!({"rego": REGO}));
        assert!(!own.audits(&stored(&web, None)), "a namespace's policy audits only its namespace");
        assert!(policy(Some("dev"), json!({"rego": REGO})).audits(&stored(&web, None)));
        let excluded = policy(None, json!({"rego": REGO, "match": {"excludedNamespaces": ["dev"]}}));
        assert!(!excluded.audits(&stored(&web, None)));
        let front = policy(None, json!({"rego": REGO, "match": {"labelSelector": {"matchLabels": {"tier": "front"}}}}));
        assert!(front.audits(&stored(&web, None)));
        assert!(!front.audits(&stored(&pod("dev", json!({"tier": "back"})), None)));
        let pci = policy(None, json!({"rego": REGO, "match": {"namespaceSelector": {"matchLabels": {"pci": "true"}}}}));
        let labels = json!({"pci": "true"});
        assert!(pci.audits(&stored(&web, labels.as_object())));
        assert!(!pci.audits(&stored(&web, None)));
    }

    #[test]
    fn reviews_carry_no_request_fields() {
        let web = pod("dev", json!({}));
        let review = serde_json::to_value(stored(&web, None).review().unwrap()).unwrap();
        assert_eq!(review["namespace"], "dev");
        assert_eq!(review["name"], "web");
        assert_eq!(review["kind"]["kind"], "Pod");
        assert_eq!(review["object"], web);
        for absent in ["operation", "userInfo", "oldObject", "dryRun"] {
            assert!(review.get(absent).is_none(), "{absent} in {review}");
        }
    }
}
