//! Authentication and authorization.
//!
//! Authentication: bearer tokens only. A token is a random secret; the store
//! keeps only its SHA-256 in a `Token` object, so a leaked database leaks no
//! credential. The [`Authenticator`] holds a map from hash to [`Identity`],
//! loaded at start and kept current by a [reflector](crate::reflector) on
//! tokens, so revoking a token takes effect on the next request.
//!
//! Authorization ([`authorize`]): IT admins may do everything; tenants hold
//! per-namespace roles (`view`, `edit`, `owner`) and each kind's
//! [`TenantAccess`] says what those roles allow. Lists and watches across
//! all namespaces are allowed to tenants and *filtered* to their namespaces.
//! Node agents hold node tokens ([`Identity::node`]): they read nodes, pods,
//! images and write events; they change only their own `Node` and lease,
//! and only the status (and deletion) of the pods bound to them — the
//! object-level half of that is [`node_may_touch`], checked once the target
//! object is known, and [`node_may_write`] once its new content is: a
//! lease's log endpoint must be `https://IP:PORT`.
//!
//! A role names a namespace, and ends with it: when the namespace
//! controller finalizes a deleted namespace, the same transaction removes
//! that namespace's entries from every `Token` (`controllers/namespace.rs`),
//! so a namespace re-created under the same name starts with no tenant in
//! it ([`without_roles_in`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use kapsel_api::kinds::token::{Role, TOKEN, TokenSpec};
use kapsel_api::registry::TenantAccess;
use kapsel_api::{ResourceType, Scope};
use kapsel_store::{Change, ChangeType, Store, StoreError};
use rand::RngCore as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::reflector::{self, Reflected, Reflection};

/// Who a request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub admin: bool,
    pub roles: BTreeMap<String, Role>,
    /// RFC 3339 expiry, if the token has one.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The node whose agent this is (a node token).
    pub node: Option<String>,
}

impl Identity {
    /// The role held in `namespace`, if any.
    pub fn role_in(&self, namespace: &str) -> Option<Role> {
        self.roles.get(namespace).copied()
    }

    /// Whether objects in `namespace` are visible to this identity (a node
    /// agent reads the kinds it may read in every namespace: the pods bound
    /// to it, the artifacts their images come from).
    pub fn sees_namespace(&self, namespace: &str) -> bool {
        self.admin || self.node.is_some() || self.roles.contains_key(namespace)
    }

    /// Whether this identity reads objects of `resource` in `namespace`:
    /// a namespace it sees, with a role the kind lets read (`view` reads
    /// no Secrets).
    pub fn reads(&self, resource: &ResourceType, namespace: &str) -> bool {
        if self.admin || self.node.is_some() {
            return true;
        }
        match self.role_in(namespace) {
            None => false,
            Some(role) => resource.tenant_access != TenantAccess::Confidential || role >= Role::Edit,
        }
    }

    fn from_spec(spec: &TokenSpec) -> Identity {
        let mut roles = BTreeMap::new();
        for grant in &spec.roles {
            let role = roles.entry(grant.namespace.clone()).or_insert(grant.role);
            *role = (*role).max(grant.role);
        }
        Identity {
            user: match &spec.node {
                Some(node) => kapsel_api::kinds::token::node_user(node),
                None => spec.user.clone(),
            },
            node: spec.node.clone(),
            admin: spec.admin && spec.node.is_none(),
            roles,
            expires_at: spec
                .expires_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
        }
    }
}

/// The `sha256:<hex>` a token is stored and looked up by.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in digest {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// A new random bearer token: `kpl_` and 256 random bits, base64url.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("kpl_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Maps bearer tokens to identities; kept current by a [reflector](crate::reflector) on tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    by_hash: Arc<RwLock<HashMap<String, Identity>>>,
    reflection: Reflection,
}

impl Default for Authenticator {
    /// An empty authenticator, filled by hand with [`Authenticator::apply`] (tests).
    fn default() -> Self {
        Authenticator { by_hash: Arc::default(), reflection: Reflection::complete(TOKEN.kind) }
    }
}

/// The token map as a reflector keeps it.
#[derive(Debug)]
struct Tokens(Arc<RwLock<HashMap<String, Identity>>>);

impl Reflected for Tokens {
    fn replace(&self, objects: Vec<Value>) {
        let fresh: HashMap<String, Identity> = objects.iter().filter_map(entry).collect();
        *self.0.write().expect("token cache lock") = fresh;
    }

