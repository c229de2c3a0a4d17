//! Plug-ins in the supervisor: the upload and rollback endpoints of the
//! `Plugin` kind, and the registry of active plug-ins.
//!
//! An upload (`POST /apis/kapsel.io/v1alpha1/plugins/{name}/component`,
//! the component's bytes as the body) is compiled and checked against its
//! world — exports, granted imports, and the `Plugin`'s configuration —
//! before anything is stored; a component that fails is answered 422 with
//! the reason and nothing changes. One that passes is stored by digest
//! (deduplicated), the `Plugin` object is pointed at it (the digest before
//! it kept for `rollback`), and the new instance replaces the old one in
//! the registry in one step: calls already holding the old one finish on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kapsel_api::kinds::plugin::{PLUGIN, PluginSpec, WORLDS};
use kapsel_api::{FieldError, object};
use kapsel_plugins::scheduler::SchedulerExtension;
use kapsel_plugins::{CompileCache, Limits, PluginError};
use kapsel_store::{Key, Store, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::App;
use crate::auth::{Identity, Verb, authorize};
use crate::error::ApiError;

/// The largest component accepted by an upload.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;

/// A scheduler extension shared by callers; each call locks it (calls to one instance never overlap).
pub type SharedExtension = Arc<Mutex<SchedulerExtension>>;

/// The active plug-ins, by name, and the compile cache they load through.
#[derive(Debug, Clone, Default)]
pub struct PluginRegistry {
    schedulers: Arc<RwLock<BTreeMap<String, SharedExtension>>>,
    cache: Option<CompileCache>,
}

impl PluginRegistry {
    /// Loads every stored `Plugin` that has a component, compiling through
    /// `cache` when given. One that no longer loads is logged and left out
    /// (the others still start).
    pub async fn start(store: &Store, cache: Option<CompileCache>) -> Result<PluginRegistry, StoreError> {
        let registry = PluginRegistry { schedulers: Default::default(), cache };
        for plugin in store.list(&PLUGIN.store_key(), None).await?.objects {
            let name = object::name(&plugin).unwrap_or_default().to_string();
            let Ok(spec) = serde_json::from_value::<PluginSpec>(plugin.get("spec").cloned().unwrap_or_default()) else { continue };
            if spec.digest.is_empty() {
                continue;
            }
            let bytes = match store.get_blob(&spec.digest).await {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::error!(plugin = %name, digest = %spec.digest, error = &error as &dyn std::error::Error, "a stored plug-in's component is missing; it stays inactive");
                    continue;
                }
            };
            match registry.load(&name, &spec, bytes).await {
                Ok(extension) => registry.activate(&name, extension),
                Err(error) => tracing::error!(plugin = %name, %error, "a stored plug-in does not load; it stays inactive"),
            }
        }
        Ok(registry)
    }

    /// Makes `extension` the active version of `name` (calls in flight finish on the old one).
    pub fn activate(&self, name: &str, extension: SchedulerExtension) {
        self.schedulers.write().expect("plug-in registry lock").insert(name.to_string(), Arc::new(Mutex::new(extension)));
    }

    pub fn remove(&self, name: &str) {
        self.schedulers.write().expect("plug-in registry lock").remove(name);
    }

    /// The active scheduler extensions, in name order.
    pub fn schedulers(&self) -> Vec<(String, SharedExtension)> {
        self.schedulers.read().expect("plug-in registry lock").iter().map(|(n, e)| (n.clone(), e.clone())).collect()
    }
}

