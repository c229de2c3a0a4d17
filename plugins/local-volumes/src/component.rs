//! The component: bindings generated from the WIT world and the glue
//! between the generated types and [`crate::logic`].

// The generated bindings are `unsafe` glue (nothing else in the crate is),
// and their lowering functions take one argument per flattened value.
#![allow(unsafe_code, clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit/kapsel-plugin@0.1.0",
    world: "storage-driver",
});

use std::cell::RefCell;

use crate::logic;
use kapsel::plugin::log::{Level, log};

thread_local! {
    /// The open driver; `None` until `configure` succeeded.
    static DRIVER: RefCell<Option<logic::Driver>> = const { RefCell::new(None) };
}

fn error(e: logic::StorageError) -> StorageError {
    match e {
        logic::StorageError::NotFound => StorageError::NotFound,
        logic::StorageError::AlreadyExists => StorageError::AlreadyExists,
        logic::StorageError::InsufficientCapacity(n) => StorageError::InsufficientCapacity(n),
        logic::StorageError::Invalid(m) => StorageError::Invalid(m),
        logic::StorageError::Io(m) => StorageError::Io(m),
    }
}

/// Runs `f` on the configured driver.
fn with_driver<T>(f: impl FnOnce(&mut logic::Driver) -> Result<T, logic::StorageError>) -> Result<T, StorageError> {
    DRIVER.with_borrow_mut(|driver| match driver {
        Some(driver) => f(driver).map_err(error),
        None => Err(StorageError::Invalid("local-volumes is not configured yet".to_owned())),
    })
}

#[derive(Debug)]
struct LocalVolumes;

impl Guest for LocalVolumes {
    fn configure(config: Vec<(String, String)>) -> Result<(), String> {
        let config = logic::Config::parse(&config)?;
        let (driver, removed) = logic::Driver::open(&config).map_err(|e| match e {
            logic::StorageError::Io(m) | logic::StorageError::Invalid(m) => m,
            other => format!("{other:?}"),
        })?;
        for id in removed {
            log(Level::Warn, &format!("local-volumes: removed leftover directory volumes/{id} (not in the ledger)"));
        }
        if driver.used() > driver.capacity() {
            log(
                Level::Warn,
                &format!(
                    "local-volumes: volumes use {}, more than the capacity {}; new volumes are refused",
                    logic::format_bytes(driver.used()),
                    logic::format_bytes(driver.capacity())
                ),
            );
        }
        log(
            Level::Info,
            &format!(
                "local-volumes: root {}, capacity {}, {} in use",
                config.root.display(),
                logic::format_bytes(driver.capacity()),
                logic::format_bytes(driver.used())
            ),
        );
        DRIVER.set(Some(driver));
        Ok(())
    }

    fn create_volume(request: VolumeRequest) -> Result<Volume, StorageError> {
        let request = logic::VolumeRequest {
            namespace: request.namespace,
            name: request.name,
            size_bytes: request.size_bytes,
            parameters: request.parameters,
        };
        let volume = with_driver(|d| d.create_volume(&request))?;
        log(Level::Info, &format!("local-volumes: volume {} of {}", volume.id, logic::format_bytes(volume.size_bytes)));
        Ok(Volume { id: volume.id, size_bytes: volume.size_bytes })
    }

    fn delete_volume(id: String) -> Result<(), StorageError> {
        with_driver(|d| d.delete_volume(&id))?;
        log(Level::Info, &format!("local-volumes: deleted volume {id}"));
        Ok(())
    }

    fn attach(id: String, node: String) -> Result<MountInfo, StorageError> {
        let mount = with_driver(|d| d.attach(&id, &node))?;
        Ok(MountInfo { path: mount.path, read_only: mount.read_only })
    }

    fn detach(id: String, node: String) -> Result<(), StorageError> {
        with_driver(|d| d.detach(&id, &node))
    }
}

export!(LocalVolumes);
