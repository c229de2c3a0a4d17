//! The on-disk cache of compiled components, keyed by the component's
//! digest and the engine's compatibility hash (wasmtime version and
//! settings), so that a restart deserializes in well under a millisecond
//! instead of compiling for tens of milliseconds. Each file is wasmtime's
//! serialized component followed by the SHA-256 of those bytes, written to
//! a temporary file, synced, then renamed into place. A cache entry whose
//! checksum does not match (a torn or damaged file) or that does not
//! deserialize (another engine) is removed and the component compiled again.

// Deserializing compiled code is `unsafe` in wasmtime: it trusts the file to
// be what this engine wrote. This module is the crate's only exception.
#![allow(unsafe_code)]

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;

use crate::PluginError;

/// Length of the checksum that ends every cache file.
const CHECKSUM_BYTES: usize = 32;

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
        if let Ok(file) = std::fs::read(&path) {
            let problem = match checked(&file) {
                None => "its checksum does not match".to_string(),
                // SAFETY: the checksum shows these are the bytes `store` below wrote,
                // and it writes only what this engine's `Component::serialize`
                // produced; the key includes the engine's compatibility hash, and
                // wasmtime checks the header before using one.
                Some(serialized) => match unsafe { Component::deserialize(crate::engine(), serialized) } {
                    Ok(component) => return Ok(component),
                    Err(error) => format!("{error:#}"),
                },
            };
            tracing::warn!(file = %path.display(), %problem, "dropping an unusable compiled plug-in; compiling it again");
            let _ = std::fs::remove_file(&path);
        }
        let component = crate::compile(bytes)?;
        if let Err(error) = store(&path, &component) {
            tracing::warn!(file = %path.display(), %error, "could not cache a compiled plug-in");
        }
        Ok(component)
    }
}

/// Writes the compiled form and its checksum atomically (a temporary file, synced, then a rename).
fn store(path: &Path, component: &Component) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut bytes = component.serialize()?;
    let checksum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&checksum);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("cwasm.tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

/// The serialized component in a cache file, when its checksum matches.
fn checked(file: &[u8]) -> Option<&[u8]> {
    let split = file.len().checked_sub(CHECKSUM_BYTES)?;
    let (serialized, checksum) = file.split_at(split);
    (Sha256::digest(serialized)[..] == *checksum).then_some(serialized)
}
