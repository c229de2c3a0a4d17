//! Hosting `storage-driver` plug-ins.
//!
//! A [`StorageDriver`] is granted exactly one directory, its storage root,
//! preopened in the guest as `/` (read-write); everything it keeps lives
//! there, so a fresh instance (after a failure or an upgrade) is simply
//! configured again and finds its ledger where it left it. Each operation
//! returns the driver's typed answer ([`StorageError`] for a refusal such as
//! `insufficient-capacity`) inside the host's [`PluginError`] for a call
//! that failed (trap, deadline, memory).

use std::path::{Path, PathBuf};

use wasmtime::Store;
use wasmtime::component::{Component, HasSelf};

use crate::sandbox::{self, Limits, Live, PluginError, PluginState};
use crate::scheduler::misfit;

#[allow(missing_debug_implementations, unused_qualifications, clippy::all)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/kapsel-plugin@0.1.0",
        world: "storage-driver",
        additional_derives: [PartialEq, Eq],
        with: {
            "kapsel:plugin/log": crate::scheduler::bindings::kapsel::plugin::log,
        },
    });
}

pub use bindings::kapsel::plugin::storage_types::{MountInfo, StorageError, Volume, VolumeRequest};

impl bindings::kapsel::plugin::storage_types::Host for PluginState {}

/// What a storage driver may import beyond WASI's base: its world's
/// interfaces and the filesystem (its root is the only directory it sees;
/// file timestamps bring the wall clock's types along).
const GRANTED: &[&str] = &[
    "kapsel:plugin/log@0.1.",
    "kapsel:plugin/types@0.1.",
    "kapsel:plugin/storage-types@0.1.",
    "wasi:filesystem/",
    "wasi:clocks/wall-clock@",
];

/// One loaded storage driver.
pub struct StorageDriver {
    name: String,
    pre: bindings::StorageDriverPre<PluginState>,
    limits: Limits,
    config: Vec<(String, String)>,
    root: PathBuf,
    live: Option<Live<bindings::StorageDriver>>,
}

impl std::fmt::Debug for StorageDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageDriver")
            .field("name", &self.name)
            .field("root", &self.root)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl StorageDriver {
    /// Checks `component` against the `storage-driver` world and starts and
    /// configures a first instance with `root` (created if missing) as its storage root.
    pub fn from_component(
        name: &str,
        component: &Component,
        config: Vec<(String, String)>,
        limits: Limits,
        root: &Path,
    ) -> Result<Self, PluginError> {
        let mut linker = sandbox::wasi_linker()?;
        bindings::StorageDriver::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Rejected(format!("{e:#}")))?;
        let misfit = misfit("storage-driver");
        let pre = bindings::StorageDriverPre::new(linker.instantiate_pre(component).map_err(&misfit)?).map_err(&misfit)?;
        sandbox::check_imports(component, "storage driver", GRANTED)?;
        let mut driver = StorageDriver { name: name.to_string(), pre, limits, config, root: root.to_path_buf(), live: None };
        driver.live = Some(driver.fresh()?);
        Ok(driver)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host directory granted to the driver.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn fresh(&self) -> Result<Live<bindings::StorageDriver>, PluginError> {
        sandbox::start(
            &self.name,
            self.limits,
            Some(&self.root),
            |store| self.pre.instantiate(store),
            |instance, store| instance.call_configure(store, &self.config),
        )
    }

    fn call<R>(
        &mut self,
        call: impl FnOnce(&bindings::StorageDriver, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let (result, live) = sandbox::call_live(self.live.take(), || self.fresh(), self.limits, call)?;
        self.live = Some(live);
        Ok(result)
    }

    /// Provisions a volume (idempotent for an identical request).
    pub fn create_volume(&mut self, request: &VolumeRequest) -> Result<Result<Volume, StorageError>, PluginError> {
        self.call(|instance, store| instance.call_create_volume(store, request))
    }

    /// Deletes a volume and its data.
    pub fn delete_volume(&mut self, id: &str) -> Result<Result<(), StorageError>, PluginError> {
        self.call(|instance, store| instance.call_delete_volume(store, id))
    }

    /// Makes a volume available on `node` and says what to mount.
    pub fn attach(&mut self, id: &str, node: &str) -> Result<Result<MountInfo, StorageError>, PluginError> {
        self.call(|instance, store| instance.call_attach(store, id, node))
    }

    /// The volume is no longer used on `node`.
    pub fn detach(&mut self, id: &str, node: &str) -> Result<Result<(), StorageError>, PluginError> {
        self.call(|instance, store| instance.call_detach(store, id, node))
    }
}

/// A driver's refusal in words.
pub fn describe(error: &StorageError) -> String {
    match error {
        StorageError::NotFound => "no such volume".into(),
        StorageError::AlreadyExists => "a volume for this claim already exists with a different request".into(),
        StorageError::InsufficientCapacity(left) => format!("not enough capacity: {left} bytes left"),
        StorageError::Invalid(message) => message.clone(),
        StorageError::Io(message) => format!("storage root failed: {message}"),
    }
}
