//! Field validation helpers shared by every kind: names, labels, and the
//! [`FieldError`] that becomes a `details.causes[]` entry of a 422 `Invalid`.

use std::fmt;

/// One invalid field: its JSON path, what is wrong, and the cause reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path as Kubernetes writes it, e.g. `metadata.name` or `spec.containers[0].image`.
    pub field: String,
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueDuplicate`, `FieldValueForbidden`, `FieldValueNotFound`.
    pub reason: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>) -> Self {
        FieldError { field: field.into(), reason: "FieldValueRequired", message: "Required value".into() }
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), reason: "FieldValueInvalid", message: message.into() }
    }
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        FieldError { field: field.into(), reason: "FieldValueDuplicate", message: format!("Duplicate value: {value:?}") }
    }
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        FieldError {
            field: field.into(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                supported.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    /// The same error with a more specific message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
    pub fn forbidden(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), reason: "FieldValueForbidden", message: message.into() }
    }
    /// The field names something that does not exist (a class, an image).
    pub fn not_found(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), reason: "FieldValueNotFound", message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

/// Checks an RFC 1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters):
/// namespace names, container names.
pub fn dns1123_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > DNS1123_LABEL_MAX {
        return Err(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    if !label_chars_ok(value) {
        return Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')".into());
    }
    Ok(())
}

/// Checks an RFC 1123 subdomain (dot-separated labels, at most 253 characters):
/// most object names.
pub fn dns1123_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    if !value.split('.').all(label_chars_ok) {
        return Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')".into());
    }
    Ok(())
}

fn label_chars_ok(part: &str) -> bool {
    let bytes = part.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Checks a label key (`[prefix/]name`) as Kubernetes does.
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        dns1123_subdomain(prefix).map_err(|e| format!("prefix part {e}"))?;
    }
    qualified_name_part(name).map_err(|e| format!("name part {e}"))
}

/// Checks a label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`,
/// beginning and ending with an alphanumeric.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    qualified_name_part(value)
}

fn qualified_name_part(value: &str) -> Result<(), String> {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err("must not be empty".into());
    }
    if bytes.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let ok = bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert!(dns1123_label("dev-1").is_ok());
        assert!(dns1123_label("Dev").is_err());
        assert!(dns1123_label("-dev").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_subdomain("web.example-1").is_ok());
        assert!(dns1123_subdomain("web..x").is_err());
        assert!(label_key("app.kubernetes.io/name").is_ok());
        assert!(label_key("bad key").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_3").is_ok());
        assert!(label_value("-x").is_err());
    }
}
