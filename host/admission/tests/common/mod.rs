//! Policies shared by the admission test binaries.

/// Gatekeeper-style (Rego v0): labels required by `input.parameters.labels`.
pub const REQUIRED_LABELS_V0: &str = r#"
package kapsel.requiredlabels

violation[{"msg": msg, "details": {"missing_labels": missing}}] {
  provided := {label | input.review.object.metadata.labels[label]}
  required := {label | label := input.parameters.labels[_]}
  missing := required - provided
  count(missing) > 0
  msg := sprintf("you must provide labels: %v", [missing])
}
"#;
