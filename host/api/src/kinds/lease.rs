//! `Lease` (`coordination.k8s.io/v1`, namespaced): a node agent's heartbeat.
//! Each node agent renews the lease named after its node in
//! [`NODE_LEASE_NAMESPACE`] every few seconds (`spec.renewTime`), a small
//! write instead of a rewrite of the whole `Node`; the supervisor's node
//! lifecycle controller reads how old it is. Node agents and IT admins only.

use k8s_openapi::api::coordination::v1::LeaseSpec;
use serde_json::Value;

use super::{roundtrip, text_at, typed};
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_subdomain};

/// The annotation of a node's lease naming where its agent serves
/// container logs (`https://ip:port`), for the supervisor to relay them.
pub const AGENT_ENDPOINT_ANNOTATION: &str = "kapsel.io/agent-endpoint";
/// The annotation of a node's lease holding the certificate (PEM) its
/// agent's log endpoint presents: self-signed at each start for the
/// advertised address, the one certificate the supervisor trusts there.
pub const AGENT_CERTIFICATE_ANNOTATION: &str = "kapsel.io/agent-certificate";
/// The annotation of a node's lease holding the secret its agent's log
/// endpoint asks for (leases are readable by IT admins and their own node only).
pub const AGENT_SECRET_ANNOTATION: &str = "kapsel.io/agent-secret";

/// The namespace of node leases, as in Kubernetes; the supervisor creates it.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

pub static LEASE: ResourceType = ResourceType {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    short_names: &[],
    scope: Scope::Namespaced,
    tenant_access: TenantAccess::None,
    selectable_fields: &[],
    status_subresource: false,
    typed_roundtrip: Some(roundtrip::<k8s_openapi::api::coordination::v1::Lease>),
    validate_name: dns1123_subdomain,
    validate,
    columns: &[
        Column { name: "Holder", wide: false, value: |l| text_at(l, "spec.holderIdentity") },
        Column { name: "Renewed", wide: false, value: |l| text_at(l, "spec.renewTime") },
    ],
};

fn validate(object: &Value) -> Vec<FieldError> {
    match typed::<Option<LeaseSpec>>(object, "spec") {
        Err(e) => vec![e],
        Ok(None) => vec![FieldError::required("spec")],
        Ok(Some(spec)) => {
            let mut errors = Vec::new();
            if spec.lease_duration_seconds.is_some_and(|s| s <= 0) {
                errors.push(FieldError::invalid("spec.leaseDurationSeconds", "must be greater than 0"));
            }
            errors
        }
    }
}

/// When the lease was last renewed (`spec.renewTime`, else `acquireTime`).
pub fn renewed_at(lease: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = lease.pointer("/spec/renewTime").or_else(|| lease.pointer("/spec/acquireTime"))?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lease_says_when_it_was_renewed() {
        let lease = json!({"spec": {"holderIdentity": "n1", "leaseDurationSeconds": 10, "renewTime": "2026-01-01T00:00:02.500000Z"}});
        assert!(validate(&lease).is_empty());
        assert_eq!(renewed_at(&lease).map(|t| t.timestamp_millis()), Some(1_767_225_602_500));
        let bad = json!({"spec": {"leaseDurationSeconds": 0}});
        assert_eq!(validate(&bad)[0].field, "spec.leaseDurationSeconds");
    }
}
