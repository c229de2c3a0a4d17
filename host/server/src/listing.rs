//! What a list, or a watch's initial state, reads: only what the caller
//! may see, in pages.
//!
//! A tenant's read across namespaces reads the namespaces it holds a role
//! in, one after the other, never the whole cluster's objects of the kind
//! to filter them afterwards: a read costs what the caller may see. With
//! `limit`, a list answers at most that many items and an opaque
//! `metadata.continue` token when there are more, as Kubernetes pages
//! (kubectl asks for 500 at a time). Each page reads the store as it is
//! then; every page reports the first page's `resourceVersion`, so a client
//! that watches from it after the last page sees every change since (an
//! object changed meanwhile may come both in a page and as an event, which
//! list-then-watch clients handle).
//!
//! What a tenant may see and read of an object of a kind is its strategy's
//! to say ([`visible`], [`redact`]): IT-only Events are hidden, and a
//! `ClusterAdmissionPolicy`'s audit lists only the violations in the
//! reader's namespaces.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kapsel_api::selector::{FieldSelector, LabelSelector};
use kapsel_api::{ResourceType, object};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::strategy;

/// What a list or a watch selects.
#[derive(Debug, Default)]
pub struct Selection {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selection {
    /// Parses a `labelSelector` and a `fieldSelector` for `resource`.
    pub fn parse(resource: &ResourceType, labels: Option<&str>, fields: Option<&str>) -> Result<Selection, ApiError> {
        let labels = LabelSelector::parse(labels.unwrap_or_default()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields = FieldSelector::parse(fields.unwrap_or_default(), resource.selectable_fields)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Selection { labels, fields })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object::labels(object)) && self.fields.matches(object)
    }

    /// A namespace the field selector pins (`metadata.namespace=dev`), to narrow the store read.
    pub fn namespace(&self) -> Option<&str> {
        self.fields.required_value("metadata.namespace")
    }
}

/// Whether the caller may see `object` in a read across namespaces: an
/// object of a namespace it holds a role in, a cluster-scoped one, unless
/// the kind's strategy hides it.
pub fn visible(identity: &Identity, resource: &ResourceType, object: &Value) -> bool {
    if identity.admin {
        return true;
    }
    if resource.namespaced() && !object::namespace(object).is_some_and(|ns| identity.reads(resource, ns)) {
        return false;
    }
    !strategy::of(resource).hidden_from(identity, object)
}

/// A page of a listing.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
    /// The revision the listing is at least as new as.
    pub revision: i64,
    /// The token for the next page, when there is one.
    pub continue_token: Option<String>,
}

/// Where the next page starts: after this key, reporting this revision.
#[derive(Debug, Serialize, Deserialize)]
struct Continue {
    /// The first page's revision.
    rv: i64,
    /// The namespace ("" for cluster-scoped kinds) and name of the last item served.
    ns: String,
    name: String,
}

impl Continue {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(token: &str) -> Result<Continue, ApiError> {
        let invalid = || ApiError::BadRequest(format!("invalid continue token {token:?}: pass the metadata.continue of the previous page"));
        let bytes = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| invalid())?;
        serde_json::from_slice(&bytes).map_err(|_| invalid())
    }
}

/// The part of the store one read covers: one namespace, or every one.
type Scope = Option<String>;

/// The scopes `identity` may read `resource` in, for a read in `namespace`
/// (or across namespaces when `None`), in key order.
fn scopes(identity: &Identity, resource: &ResourceType, namespace: Option<&str>) -> Vec<Scope> {
    match namespace {
        // A namespace the caller cannot see (named by a field selector) is not read at all.
        Some(namespace) if resource.namespaced() && !identity.reads(resource, namespace) => Vec::new(),
        Some(namespace) => vec![Some(namespace.to_string())],
        // A tenant's read across namespaces: its own namespaces only, where its role reads the kind.
        None if resource.namespaced() && !identity.admin && identity.node.is_none() => {
            identity.roles.keys().filter(|namespace| identity.reads(resource, namespace)).map(|namespace| Some(namespace.clone())).collect()
        }
        None => vec![None],
    }
}

/// Reads one page (or everything, without `limit`) of `resource` in
/// `namespace` (or across namespaces) that `identity` may see and
/// `selectors` select, starting where `continue_token` says.
pub async fn read(
    app: &App,
    identity: &Identity,
    resource: &'static ResourceType,
    namespace: Option<&str>,
    selectors: &Selection,
    limit: Option<usize>,
    continue_token: Option<&str>,
) -> Result<Page, ApiError> {
    let start = continue_token.map(Continue::decode).transpose()?;
    let mut revision = start.as_ref().map(|s| s.rv);
    let mut after: Option<(String, String)> = start.map(|s| (s.ns, s.name));
    let wanted = limit.filter(|l| *l > 0);
    // One item past the page tells whether another page follows.
    let chunk = wanted.map_or(usize::MAX, |l| l.saturating_add(1));
    let mut items: Vec<Value> = Vec::new();
    let store_key = resource.store_key();
    'scopes: for scope in scopes(identity, resource, namespace) {
        if let (Some(scope), Some((after_namespace, _))) = (&scope, &after)
            && scope < after_namespace
        {
            continue;
        }
        loop {
            let from = after.as_ref().map(|(ns, name)| (ns.as_str(), name.as_str()));
            let listing =
                app.store.list_page(&store_key, scope.as_deref(), from, chunk).await.map_err(|e| ApiError::from_store(e, resource, ""))?;
            revision.get_or_insert(listing.revision);
            let exhausted = listing.objects.len() < chunk;
            // The next read of this scope starts after the last object of this one.
            if !exhausted {
                after = listing.objects.last().map(key_of);
            }
            for mut item in listing.objects {
                if selectors.matches(&item) && visible(identity, resource, &item) {
                    redact(identity, resource, &mut item);
                    items.push(item);
                    if wanted.is_some_and(|l| items.len() > l) {
                        break 'scopes;
                    }
                }
            }
            if exhausted {
                continue 'scopes;
            }
        }
    }
    let revision = match revision {
        Some(revision) => revision,
        None => app.store.revisions().await.map_err(|e| ApiError::from_store(e, resource, ""))?.0,
    };
    let continue_token = match wanted {
        Some(limit) if items.len() > limit => {
            items.truncate(limit);
            items.last().map(key_of).map(|(ns, name)| Continue { rv: revision, ns, name }.encode())
        }
        _ => None,
    };
    Ok(Page { items, revision, continue_token })
}

/// The (namespace, name) an object is stored under ("" for a cluster-scoped one's namespace).
fn key_of(object: &Value) -> (String, String) {
    (object::namespace(object).unwrap_or_default().to_string(), object::name(object).unwrap_or_default().to_string())
}

/// Removes from `object` what `identity` may not read of it (the kind's
/// strategy says what).
pub fn redact(identity: &Identity, resource: &ResourceType, object: &mut Value) {
    if !identity.admin {
        strategy::of(resource).redact(identity, object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_bad_ones_are_refused() {
        let token = Continue { rv: 42, ns: "dev".into(), name: "web-1".into() }.encode();
        let decoded = Continue::decode(&token).unwrap();
        assert_eq!((decoded.rv, decoded.ns.as_str(), decoded.name.as_str()), (42, "dev", "web-1"));
        for bad in ["", "!!!", "bm90LWpzb24"] {
            let error = Continue::decode(bad).unwrap_err();
            assert!(matches!(error, ApiError::BadRequest(_)), "{bad}: {error:?}");
        }
    }
}
