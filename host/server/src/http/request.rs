//! Parsing a resource request: the URL path (`/api/v1/namespaces/{ns}/pods/{name}/status`)
//! into the kind, namespace, name and subresource; the query parameters
//! Kubernetes clients send; and the verb.

use std::collections::HashMap;

use axum::http::Method;
use kapsel_api::registry::{self, ResourceType};

use crate::auth::Verb;
use crate::error::ApiError;
use crate::listing::Selection;
use crate::objects::Target;

/// Subresources served for every kind that has a `status`.
pub const SUBRESOURCES: &[&str] = &["status"];

/// Parses `/api/v1/...` or `/apis/{group}/{version}/...` below the prefix.
pub fn parse_path(path: &str) -> Result<Target, ApiError> {
    let not_found = || ApiError::NoRoute(format!("the server could not find the requested resource (path {path:?})"));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found()),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] => (Some(*ns), std::iter::once(*plural).chain(tail.iter().copied()).collect::<Vec<_>>()),
        other => (None, other.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Err(not_found()),
    };
    let resource = registry::find(group, version, plural).ok_or_else(not_found)?;
    // `status` exists only for kinds whose status is a subresource.
    if subresource.is_some_and(|sub| !SUBRESOURCES.contains(&sub) || !resource.status_subresource) {
        return Err(not_found());
    }
    if namespace.is_some() && !resource.namespaced() {
        return Err(not_found());
    }
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(Target {
        resource,
        namespace: namespace.and_then(non_empty),
        name: name.and_then(non_empty),
        subresource: subresource.map(str::to_string),
    })
}

/// The query parameters of a resource request.
#[derive(Debug, Clone, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(query: Option<&str>) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = match query {
            Some(q) => serde_urlencoded::from_str(q).map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))?,
            None => Vec::new(),
        };
        Ok(Params(pairs.into_iter().collect()))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }

    /// `dryRun=All`: run everything but store nothing.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::BadRequest(format!("unsupported dryRun value {other:?}: supported values: \"All\""))),
        }
    }

    /// The label and field selectors of a list or watch of `resource` (`labelSelector`, `fieldSelector`).
    pub fn selection(&self, resource: &ResourceType) -> Result<Selection, ApiError> {
        Selection::parse(resource, self.get("labelSelector"), self.get("fieldSelector"))
    }

    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| v.parse().map_err(|_| ApiError::BadRequest(format!("invalid {name} {v:?}: must be a non-negative integer"))))
            .transpose()
    }
}

/// The verb of a request.
pub fn verb(method: &Method, target: &Target, params: &Params) -> Result<Verb, ApiError> {
    let named = target.name.is_some();
    Ok(match (method, named) {
        (&Method::GET, true) if params.flag("watch") => Verb::Watch,
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) if params.flag("watch") => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, false) => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        _ => {
            return Err(ApiError::MethodNotAllowed(format!(
                "the server does not allow this method on the requested resource ({method} {})",
                if named { "on an object" } else { "on a collection" }
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resource_paths() {
        let t = parse_path("/api/v1/namespaces/dev/pods/web/status").unwrap();
        assert_eq!(
            (t.resource.kind, t.namespace.as_deref(), t.name.as_deref(), t.subresource.as_deref()),
            ("Pod", Some("dev"), Some("web"), Some("status"))
        );
        let t = parse_path("/api/v1/namespaces/dev").unwrap();
        assert_eq!((t.resource.kind, t.name.as_deref()), ("Namespace", Some("dev")));
        let t = parse_path("/api/v1/pods").unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        let t = parse_path("/apis/kapsel.io/v1alpha1/tokens/t1").unwrap();
        assert_eq!(t.resource.kind, "Token");
        assert!(parse_path("/api/v1/widgets").is_err());
        assert!(parse_path("/api/v1/namespaces/dev/nodes").is_err());
        assert!(parse_path("/api/v1/namespaces/dev/pods/x/exec").is_err());
    }
}
