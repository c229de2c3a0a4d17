//! The Kubernetes `Status` object: the body of every API error.
//!
//! Clients (kubectl, client-go, the Python client and Kapsel's CLI) read
//! `reason`, `code`, `message` and `details.causes[].field` from it.

use serde::{Deserialize, Serialize};

/// A `meta.k8s.io/v1` `Status`, as returned for every failed request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub kind: String,
    pub api_version: String,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// `Success` or `Failure`.
    pub status: String,
    #[serde(default)]
    pub message: String,
    /// A machine-readable reason such as `NotFound` or `Invalid`.
    #[serde(default)]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    pub code: u16,
}

/// Which object a `Status` is about and, for `Invalid`, which fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// One reason a request failed, pointing at the offending field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusCause {
    /// e.g. `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`.
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// The JSON path of the field, e.g. `spec.containers[0].image`.
    #[serde(default)]
    pub field: String,
}

impl Status {
    /// A failure `Status` with the given HTTP code, reason and message.
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Status {
            kind: "Status".into(),
            api_version: "v1".into(),
            metadata: Default::default(),
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            details: None,
            code,
        }
    }

    /// A success `Status`, as returned by some deletes.
    pub fn success(details: Option<StatusDetails>) -> Self {
        Status { status: "Success".into(), details, ..Status::failure(200, "", "") }
    }

    /// Attaches details to this status.
    pub fn with_details(mut self, details: StatusDetails) -> Self {
        self.details = Some(details);
        self
    }
}
