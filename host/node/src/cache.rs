//! The on-disk cache of compiled pod components, `DATA/images/sha256-<hex>.cwasm`,
//! so a restarted node (or a second runtime on the same data directory)
//! deserializes in well under a millisecond instead of compiling again. Each
//! file is wasmtime's serialized component followed by the SHA-256 of those
//! bytes; a file whose checksum does not match, or that this engine cannot
//! load (another wasmtime version or settings), is removed and the component
//! compiled again.

// Deserializing compiled code is `unsafe` in wasmtime: it trusts the bytes to
// be what a compatible engine wrote. This module is the crate's only exception.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Length of the checksum that ends every cache file.
const CHECKSUM_BYTES: usize = 32;

/// A directory of compiled components, keyed by the digest of their source.
#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    pub(crate) fn new(dir: PathBuf) -> Self {
        CompileCache { dir }
    }

    /// Where the compiled form of `digest` (`sha256:<hex>`) lives.
    pub(crate) fn path_for(&self, digest: &str) -> PathBuf {
        let name: String = digest.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        self.dir.join(format!("{name}.cwasm"))
    }

    /// The cached component of `digest`, if there is a usable one; an unusable file is removed.
    pub(crate) fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path_for(digest);
        // Read into memory rather than mapped, so nothing done to the file later reaches running code.
        let bytes = std::fs::read(&path).ok()?;
        let problem = match checked(&bytes) {
            None => "its checksum does not match".to_string(),
            // SAFETY: the checksum shows these are the bytes `store` wrote, and
            // `store` writes only what `Component::serialize` produced on an
            // engine of this node; wasmtime checks the header (version,
            // settings) and refuses code from an incompatible engine.
            Some(serialized) => match unsafe { Component::deserialize(engine, serialized) } {
                Ok(component) => return Some(component),
                Err(error) => format!("{error:#}"),
            },
        };
        tracing::warn!(file = %path.display(), %problem, "dropping an unusable compiled component; compiling it again");
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Writes the compiled form of `digest` (a temporary file, then a rename).
    pub(crate) fn store(&self, digest: &str, component: &Component) -> anyhow::Result<()> {
        let mut bytes = component.serialize()?;
        let checksum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&checksum);
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path_for(digest);
        let temporary = path.with_extension("cwasm.tmp");
        std::fs::write(&temporary, &bytes)?;
        std::fs::rename(&temporary, &path)?;
        Ok(())
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The serialized component in a cache file, when its checksum matches.
fn checked(bytes: &[u8]) -> Option<&[u8]> {
    let split = bytes.len().checked_sub(CHECKSUM_BYTES)?;
    let (serialized, checksum) = bytes.split_at(split);
    (Sha256::digest(serialized)[..] == *checksum).then_some(serialized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checksum_guards_the_serialized_bytes() {
        let mut file = b"compiled code".to_vec();
        file.extend_from_slice(&Sha256::digest(b"compiled code"));
        assert_eq!(checked(&file), Some(&b"compiled code"[..]));
        file[0] ^= 1;
        assert_eq!(checked(&file), None);
        assert_eq!(checked(b"short"), None);
    }

    #[test]
    fn digests_become_file_names() {
        let cache = CompileCache::new(PathBuf::from("/data/images"));
        assert_eq!(cache.path_for("sha256:ab12"), PathBuf::from("/data/images/sha256-ab12.cwasm"));
    }
}
