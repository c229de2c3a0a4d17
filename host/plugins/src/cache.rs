//! The on-disk cache of compiled components, keyed by the component's
//! digest and the engine's compatibility hash (wasmtime version and
//! settings), so that a restart deserializes in well under a millisecond
//! instead of compiling for tens of milliseconds. A cache entry that does
//! not deserialize (another engine, a damaged file) is removed and the
//! component compiled again.

// Deserializing compiled code is `unsafe` in wasmtime: it trusts the file to
// be what this engine wrote. This module is the crate's only exception.
#![allow(unsafe_code)]

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;

use crate::PluginError;

/// A directory of compiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// A cache in `dir` (created when first written; keep it private to the server, like its data directory).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache { dir: dir.into() }
    }

    /// Where the compiled form of `digest` lives for this engine.
    pub fn path_for(&self, digest: &str) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        crate::engine().precompile_compatibility_hash().hash(&mut hasher);
        let name: String = digest.chars().filter(char::is_ascii_alphanumeric).collect();
        self.dir.join(format!("{name}-{:016x}.cwasm", hasher.finish()))
    }

    /// The component of `bytes` (whose digest is `digest`): from the cache, or compiled and then cached.
    pub fn compile(&self, digest: &str, bytes: &[u8]) -> Result<Component, PluginError> {
        let path = self.path_for(digest);
        // Read into memory rather than mapped, so that nothing done to the file later can reach running code.
        if let Ok(compiled) = std::fs::read(&path) {
            // SAFETY: files in this directory are written only by `store` below, from
            // components this engine compiled; the key includes the engine's
            // compatibility hash, and wasmtime checks the header before using one.
            match unsafe { Component::deserialize(crate::engine(), &compiled) } {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(file = %path.display(), error = %format!("{error:#}"), "dropping an unusable compiled plug-in");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = crate::compile(bytes)?;
        if let Err(error) = store(&path, &component) {
            tracing::warn!(file = %path.display(), %error, "could not cache a compiled plug-in");
        }
        Ok(component)
    }
}

/// Writes the compiled form atomically (a temporary file, then a rename).
fn store(path: &Path, component: &Component) -> anyhow::Result<()> {
    let serialized = component.serialize()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("cwasm.tmp");
    std::fs::write(&temporary, serialized)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}
