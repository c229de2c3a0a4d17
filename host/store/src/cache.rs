//! The object cache: every live object in memory, updated by the writer
//! after each commit and before the writes are acknowledged, so reads
//! (`get`, `list`) never touch the database and still see every
//! acknowledged write; the writer checks a write's expected revision against
//! it too. Used when this process is the only writer (SQLite);
//! with PostgreSQL, other supervisors may write, so reads go to the database.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::{Change, ChangeType, Key, Listing};

#[derive(Debug, Default)]
struct State {
    revision: i64,
    objects: BTreeMap<Key, Arc<Value>>,
}

#[derive(Debug, Default)]
pub(crate) struct ObjectCache {
    state: RwLock<State>,
}

impl ObjectCache {
    pub(crate) fn new(revision: i64, objects: Vec<(Key, Value)>) -> Self {
        let objects = objects.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        ObjectCache { state: RwLock::new(State { revision, objects }) }
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Value> {
        self.state.read().expect("cache lock").objects.get(key).map(|v| (**v).clone())
    }

    /// The object under `key`, shared with the cache.
    pub(crate) fn get_shared(&self, key: &Key) -> Option<Arc<Value>> {
        self.state.read().expect("cache lock").objects.get(key).cloned()
    }

    /// Objects of `resource` (in `namespace`, or all), in (namespace, name) order.
    pub(crate) fn list(&self, resource: &str, namespace: Option<&str>) -> Listing {
        let state = self.state.read().expect("cache lock");
        let start = Key::new(resource, namespace.unwrap_or_default(), "");
        let objects = state
            .objects
            .range(start..)
            .take_while(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| (**v).clone())
            .collect();
        Listing { revision: state.revision, objects }
    }

    /// At most `limit` objects of `resource` (in `namespace`, or all) after `after`, in (namespace, name) order.
    pub(crate) fn list_page(&self, resource: &str, namespace: Option<&str>, after: Option<(&str, &str)>, limit: usize) -> Listing {
        use std::ops::Bound;
        let state = self.state.read().expect("cache lock");
        let start = match after {
            Some((after_namespace, after_name)) => Bound::Excluded(Key::new(resource, after_namespace, after_name)),
            None => Bound::Included(Key::new(resource, namespace.unwrap_or_default(), "")),
        };
        let objects = state
            .objects
            .range((start, Bound::Unbounded))
            .skip_while(|(k, _)| namespace.is_some_and(|ns| k.resource == resource && k.namespace.as_str() < ns))
            .take_while(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
            .take(limit)
            .map(|(_, v)| (**v).clone())
            .collect();
        Listing { revision: state.revision, objects }
    }

    /// Applies committed changes (in revision order).
    pub(crate) fn apply(&self, changes: &[Change]) {
        let mut state = self.state.write().expect("cache lock");
        for change in changes {
            match change.change_type {
                ChangeType::Added | ChangeType::Modified => {
                    state.objects.insert(change.key.clone(), change.object.clone());
                }
                ChangeType::Deleted => {
                    state.objects.remove(&change.key);
                }
            }
            state.revision = state.revision.max(change.revision);
        }
    }
}
