//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and
//! Kubernetes strategic merge patch, which kubectl and client libraries
//! send for core kinds. The strategic variant is a merge patch that merges
//! lists of objects by their key (containers by `name`, …) and honours the
//! `$patch`, `$retainKeys`, `$setElementOrder/…` and
//! `$deleteFromPrimitiveList/…` directives.
//!
//! A patch costs what its size allows: a JSON patch's `copy` can double a
//! document per operation, so operations are applied one at a time while
//! the result's size and depth are accounted ([`Budget`]), and the walk the
//! accounting needs is itself bounded; every result must fit the budget a
//! body of the largest size could decode to (413 naming it). Strategic
//! merge finds list items through an index, not a scan per item.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::budget::NODE_COST;
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Merge,
    StrategicMerge,
    Json,
}

impl Kind {
    pub fn from_media_type(media: &str) -> Result<Kind, ApiError> {
        match media {
            "application/merge-patch+json" => Ok(Kind::Merge),
            "application/strategic-merge-patch+json" => Ok(Kind::StrategicMerge),
            "application/json-patch+json" => Ok(Kind::Json),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format ({other:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
            ))),
        }
    }
}

/// The deepest nesting a patched object may have (serde_json's own decoding limit).
pub const MAX_DEPTH: usize = 128;

/// [`apply`] on a blocking thread: a patch's work is bounded, but it may
/// still be hundreds of milliseconds that no async worker should spend.
pub async fn apply_off_thread(kind: Kind, current: Value, patch: std::sync::Arc<Value>) -> Result<Value, ApiError> {
    tokio::task::spawn_blocking(move || apply(kind, &current, &patch)).await.map_err(|e| ApiError::internal("applying the patch", e))?
}

/// Applies `patch` of `kind` to `current`.
pub fn apply(kind: Kind, current: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut budget = Budget::new();
    let mut document = current.clone();
    match kind {
        Kind::Merge => json_patch::merge(&mut document, patch),
        Kind::StrategicMerge => {
            if !patch.is_object() {
                return Err(ApiError::BadRequest("a strategic merge patch must be an object".into()));
            }
            strategic_merge(&mut document, patch);
        }
        Kind::Json => {
            let operations: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
            let mut size = budget.measure(&document)?;
            for (i, operation) in operations.iter().enumerate() {
                size = size.grown_by(&mut budget, &document, operation)?;
                json_patch::patch_unsafe(&mut document, std::slice::from_ref(operation))
                    .map_err(|e| ApiError::PatchNotApplicable(format!("the JSON patch could not be applied: operation {i}: {e}")))?;
            }
        }
    }
    // Merge patches grow a document by at most the patch: one measure of the result.
    Budget::new().measure(&document)?;
    Ok(document)
}

/// The size (as [`crate::budget::NODE_COST`] counts it: about the bytes of
/// its JSON)
/// and depth of a document, as an upper bound kept while a JSON patch
/// applies.
#[derive(Debug, Clone, Copy)]
struct Size {
    cost: usize,
    depth: usize,
}

impl Size {
    /// The bound after `operation`: what it inserts is added whole (removals
    /// are not subtracted, so the bound only grows).
    fn grown_by(self, budget: &mut Budget, document: &Value, operation: &json_patch::PatchOperation) -> Result<Size, ApiError> {
        use json_patch::PatchOperation as Op;
        let (path, inserted) = match operation {
            Op::Add(op) => (&op.path, Some(&op.value)),
            Op::Replace(op) => (&op.path, Some(&op.value)),
            Op::Copy(op) => (&op.path, document.pointer(op.from.as_str())),
            Op::Move(op) => (&op.path, document.pointer(op.from.as_str())),
            Op::Remove(_) | Op::Test(_) => return Ok(self),
        };
        let Some(inserted) = inserted else { return Ok(self) };
        let added = budget.measure(inserted)?;
        let moved = matches!(operation, Op::Move(_));
        let size = Size {
            cost: if moved { self.cost } else { self.cost.saturating_add(added.cost) },
            depth: self.depth.max(path.count().saturating_add(added.depth)),
        };
        budget.check(size)?;
        Ok(size)
    }
}

/// What a patch may cost: the size and depth of its result, and the nodes
/// its accounting may walk in all (so that many cheap operations on a big
/// subtree cannot make the accounting itself the cost).
#[derive(Debug)]
struct Budget {
    max_cost: usize,
    walk_left: usize,
}

impl Budget {
    fn new() -> Budget {
        let max_cost = crate::budget::MAX_OBJECT_COST;
        // Walking four documents of the largest size, node by node, in all.
        Budget { max_cost, walk_left: (max_cost / NODE_COST).saturating_mul(4) }
    }

