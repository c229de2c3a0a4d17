//! `Event` (core v1, namespaced): what the platform reports about an object
//! (scheduling, plug-in failures, node loss). Written by the system; tenants read.

use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::Value;

use super::{roundtrip, text_at, typed};
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_subdomain};

pub static EVENT: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    scope: Scope::Namespaced,
    tenant_access: TenantAccess::ReadOnly,
    selectable_fields: &["involvedObject.kind", "involvedObject.name", "reason", "type"],
    status_subresource: false,
    typed_roundtrip: Some(roundtrip::<k8s_openapi::api::core::v1::Event>),
    validate_name: dns1123_subdomain,
    validate,
    columns: &[
        Column { name: "Type", wide: false, value: |e| text_at(e, "type") },
        Column { name: "Reason", wide: false, value: |e| text_at(e, "reason") },
        Column { name: "Object", wide: false, value: object },
        Column { name: "Message", wide: false, value: |e| text_at(e, "message") },
    ],
};

fn validate(object: &Value) -> Vec<FieldError> {
    match typed::<Option<ObjectReference>>(object, "involvedObject") {
        Err(e) => vec![e],
        Ok(None) => vec![FieldError::required("involvedObject")],
        Ok(Some(_)) => Vec::new(),
    }
}

fn object(event: &Value) -> String {
    format!("{}/{}", text_at(event, "involvedObject.kind").to_lowercase(), text_at(event, "involvedObject.name"))
}