/// After an edit of a `Plugin` (config, limits) through the generic API:
/// load the active component with the new spec and swap it in; if it does
/// not load, the previous instance stays and the object says why
/// (`status.phase: Rejected`).
pub fn reload_after_edit(app: &App, plugin: &Value) {
    let name = object::name(plugin).unwrap_or_default().to_string();
    let Ok(spec) = serde_json::from_value::<PluginSpec>(plugin.get("spec").cloned().unwrap_or_default()) else { return };
    if spec.digest.is_empty() {
        return;
    }
    let app = app.clone();
    tokio::spawn(async move {
        let outcome = match app.store.get_blob(&spec.digest).await {
            Ok(bytes) => app.plugins.load(&name, &spec, bytes).await.map_err(|e| e.to_string()),
            Err(error) => Err(format!("the component {} is missing: {error}", spec.digest)),
        };
        let status = match outcome {
            Ok(extension) => {
                app.plugins.activate(&name, extension);
                json!({"phase": "Active", "message": ""})
            }
            Err(message) => {
                tracing::error!(plugin = %name, %message, "an edited plug-in does not load; the previous instance stays active");
                json!({"phase": "Rejected", "message": format!("the edited spec does not load ({message}); the previous configuration stays active")})
            }
        };
        let key = Key::new(PLUGIN.store_key(), "", &name);
        if let Ok(mut current) = app.store.get(&key).await {
            let expected = object::resource_version(&current).and_then(Result::ok);
            current["status"] = status;
            if let Err(error) = app.store.update(key, current, expected).await {
                tracing::warn!(plugin = %name, error = &error as &dyn std::error::Error, "could not record the plug-in's status");
            }
        }
    });
}

impl PluginRegistry {
    /// Compiles (or takes from the cache), checks and configures a component for `spec`, off the async threads.
    async fn load(&self, name: &str, spec: &PluginSpec, bytes: Vec<u8>) -> Result<SchedulerExtension, PluginError> {
        let cache = self.cache.clone();
        let digest = spec.digest.clone();
        let spec = spec.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let component = match (&cache, digest.is_empty()) {
                (Some(cache), false) => cache.compile(&digest, &bytes)?,
                _ => kapsel_plugins::compile(&bytes)?,
            };
            load_component(&name, &spec, &component)
        })
        .await
        .map_err(|e| PluginError::Trap(format!("the loader stopped: {e}")))?
    }
}

/// Checks and configures a compiled component for `spec`.
fn load_component(
    name: &str,
    spec: &PluginSpec,
    component: &kapsel_plugins::scheduler::Component,
) -> Result<SchedulerExtension, PluginError> {
    if spec.world != "scheduler-extension" {
        return Err(PluginError::Rejected(format!(
            "{} plug-ins cannot be hosted yet: only scheduler-extension plug-ins run so far",
            spec.world
        )));
    }
    let limits = Limits {
        deadline: std::time::Duration::from_millis(spec.limits.deadline_milliseconds),
        memory_bytes: usize::try_from(spec.limits.memory_bytes).unwrap_or(usize::MAX),
    };
    let config: Vec<(String, String)> = spec.config.clone().into_iter().collect();
    SchedulerExtension::from_component(name, component, config, limits)
}

/// Query of an upload.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    /// The world the component targets (required for a new plug-in).
    world: Option<String>,
    version: Option<String>,
}

fn invalid_component(name: &str, error: PluginError) -> ApiError {
    ApiError::invalid(&PLUGIN, name, vec![FieldError::invalid("component", error.to_string())])
}