    fn too_large(&self) -> ApiError {
        ApiError::ExpandsTooLarge(format!(
            "the patched object would exceed {} bytes (as JSON) or {MAX_DEPTH} levels of nesting, the most an object a request makes may have",
            self.max_cost
        ))
    }

    fn check(&self, size: Size) -> Result<(), ApiError> {
        if size.cost > self.max_cost || size.depth > MAX_DEPTH { Err(self.too_large()) } else { Ok(()) }
    }

    /// The size of `value`, walking it without recursion; refused as soon
    /// as it, or the walking done so far, exceeds the budget.
    fn measure(&mut self, value: &Value) -> Result<Size, ApiError> {
        let mut size = Size { cost: 0, depth: 0 };
        let mut pending = vec![(value, 1usize)];
        while let Some((node, depth)) = pending.pop() {
            self.walk_left = self
                .walk_left
                .checked_sub(1)
                .ok_or_else(|| ApiError::ExpandsTooLarge("the JSON patch's operations touch more of the object than a patch may".into()))?;
            size.depth = size.depth.max(depth);
            size.cost = size.cost.saturating_add(NODE_COST);
            match node {
                Value::String(text) => size.cost = size.cost.saturating_add(text.len()),
                Value::Array(items) => pending.extend(items.iter().map(|item| (item, depth + 1))),
                Value::Object(fields) => {
                    for (key, item) in fields {
                        size.cost = size.cost.saturating_add(key.len());
                        pending.push((item, depth + 1));
                    }
                }
                _ => {}
            }
            self.check(size)?;
        }
        Ok(size)
    }
}

/// The key lists of objects are merged by, by field name (from the core v1 types).
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => "name",
        "hostAliases" => "ip",
        "readinessGates" => "conditionType",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" => "containerPort",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "addresses" => "type",
        "taints" => "key",
        _ => return None,
    })
}

fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        replacement.remove("$patch");
        *target = Value::Object(replacement);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let object = target.as_object_mut().expect("object");
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        object.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key == "$retainKeys" || key == "$patch" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (object.get_mut(field), value.as_array()) {
                let remove: HashSet<String> = remove.iter().map(identity).collect();
                list.retain(|item| !remove.contains(&identity(item)));
            }
            continue;
        }
        match value {
            Value::Null => {
                object.remove(key);
            }
            Value::Array(items) => match (merge_key(key), object.get_mut(key)) {
                (Some(merge_key), Some(Value::Array(existing))) if items.iter().all(Value::is_object) => {
                    merge_list(existing, items, merge_key);
                    if let Some(order) = patch.get(&format!("$setElementOrder/{key}")).and_then(Value::as_array) {
                        reorder(existing, order, merge_key);
                    }
                }
                _ => {
                    let cleaned: Vec<Value> = items.iter().filter(|i| i.get("$patch").is_none()).cloned().collect();
                    object.insert(key.clone(), Value::Array(cleaned));
                }
            },
            Value::Object(_) => strategic_merge(object.entry(key.clone()).or_insert(Value::Null), value),
            other => {
                object.insert(key.clone(), other.clone());
            }
        }
    }
}

/// A map key for a JSON value (its compact text): list items are found
/// by key through a hash map, so merging lists is linear, not quadratic.
fn identity(value: &Value) -> String {
    value.to_string()
}

fn merge_list(existing: &mut Vec<Value>, patch_items: &[Value], key: &str) {
    // The first item of each key, as the patch addresses it; deleted items become holes removed at the end.
    let mut position: HashMap<String, usize> = HashMap::new();
    for (i, item) in existing.iter().enumerate() {
        if let Some(id) = item.get(key) {
            position.entry(identity(id)).or_insert(i);
        }
    }
    let mut deleted = vec![false; existing.len()];
    for item in patch_items {
        let id = item.get(key).map(identity);
        let found = id.as_ref().and_then(|id| position.get(id).copied());
        match (item.get("$patch").and_then(Value::as_str), found) {
            (Some("delete"), Some(i)) => {
                deleted[i] = true;
                if let Some(id) = &id {
                    // A later item of the same key takes its place, as removing the first would reveal it.
                    match (i + 1..existing.len()).find(|&j| !deleted[j] && existing[j].get(key).map(identity).as_ref() == Some(id)) {
                        Some(next) => position.insert(id.clone(), next),
                        None => position.remove(id),
                    };
                }
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => strategic_merge(&mut existing[i], item),
            (_, None) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item);
                if let Some(id) = id {
                    position.insert(id, existing.len());
                }
                existing.push(fresh);
                deleted.push(false);
            }
        }
    }
    if deleted.contains(&true) {
        let mut flags = deleted.into_iter();
        existing.retain(|_| !flags.next().unwrap_or(false));
    }
}