    fn apply(&self, change: &Change) {
        apply(&self.0, change.change_type, &change.object);
    }
}

impl Authenticator {
    /// Loads every token and starts following changes to them.
    pub async fn start(store: &Store) -> Result<Authenticator, StoreError> {
        let by_hash = Arc::default();
        let reflection = reflector::start(store, &TOKEN, Tokens(Arc::clone(&by_hash))).await?;
        Ok(Authenticator { by_hash, reflection })
    }

    /// Waits until the authenticator holds every token change up to `revision`
    /// (one just committed: the very next request sees it).
    pub async fn caught_up(&self, revision: i64) -> bool {
        self.reflection.caught_up(revision).await
    }

    /// Takes in a change to a token by hand, for an authenticator that
    /// follows no store (tests); a started one follows the store itself.
    pub fn apply(&self, change: ChangeType, token: &Value) {
        apply(&self.by_hash, change, token);
    }

    /// The identity of an `Authorization` header value, or 401.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Identity, ApiError> {
        let secret = header
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("Unauthorized: a bearer token is required".into()))?;
        let identity = self
            .by_hash
            .read()
            .expect("token cache lock")
            .get(&hash_secret(secret))
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("Unauthorized: the token is not valid or has been revoked".into()))?;
        if identity.expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
            return Err(ApiError::Unauthorized("Unauthorized: the token has expired".into()));
        }
        Ok(identity)
    }
}

/// The cache entry of a Token object: its secret's hash and the identity it grants.
fn entry(token: &Value) -> Option<(String, Identity)> {
    let spec: TokenSpec = serde::Deserialize::deserialize(token.get("spec")?).ok()?;
    Some((spec.secret_hash.clone(), Identity::from_spec(&spec)))
}

/// Takes in a committed change to a token.
fn apply(by_hash: &RwLock<HashMap<String, Identity>>, change: ChangeType, token: &Value) {
    let Some((hash, identity)) = entry(token) else {
        return;
    };
    let mut map = by_hash.write().expect("token cache lock");
    match change {
        ChangeType::Deleted => {
            map.remove(&hash);
        }
        ChangeType::Added | ChangeType::Modified => {
            map.insert(hash, identity);
        }
    }
}

/// An API verb, as authorization and messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    pub fn is_read(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// Decides whether `identity` may `verb` objects of `resource` in
/// `namespace` (`None`: cluster-scoped, or across all namespaces). For the
/// `Namespace` kind, `namespace` is the namespace named in the request.
/// Reads across all namespaces are allowed here and filtered by the caller
/// with [`Identity::sees_namespace`].
pub fn authorize(identity: &Identity, verb: Verb, resource: &ResourceType, namespace: Option<&str>) -> Result<(), ApiError> {
    if identity.admin {
        return Ok(());
    }
    if identity.node.is_some() {
        return if node_allows(verb, resource) { Ok(()) } else { Err(forbidden(identity, verb, resource, ": node agents may not")) };
    }
    let role = namespace.and_then(|ns| identity.role_in(ns));
    let allowed = match resource.tenant_access {
        TenantAccess::None => false,
        TenantAccess::ClusterReadable => verb.is_read(),
        TenantAccess::OwnNamespaces => verb.is_read() && (namespace.is_none() || role.is_some()),
        TenantAccess::ReadOnly => verb.is_read() && (namespace.is_none() || role.is_some()),
        TenantAccess::NamespaceOwned => match namespace {
            None => verb.is_read(),
            Some(_) if verb.is_read() => role.is_some(),
            Some(_) => role == Some(Role::Owner),
        },
        TenantAccess::Workload => match namespace {
            None => verb.is_read(),
            Some(_) if verb.is_read() => role.is_some(),
            Some(_) => role.is_some_and(|r| r >= Role::Edit),
        },
        // Across namespaces, the listing reads only those where the role reads them.
        TenantAccess::Confidential => match namespace {
            None => verb.is_read(),
            Some(_) => role.is_some_and(|r| r >= Role::Edit),
        },
    };
    if allowed {
        return Ok(());
    }
    let scope = match (resource.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => format!(" in the namespace {ns:?}"),
        (Scope::Namespaced, None) => " at the cluster scope".into(),
        (Scope::Cluster, Some(ns)) if resource.kind == "Namespace" => format!(" named {ns:?}"),
        (Scope::Cluster, _) => " at the cluster scope".into(),
    };
    let why = match (role, verb.is_read()) {
        (Some(role), false) => format!(": role {:?} in that namespace does not allow it", role_name(role)),
        (None, _) if resource.tenant_access == TenantAccess::None => ": only IT admins may".into(),
        (None, _) if namespace.is_some() && resource.namespaced() => ": the user holds no role in that namespace".into(),
        _ => ": only IT admins may".into(),
    };
    Err(forbidden(identity, verb, resource, &format!("{scope}{why}")))
}