/// `POST /apis/kapsel.io/v1alpha1/plugins/{name}/component`: upload and activate a component.
pub async fn upload(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&identity, Verb::Create, &PLUGIN, None)?;
    let bytes = axum::body::to_bytes(body, MAX_COMPONENT_BYTES).await.map_err(|_| ApiError::TooLarge { limit: MAX_COMPONENT_BYTES })?;
    let key = Key::new(PLUGIN.store_key(), "", &name);
    let current = match app.store.get(&key).await {
        Ok(current) => Some(current),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(ApiError::from_store(e, &PLUGIN, &name)),
    };
    let mut spec: PluginSpec = match &current {
        Some(current) => serde_json::from_value(current.get("spec").cloned().unwrap_or_default())
            .map_err(|e| ApiError::internal("reading the stored plug-in", e))?,
        None => PluginSpec::default(),
    };
    if let Some(world) = query.world {
        if current.is_some() && world != spec.world {
            return Err(ApiError::invalid(
                &PLUGIN,
                &name,
                vec![FieldError::forbidden("spec.world", format!("the plug-in targets {}; delete it to change its world", spec.world))],
            ));
        }
        spec.world = world;
    }
    if spec.world.is_empty() {
        return Err(ApiError::invalid(
            &PLUGIN,
            &name,
            vec![
                FieldError::required("spec.world")
                    .with_message("pass ?world= (one of scheduler-extension, storage-driver, network-driver)"),
            ],
        ));
    }
    if !WORLDS.contains(&spec.world.as_str()) {
        return Err(ApiError::invalid(&PLUGIN, &name, vec![FieldError::not_supported("spec.world", &spec.world, WORLDS)]));
    }
    let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
    let candidate = PluginSpec { digest: digest.clone(), ..spec.clone() };
    let extension = app.plugins.load(&name, &candidate, bytes.to_vec()).await.map_err(|e| invalid_component(&name, e))?;
    app.store.put_blob(&digest, &bytes).await.map_err(|e| ApiError::from_store(e, &PLUGIN, &name))?;
    if spec.digest != digest {
        spec.previous_digest = std::mem::replace(&mut spec.digest, digest);
        spec.previous_version = spec.version.clone();
    }
    if let Some(version) = query.version {
        spec.version = version;
    }
    let stored = save(&app, &name, current, spec).await?;
    app.plugins.activate(&name, extension);
    let active = stored.pointer("/spec/digest").and_then(|d| d.as_str()).unwrap_or_default().to_string();
    tracing::info!(plugin = %name, digest = %active, "plug-in active");
    Ok((StatusCode::OK, axum::Json(stored)).into_response())
}

/// `POST /apis/kapsel.io/v1alpha1/plugins/{name}/rollback`: make the previous component active again.
pub async fn rollback(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&identity, Verb::Update, &PLUGIN, None)?;
    let current = app.store.get(&Key::new(PLUGIN.store_key(), "", &name)).await.map_err(|e| ApiError::from_store(e, &PLUGIN, &name))?;
    let mut spec: PluginSpec = serde_json::from_value(current.get("spec").cloned().unwrap_or_default())
        .map_err(|e| ApiError::internal("reading the stored plug-in", e))?;
    if spec.previous_digest.is_empty() {
        return Err(ApiError::BadRequest(format!("plug-in {name:?} has no previous version to roll back to")));
    }
    let bytes = app.store.get_blob(&spec.previous_digest).await.map_err(|e| ApiError::from_store(e, &PLUGIN, &name))?;
    let previous = PluginSpec { digest: spec.previous_digest.clone(), ..spec.clone() };
    let extension = app.plugins.load(&name, &previous, bytes).await.map_err(|e| invalid_component(&name, e))?;
    std::mem::swap(&mut spec.digest, &mut spec.previous_digest);
    std::mem::swap(&mut spec.version, &mut spec.previous_version);
    let stored = save(&app, &name, Some(current), spec).await?;
    app.plugins.activate(&name, extension);
    Ok(axum::Json(stored).into_response())
}

/// Creates or updates the `Plugin` object with `spec`, marked Active.
async fn save(app: &App, name: &str, current: Option<Value>, spec: PluginSpec) -> Result<Value, ApiError> {
    let key = Key::new(PLUGIN.store_key(), "", name);
    let spec = serde_json::to_value(&spec).map_err(|e| ApiError::internal("encoding the plug-in", e))?;
    let status = json!({"phase": "Active", "message": "", "calls": 0, "errors": 0});
    let change = match current {
        Some(mut object) => {
            let expected = object::resource_version(&object).and_then(Result::ok);
            object["spec"] = spec;
            object["status"] = status;
            let generation = object.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
            object::set_meta(&mut object, "generation", generation + 1);
            app.store.update(key, object, expected).await
        }
        None => {
            let object = json!({
                "apiVersion": PLUGIN.api_version(),
                "kind": PLUGIN.kind,
                "metadata": {"name": name, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "generation": 1},
                "spec": spec,
                "status": status,
            });
            app.store.create(key, object).await
        }
    };
    change.map(|c| (*c.object).clone()).map_err(|e| ApiError::from_store(e, &PLUGIN, name))
}