fn reorder(existing: &mut [Value], order: &[Value], key: &str) {
    let mut rank: HashMap<String, usize> = HashMap::new();
    for (i, item) in order.iter().enumerate() {
        if let Some(id) = item.get(key) {
            rank.entry(identity(id)).or_insert(i);
        }
    }
    existing.sort_by_cached_key(|v| v.get(key).and_then(|id| rank.get(&identity(id)).copied()).unwrap_or(usize::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [
            {"name": "web", "image": "web:1", "args": ["x"]},
            {"name": "log", "image": "log:1"}
        ]}});
        let patch = json!({"metadata": {"labels": {"b": null, "c": "3"}}, "spec": {
            "$setElementOrder/containers": [{"name": "log"}, {"name": "web"}],
            "containers": [{"name": "web", "image": "web:2"}]
        }});
        let out = apply(Kind::StrategicMerge, &pod, &patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        assert_eq!(out["spec"]["containers"], json!([{"name": "log", "image": "log:1"}, {"name": "web", "image": "web:2", "args": ["x"]}]));
        let delete = json!({"spec": {"containers": [{"name": "log", "$patch": "delete"}]}});
        let out = apply(Kind::StrategicMerge, &out, &delete).unwrap();
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn merge_and_json_patches() {
        let doc = json!({"a": {"b": 1, "c": [1, 2]}});
        assert_eq!(apply(Kind::Merge, &doc, &json!({"a": {"c": [3]}})).unwrap(), json!({"a": {"b": 1, "c": [3]}}));
        let ops = json!([{"op": "replace", "path": "/a/b", "value": 5}]);
        assert_eq!(apply(Kind::Json, &doc, &ops).unwrap()["a"]["b"], 5);
        assert!(apply(Kind::Json, &doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(Kind::from_media_type("application/apply-patch+yaml").is_err());
    }

    #[test]
    fn doubling_copies_are_refused_before_they_cost() {
        let pod = json!({"metadata": {"annotations": {"a": "x".repeat(4096)}}});
        let mut ops = vec![json!({"op": "add", "path": "/metadata/annotations/b", "value": {"k": "x".repeat(4096)}})];
        for i in 0..40 {
            ops.push(json!({"op": "copy", "from": "/metadata/annotations", "path": format!("/metadata/annotations/c{i}")}));
        }
        let started = std::time::Instant::now();
        let error = apply(Kind::Json, &pod, &Value::Array(ops)).unwrap_err();
        assert!(matches!(error, ApiError::ExpandsTooLarge(_)), "{error:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[test]
    fn nesting_by_copies_is_bounded() {
        let mut ops = Vec::new();
        for _ in 0..200 {
            ops.push(json!({"op": "copy", "from": "/a", "path": "/a/a"}));
        }
        let error = apply(Kind::Json, &json!({"a": {"b": 1}}), &Value::Array(ops)).unwrap_err();
        assert!(error.to_string().contains("levels of nesting"), "{error}");
    }

    #[test]
    fn many_moves_of_a_big_subtree_are_bounded_in_work() {
        let big: Vec<Value> = (0..50_000).map(|i| json!(i)).collect();
        let mut ops = Vec::new();
        for _ in 0..2_000 {
            ops.push(json!({"op": "move", "from": "/a", "path": "/b"}));
            ops.push(json!({"op": "move", "from": "/b", "path": "/a"}));
        }
        let started = std::time::Instant::now();
        assert!(apply(Kind::Json, &json!({"a": big}), &Value::Array(ops)).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn strategic_merge_of_long_lists_is_linear_and_keeps_semantics() {
        let existing: Vec<Value> = (0..20_000).map(|i| json!({"name": format!("c{i}"), "image": "a"})).collect();
        let patch_items: Vec<Value> = (0..20_000).rev().map(|i| json!({"name": format!("c{i}"), "image": "b"})).collect();
        let started = std::time::Instant::now();
        let out =
            apply(Kind::StrategicMerge, &json!({"spec": {"containers": existing}}), &json!({"spec": {"containers": patch_items}})).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
        let containers = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 20_000);
        assert!(containers.iter().all(|c| c["image"] == "b"));
        // Duplicated keys: a delete removes the first, the next merge reaches the second.
        let doubled = json!({"spec": {"containers": [{"name": "a", "v": 1}, {"name": "a", "v": 2}, {"name": "b"}]}});
        let patch = json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}, {"name": "a", "v": 3}, {"name": "c"}]}});
        let out = apply(Kind::StrategicMerge, &doubled, &patch).unwrap();
        assert_eq!(out["spec"]["containers"], json!([{"name": "a", "v": 3}, {"name": "b"}, {"name": "c"}]));
        let primitive = json!({"finalizers": ["a", "b", "c"]});
        let out = apply(Kind::StrategicMerge, &primitive, &json!({"$deleteFromPrimitiveList/finalizers": ["b"]})).unwrap();
        assert_eq!(out["finalizers"], json!(["a", "c"]));
    }
}