/// Kubernetes' wording of a refusal: `pods is forbidden: User "alice" cannot create resource "pods" in API group ""…`.
fn forbidden(identity: &Identity, verb: Verb, resource: &ResourceType, detail: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "{plural} is forbidden: User {user:?} cannot {verb} resource {plural:?} in API group {group:?}{detail}",
        plural = resource.plural,
        user = identity.user,
        verb = verb.as_str(),
        group = resource.group,
    ))
}

/// The kinds and verbs a node agent may use at all; which objects, [`node_may_touch`] decides.
fn node_allows(verb: Verb, resource: &ResourceType) -> bool {
    match (resource.group, resource.kind) {
        ("", "Node") | ("coordination.k8s.io", "Lease") => verb != Verb::Delete,
        ("", "Pod") => verb != Verb::Create,
        ("", "Event") => verb != Verb::Delete,
        (kapsel_api::KAPSEL_GROUP, "Artifact") => verb.is_read(),
        // The ingress routes to Services by name.
        ("", "Service") => verb.is_read(),
        // One at a time, those its pods use (checked against the pods bound to it).
        ("", "ConfigMap" | "Secret") => verb == Verb::Get,
        _ => false,
    }
}

/// The object-level half of a node agent's rights: its own `Node` and
/// lease (named after it, the lease in `kube-node-lease`), and the pods
/// bound to it — `bound_to`, the stored pod's `spec.nodeName`, for a write
/// to a pod, which must be to its status or its deletion.
pub fn node_may_touch(
    node: &str,
    verb: Verb,
    resource: &ResourceType,
    namespace: Option<&str>,
    name: Option<&str>,
    subresource: Option<&str>,
    bound_to: Option<&str>,
) -> Result<(), ApiError> {
    let refuse = |why: &str| {
        Err(ApiError::Forbidden(format!(
            "{plural} {name:?} is forbidden: node {node:?} cannot {verb} it: {why}",
            plural = resource.plural,
            name = name.unwrap_or_default(),
            verb = verb.as_str(),
        )))
    };
    match (resource.group, resource.kind) {
        ("", "Node") if !verb.is_read() && name.is_some_and(|n| n != node) => refuse("a node agent changes only its own Node"),
        // Leases carry their agent's log secret: a node reads and writes its own only (no lists).
        // A create names the lease in its body, checked again once it is read.
        ("coordination.k8s.io", "Lease")
            if namespace != Some(kapsel_api::kinds::lease::NODE_LEASE_NAMESPACE)
                || (name != Some(node) && !(verb == Verb::Create && name.is_none())) =>
        {
            refuse("a node agent holds only its own lease, in kube-node-lease")
        }
        ("", "Pod") if !verb.is_read() => {
            if verb != Verb::Delete && subresource != Some("status") {
                refuse("a node agent writes only the status of pods")
            } else if bound_to != Some(node) {
                refuse("the pod is not bound to this node")
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// The content half of a node agent's rights, for a create, update or
/// patch of `object` (the object as it would be stored): a lease's
/// `kapsel.io/agent-endpoint` must be `https://IP:PORT` — the supervisor
/// relays log requests there, so it may not name another scheme, a host
/// name or a path (the IP is checked against the node's registered address
/// when logs are relayed, since an agent takes its lease before it
/// registers its node; see `logs.rs`).
pub fn node_may_write(node: &str, resource: &ResourceType, object: &Value) -> Result<(), ApiError> {
    if (resource.group, resource.kind) != ("coordination.k8s.io", "Lease") {
        return Ok(());
    }
    let endpoint = object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(kapsel_api::kinds::lease::AGENT_ENDPOINT_ANNOTATION))
        .filter(|e| !e.is_null());
    let Some(endpoint) = endpoint else { return Ok(()) };
    let refused = |why: String| {
        ApiError::Forbidden(format!(
            "leases {name:?} is forbidden: node {node:?} cannot publish that log endpoint: {why}",
            name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default(),
        ))
    };
    let text = endpoint.as_str().ok_or_else(|| refused("annotations hold strings".into()))?;
    crate::agents::parse_agent_endpoint(text).map(|_| ()).map_err(refused)
}

/// `token` (a Token object) without its roles in `namespace`; `None` when it holds none there.
pub fn without_roles_in(token: &Value, namespace: &str) -> Option<Value> {
    let roles = token.pointer("/spec/roles")?.as_array()?;
    let names_it = |role: &Value| role.get("namespace").and_then(Value::as_str) == Some(namespace);
    if !roles.iter().any(names_it) {
        return None;
    }
    let kept: Vec<Value> = roles.iter().filter(|role| !names_it(role)).cloned().collect();
    let mut token = token.clone();
    token["spec"]["roles"] = Value::Array(kept);
    Some(token)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::View => "view",
        Role::Edit => "edit",
        Role::Owner => "owner",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::kinds::{namespace::NAMESPACE, node::NODE, pod::POD, resource_quota::RESOURCE_QUOTA};

    fn tenant(roles: &[(&str, Role)]) -> Identity {
        Identity {
            user: "alice".into(),
            admin: false,
            roles: roles.iter().map(|(n, r)| (n.to_string(), *r)).collect(),
            expires_at: None,
            node: None,
        }
    }

    #[test]
    fn namespace_roles() {
        let alice = tenant(&[("dev", Role::Edit), ("qa", Role::View)]);
        assert!(authorize(&alice, Verb::Create, &POD, Some("dev")).is_ok());
        assert!(authorize(&alice, Verb::Get, &POD, Some("qa")).is_ok());
        assert!(authorize(&alice, Verb::Delete, &POD, Some("qa")).is_err());
        let denied = authorize(&alice, Verb::List, &POD, Some("prod")).unwrap_err();
        let message = denied.to_string();
        for part in ["\"alice\"", "list", "\"pods\"", "\"prod\""] {
            assert!(message.contains(part), "{message} lacks {part}");
        }
        assert!(authorize(&alice, Verb::List, &POD, None).is_ok(), "all-namespace lists are filtered, not refused");
        assert!(authorize(&alice, Verb::Create, &RESOURCE_QUOTA, Some("dev")).is_err());
        assert!(authorize(&alice, Verb::Get, &RESOURCE_QUOTA, Some("dev")).is_ok());
        assert!(authorize(&alice, Verb::Get, &NODE, None).is_ok());
        assert!(authorize(&alice, Verb::Create, &NODE, None).is_err());
        assert!(authorize(&alice, Verb::Get, &NAMESPACE, Some("dev")).is_ok());
        assert!(authorize(&alice, Verb::Get, &NAMESPACE, Some("prod")).is_err());
        assert!(authorize(&alice, Verb::Create, &NAMESPACE, Some("new")).is_err());
        assert!(authorize(&alice, Verb::List, &TOKEN, None).is_err());
    }

    #[test]
    fn node_agents_touch_only_their_node_lease_and_pods() {
        use kapsel_api::kinds::lease::LEASE;
        let auth = Authenticator::default();
        let secret = new_secret();
        let token = serde_json::json!({"spec": {"user": "ignored", "admin": true, "node": "n1", "secretHash": hash_secret(&secret)}});
        auth.apply(ChangeType::Added, &token);
        let agent = auth.authenticate(Some(&format!("Bearer {secret}"))).unwrap();
        assert_eq!((agent.user.as_str(), agent.admin, agent.node.as_deref()), ("system:node:n1", false, Some("n1")));

        assert!(authorize(&agent, Verb::List, &POD, None).is_ok());
        assert!(authorize(&agent, Verb::Create, &POD, Some("dev")).is_err());
        assert!(authorize(&agent, Verb::Delete, &NODE, None).is_err());
        assert!(authorize(&agent, Verb::Get, &TOKEN, None).is_err());
        assert!(authorize(&agent, Verb::Create, &RESOURCE_QUOTA, Some("dev")).is_err());

        let touch = |verb, resource, namespace, name, subresource, bound_to| {
            node_may_touch("n1", verb, resource, namespace, name, subresource, bound_to).is_ok()
        };
        assert!(touch(Verb::Update, &NODE, None, Some("n1"), Some("status"), None));
        assert!(!touch(Verb::Update, &NODE, None, Some("n2"), None, None));
        assert!(touch(Verb::Update, &LEASE, Some("kube-node-lease"), Some("n1"), None, None));
        assert!(!touch(Verb::Get, &LEASE, Some("kube-node-lease"), Some("n2"), None, None));
        assert!(!touch(Verb::Update, &LEASE, Some("dev"), Some("n1"), None, None));
        assert!(!touch(Verb::List, &LEASE, Some("kube-node-lease"), None, None, None), "other leases hold other agents' secrets");
        assert!(touch(Verb::Create, &LEASE, Some("kube-node-lease"), None, None, None), "a create names its lease in the body");
        assert!(touch(Verb::Patch, &POD, Some("dev"), Some("p"), Some("status"), Some("n1")));
        assert!(touch(Verb::Delete, &POD, Some("dev"), Some("p"), None, Some("n1")));
        assert!(!touch(Verb::Patch, &POD, Some("dev"), Some("p"), Some("status"), Some("n2")));
        assert!(!touch(Verb::Patch, &POD, Some("dev"), Some("p"), None, Some("n1")), "not the spec");
        assert!(touch(Verb::Get, &POD, Some("dev"), Some("p"), None, Some("n2")));
    }

    #[test]
    fn node_agents_publish_only_https_endpoints_at_an_ip() {
        use kapsel_api::kinds::lease::LEASE;
        let lease =
            |endpoint: Value| serde_json::json!({"metadata": {"name": "n1", "annotations": {"kapsel.io/agent-endpoint": endpoint}}});
        assert!(node_may_write("n1", &LEASE, &lease(serde_json::json!("https://10.0.0.7:10250"))).is_ok());
        assert!(node_may_write("n1", &LEASE, &serde_json::json!({"metadata": {"name": "n1"}})).is_ok(), "no endpoint yet");
        for bad in [serde_json::json!("http://10.0.0.7:10250"), serde_json::json!("https://evil.example:443"), serde_json::json!(7)] {
            let refused = node_may_write("n1", &LEASE, &lease(bad.clone())).unwrap_err();
            assert!(matches!(refused, ApiError::Forbidden(_)), "{bad}");
            assert!(refused.to_string().contains("cannot publish that log endpoint"), "{refused}");
        }
        assert!(node_may_write("n1", &NODE, &lease(serde_json::json!("http://x"))).is_ok(), "only leases carry the endpoint");
    }

    #[test]
    fn a_namespaces_roles_are_taken_out_of_a_token() {
        let token = serde_json::json!({"spec": {"user": "alice", "roles": [{"namespace": "a", "role": "edit"}, {"namespace": "b", "role": "view"}]}});
        let stripped = without_roles_in(&token, "a").unwrap();
        assert_eq!(stripped["spec"]["roles"], serde_json::json!([{"namespace": "b", "role": "view"}]));
        assert_eq!(without_roles_in(&stripped, "a"), None);
        assert_eq!(without_roles_in(&serde_json::json!({"spec": {"user": "it", "admin": true}}), "a"), None);
    }

    #[test]
    fn tokens_are_hashed_and_checked() {
        let secret = new_secret();
        assert!(secret.starts_with("kpl_") && secret.len() > 40);
        let hash = hash_secret(&secret);
        assert!(hash.starts_with("sha256:") && !hash.contains(&secret));
        let auth = Authenticator::default();
        let spec = serde_json::json!({"spec": {"user": "bob", "roles": [{"namespace": "dev", "role": "view"}], "secretHash": hash}});
        auth.apply(ChangeType::Added, &spec);
        let bob = auth.authenticate(Some(&format!("Bearer {secret}"))).unwrap();
        assert_eq!(bob.role_in("dev"), Some(Role::View));
        assert!(matches!(auth.authenticate(None), Err(ApiError::Unauthorized(_))));
        assert!(matches!(auth.authenticate(Some("Bearer nope")), Err(ApiError::Unauthorized(_))));
        auth.apply(ChangeType::Deleted, &spec);
        assert!(auth.authenticate(Some(&format!("Bearer {secret}"))).is_err());
    }
}
