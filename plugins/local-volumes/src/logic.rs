//! The local-volumes driver, free of any Wasm bindings so it can be tested
//! natively against a temporary directory.
//!
//! Layout under the storage root:
//!
//! ```text
//! kapsel-volumes.json        the ledger: every volume, its size and where it is attached
//! volumes/<namespace>.<name>/ one directory per volume (the volume id)
//! ```
//!
//! The ledger is the truth: capacity is accounted from the sizes it records
//! (reservations; the driver cannot stop a pod from writing more than its
//! volume's size into the directory). It is rewritten atomically (write a
//! temporary file, sync, rename) after every change. Creation writes the
//! directory first and the ledger second; deletion updates the ledger first
//! and removes the directory second; so a crash leaves at worst a directory
//! the ledger does not know, which the next start removes.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Config key: the capacity in bytes (a plain number or a quantity such as
/// `10Gi`).
pub const KEY_CAPACITY: &str = "capacity";
/// Config key: where the storage root is in the guest's file system.
pub const KEY_ROOT: &str = "root";

/// Default of `capacity`: 10 GiB.
pub const DEFAULT_CAPACITY: u64 = 10 << 30;
/// Default of `root`: the host preopens the storage root as `/`.
pub const DEFAULT_ROOT: &str = "/";

/// The ledger's file name, in the storage root.
pub const LEDGER: &str = "kapsel-volumes.json";
/// The directory holding the volumes, in the storage root.
pub const VOLUMES: &str = "volumes";
const LEDGER_TMP: &str = "kapsel-volumes.json.tmp";
const LEDGER_VERSION: u32 = 1;

/// Why an operation failed; mirrors the WIT `storage-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// No volume with this id.
    NotFound,
    /// The namespace/name is taken by a volume of another size.
    AlreadyExists,
    /// Not enough capacity; the payload is what is still available.
    InsufficientCapacity(u64),
    /// The request is invalid.
    Invalid(String),
    /// The file system failed.
    Io(String),
}

fn io_error(what: &str, path: &Path, err: &io::Error) -> StorageError {
    StorageError::Io(format!("{what} {}: {err}", path.display()))
}

/// A claim, as passed to `create-volume`.
#[derive(Debug, Clone, Default)]
pub struct VolumeRequest {
    /// Namespace (a DNS label).
    pub namespace: String,
    /// Name (a DNS subdomain).
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Driver parameters; local-volumes takes none.
    pub parameters: Vec<(String, String)>,
}

/// A provisioned volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The id: `<namespace>.<name>`.
    pub id: String,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// What the node agent mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Relative to the storage root.
    pub path: String,
    /// Whether to mount read-only.
    pub read_only: bool,
}

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The storage root as the guest sees it.
    pub root: PathBuf,
    /// The capacity in bytes.
    pub capacity: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config { root: PathBuf::from(DEFAULT_ROOT), capacity: DEFAULT_CAPACITY }
    }
}

impl Config {
    /// Parses the `Plugin` config; unknown keys and bad values are errors
    /// naming the key.
    pub fn parse(pairs: &[(String, String)]) -> Result<Config, String> {
        let mut config = Config::default();
        for (key, value) in pairs {
            let value = value.trim();
            match key.as_str() {
                KEY_CAPACITY => {
                    config.capacity = parse_quantity(value)
                        .ok_or_else(|| format!("{KEY_CAPACITY}: expected bytes, e.g. `10737418240` or `10Gi`, got `{value}`"))?;
                }
                KEY_ROOT => {
                    if value.is_empty() {
                        return Err(format!("{KEY_ROOT}: must not be empty"));
                    }
                    config.root = PathBuf::from(value);
                }
                other => return Err(format!("unknown config key `{other}` (known: {KEY_CAPACITY}, {KEY_ROOT})")),
            }
        }
        Ok(config)
    }
}

/// Parses a byte quantity: digits with an optional suffix `k`/`K`, `M`, `G`,
/// `T`, `P` (powers of 1000) or `Ki`, `Mi`, `Gi`, `Ti`, `Pi` (powers of 1024).
pub fn parse_quantity(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let factor: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Bytes the way Kubernetes quantities read: `2Gi`, `512Mi`, `1000`.
pub fn format_bytes(n: u64) -> String {
    for (unit, size) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    n.to_string()
}

/// One volume in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    namespace: String,
    name: String,
    size_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attached_to: Option<String>,
}

/// The ledger file's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Ledger {
    version: u32,
    volumes: BTreeMap<String, Entry>,
}

/// The driver: a storage root, its capacity and the ledger.
#[derive(Debug)]
pub struct Driver {
    root: PathBuf,
    capacity: u64,
    ledger: Ledger,
}

impl Driver {
    /// Opens the storage root: reads the ledger (a missing ledger is an
    /// empty one; a corrupt one is an error, so no data is ever forgotten),
    /// creates `volumes/` and removes volume directories the ledger does not
    /// know (left over from an interrupted create or delete). Returns the
    /// driver and the ids of the directories removed.
    pub fn open(config: &Config) -> Result<(Driver, Vec<String>), StorageError> {
        let ledger_path = config.root.join(LEDGER);
        let ledger = match fs::read(&ledger_path) {
            Ok(bytes) => {
                let ledger: Ledger = serde_json::from_slice(&bytes)
                    .map_err(|e| StorageError::Io(format!("the ledger {} is corrupt: {e}", ledger_path.display())))?;
                if ledger.version != LEDGER_VERSION {
                    return Err(StorageError::Io(format!(
                        "the ledger {} has version {}; this driver reads version {LEDGER_VERSION}",
                        ledger_path.display(),
                        ledger.version
                    )));
                }
                ledger
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ledger { version: LEDGER_VERSION, volumes: BTreeMap::new() },
            Err(e) => return Err(io_error("cannot read the ledger", &ledger_path, &e)),
        };
        let driver = Driver { root: config.root.clone(), capacity: config.capacity, ledger };
        let volumes = driver.root.join(VOLUMES);
        fs::create_dir_all(&volumes).map_err(|e| io_error("cannot create", &volumes, &e))?;
        let mut removed = Vec::new();
        let entries = fs::read_dir(&volumes).map_err(|e| io_error("cannot list", &volumes, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("cannot list", &volumes, &e))?;
            let id = entry.file_name().to_string_lossy().into_owned();
            if !driver.ledger.volumes.contains_key(&id) {
                remove_all(&entry.path()).map_err(|e| io_error("cannot remove the leftover", &entry.path(), &e))?;
                removed.push(id);
            }
        }
        Ok((driver, removed))
    }

    /// The configured capacity.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes reserved by existing volumes.
    pub fn used(&self) -> u64 {
        self.ledger.volumes.values().map(|e| e.size_bytes).fold(0u64, u64::saturating_add)
    }

    /// Bytes still available.
    pub fn available(&self) -> u64 {
        self.capacity.saturating_sub(self.used())
    }

    /// Volume directory, relative to the root.
    fn relative(id: &str) -> String {
        format!("{VOLUMES}/{id}")
    }

    /// Provisions a directory for the claim. Repeating an identical request
    /// returns the existing volume; the same namespace/name with another size
    /// is `AlreadyExists`.
    pub fn create_volume(&mut self, request: &VolumeRequest) -> Result<Volume, StorageError> {
        if !is_dns_label(&request.namespace) {
            return Err(StorageError::Invalid(format!(
                "namespace `{}` is not a DNS label (lowercase letters, digits and `-`, at most 63)",
                request.namespace
            )));
        }
        if !is_dns_subdomain(&request.name) {
            return Err(StorageError::Invalid(format!(
                "name `{}` is not a DNS subdomain (lowercase letters, digits, `-` and `.`, at most 253)",
                request.name
            )));
        }
        if request.size_bytes == 0 {
            return Err(StorageError::Invalid("size-bytes must be greater than 0".to_owned()));
        }
        if let Some((key, _)) = request.parameters.first() {
            return Err(StorageError::Invalid(format!("unknown parameter `{key}`: local-volumes takes no parameters")));
        }
        // The namespace has no `.`, so `<namespace>.<name>` is unambiguous,
        // and both start with a letter or digit, so it is never `.` or `..`.
        let id = format!("{}.{}", request.namespace, request.name);
        if id.len() > 255 {
            return Err(StorageError::Invalid(format!(
                "namespace and name together are too long for a directory name ({} > 255)",
                id.len()
            )));
        }
        if let Some(existing) = self.ledger.volumes.get(&id) {
            return if existing.size_bytes == request.size_bytes {
                Ok(Volume { id, size_bytes: existing.size_bytes })
            } else {
                Err(StorageError::AlreadyExists)
            };
        }
        let available = self.available();
        if request.size_bytes > available {
            return Err(StorageError::InsufficientCapacity(available));
        }
        let dir = self.root.join(VOLUMES).join(&id);
        // A directory the ledger does not know is a leftover: never hand its
        // data to a new volume.
        if dir.exists() {
            remove_all(&dir).map_err(|e| io_error("cannot remove the leftover", &dir, &e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| io_error("cannot create", &dir, &e))?;
        let entry =
            Entry { namespace: request.namespace.clone(), name: request.name.clone(), size_bytes: request.size_bytes, attached_to: None };
        self.ledger.volumes.insert(id.clone(), entry);
        if let Err(e) = self.save() {
            self.ledger.volumes.remove(&id);
            let _ = fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(Volume { id, size_bytes: request.size_bytes })
    }

    /// Deletes a detached volume and its data.
    pub fn delete_volume(&mut self, id: &str) -> Result<(), StorageError> {
        let entry = self.ledger.volumes.get(id).ok_or(StorageError::NotFound)?;
        if let Some(node) = &entry.attached_to {
            return Err(StorageError::Invalid(format!("volume {id} is attached to node {node}; detach it first")));
        }
        let entry = self.ledger.volumes.remove(id).ok_or(StorageError::NotFound)?;
        if let Err(e) = self.save() {
            self.ledger.volumes.insert(id.to_owned(), entry);
            return Err(e);
        }
        let dir = self.root.join(VOLUMES).join(id);
        match remove_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            // The volume is gone from the ledger; the directory is removed at
            // the next start.
            Err(e) => Err(io_error("volume deleted, but cannot remove", &dir, &e)),
        }
    }

    /// Attaches the volume to `node` (one node at a time) and says what to
    /// mount.
    pub fn attach(&mut self, id: &str, node: &str) -> Result<MountInfo, StorageError> {
        if node.is_empty() {
            return Err(StorageError::Invalid("the node name is empty".to_owned()));
        }
        let entry = self.ledger.volumes.get(id).ok_or(StorageError::NotFound)?;
        match entry.attached_to.as_deref() {
            Some(other) if other != node => {
                return Err(StorageError::Invalid(format!("volume {id} is attached to node {other}; detach it first")));
            }
            _ => {}
        }
        let dir = self.root.join(VOLUMES).join(id);
        if !dir.is_dir() {
            return Err(StorageError::Io(format!("the directory of volume {id} ({}) is missing", dir.display())));
        }
        if entry.attached_to.is_none() {
            self.set_attached(id, Some(node.to_owned()))?;
        }
        Ok(MountInfo { path: Self::relative(id), read_only: false })
    }

    /// Detaches the volume from `node`; a volume not attached there is left
    /// as it is.
    pub fn detach(&mut self, id: &str, node: &str) -> Result<(), StorageError> {
        let entry = self.ledger.volumes.get(id).ok_or(StorageError::NotFound)?;
        if entry.attached_to.as_deref() == Some(node) {
            self.set_attached(id, None)?;
        }
        Ok(())
    }

    fn set_attached(&mut self, id: &str, node: Option<String>) -> Result<(), StorageError> {
        let entry = self.ledger.volumes.get_mut(id).ok_or(StorageError::NotFound)?;
        let previous = std::mem::replace(&mut entry.attached_to, node);
        if let Err(e) = self.save() {
            if let Some(entry) = self.ledger.volumes.get_mut(id) {
                entry.attached_to = previous;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Writes the ledger atomically: a temporary file, synced, renamed over
    /// the old one.
    fn save(&self) -> Result<(), StorageError> {
        let tmp = self.root.join(LEDGER_TMP);
        let path = self.root.join(LEDGER);
        let mut bytes = serde_json::to_vec_pretty(&self.ledger).map_err(|e| StorageError::Io(format!("cannot encode the ledger: {e}")))?;
        bytes.push(b'\n');
        let write = || -> io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| io_error("cannot write the ledger", &path, &e))
    }
}

/// Removes a directory tree (or a file).
fn remove_all(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) }
}

/// A Kubernetes DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A Kubernetes DNS-1123 subdomain: labels joined by `.`, at most 253.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const GI: u64 = 1 << 30;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new() -> TempRoot {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("kapsel-local-volumes-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempRoot(path)
        }

        fn config(&self, capacity: u64) -> Config {
            Config { root: self.0.clone(), capacity }
        }

        fn open(&self, capacity: u64) -> Driver {
            Driver::open(&self.config(capacity)).unwrap().0
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn request(namespace: &str, name: &str, size_bytes: u64) -> VolumeRequest {
        VolumeRequest { namespace: namespace.to_owned(), name: name.to_owned(), size_bytes, parameters: Vec::new() }
    }

    #[test]
    fn a_volume_is_a_directory_under_the_root() {
        let root = TempRoot::new();
        let mut driver = root.open(10 * GI);
        let volume = driver.create_volume(&request("dev", "data", GI)).unwrap();
        assert_eq!(volume, Volume { id: "dev.data".into(), size_bytes: GI });
        assert!(root.0.join("volumes/dev.data").is_dir());
        let mount = driver.attach(&volume.id, "node-1").unwrap();
        assert_eq!(mount, MountInfo { path: "volumes/dev.data".into(), read_only: false });
        assert!(root.0.join(&mount.path).is_dir());
    }

    #[test]
    fn capacity_is_enforced() {
        let root = TempRoot::new();
        let mut driver = root.open(10 * GI);
        driver.create_volume(&request("dev", "a", 6 * GI)).unwrap();
        driver.create_volume(&request("dev", "b", 3 * GI)).unwrap();
        assert_eq!(driver.create_volume(&request("dev", "c", 2 * GI)), Err(StorageError::InsufficientCapacity(GI)));
        assert!(!root.0.join("volumes/dev.c").exists());
        driver.create_volume(&request("dev", "c", GI)).unwrap();
        assert_eq!(driver.available(), 0);
        assert_eq!(driver.create_volume(&request("dev", "d", 1)), Err(StorageError::InsufficientCapacity(0)));
        // Deleting frees the space again.
        driver.delete_volume("dev.a").unwrap();
        assert_eq!(driver.available(), 6 * GI);
        driver.create_volume(&request("dev", "d", 6 * GI)).unwrap();
    }

    #[test]
    fn the_ledger_survives_a_restart() {
        let root = TempRoot::new();
        {
            let mut driver = root.open(10 * GI);
            driver.create_volume(&request("dev", "a", 4 * GI)).unwrap();
            driver.create_volume(&request("prod", "b", 4 * GI)).unwrap();
            driver.attach("prod.b", "node-2").unwrap();
            fs::write(root.0.join("volumes/dev.a/file"), b"kept").unwrap();
        }
        let mut driver = root.open(10 * GI);
        assert_eq!(driver.used(), 8 * GI);
        assert_eq!(driver.create_volume(&request("dev", "c", 4 * GI)), Err(StorageError::InsufficientCapacity(2 * GI)));
        assert!(matches!(driver.attach("prod.b", "node-1"), Err(StorageError::Invalid(m)) if m.contains("attached to node node-2")));
        assert_eq!(fs::read(root.0.join("volumes/dev.a/file")).unwrap(), b"kept");
        let ledger: serde_json::Value = serde_json::from_slice(&fs::read(root.0.join(LEDGER)).unwrap()).unwrap();
        assert_eq!(ledger["volumes"]["prod.b"]["attached_to"], "node-2");
        assert!(!root.0.join(LEDGER_TMP).exists());
    }

    #[test]
    fn a_lower_capacity_after_restart_refuses_new_volumes_only() {
        let root = TempRoot::new();
        root.open(10 * GI).create_volume(&request("dev", "a", 8 * GI)).unwrap();
        let mut driver = root.open(5 * GI);
        assert_eq!(driver.available(), 0);
        assert_eq!(driver.create_volume(&request("dev", "b", 1)), Err(StorageError::InsufficientCapacity(0)));
        assert!(driver.attach("dev.a", "n").is_ok());
    }

    #[test]
    fn create_is_idempotent_and_names_are_unique() {
        let root = TempRoot::new();
        let mut driver = root.open(10 * GI);
        let first = driver.create_volume(&request("dev", "data", GI)).unwrap();
        fs::write(root.0.join("volumes/dev.data/x"), b"1").unwrap();
        assert_eq!(driver.create_volume(&request("dev", "data", GI)).unwrap(), first);
        assert!(root.0.join("volumes/dev.data/x").exists(), "a repeat does not wipe the volume");
        assert_eq!(driver.create_volume(&request("dev", "data", 2 * GI)), Err(StorageError::AlreadyExists));
        assert_eq!(driver.used(), GI);
        // The same name in another namespace is another volume.
        assert_eq!(driver.create_volume(&request("prod", "data", GI)).unwrap().id, "prod.data");
    }

    #[test]
    fn attach_is_exclusive_to_one_node() {
        let root = TempRoot::new();
        let mut driver = root.open(10 * GI);
        driver.create_volume(&request("dev", "data", GI)).unwrap();
        driver.attach("dev.data", "node-1").unwrap();
        assert_eq!(driver.attach("dev.data", "node-1").unwrap().path, "volumes/dev.data", "attaching again is fine");
        assert!(matches!(driver.attach("dev.data", "node-2"), Err(StorageError::Invalid(_))));
        driver.detach("dev.data", "node-2").unwrap(); // not attached there: nothing happens
        assert!(driver.attach("dev.data", "node-2").is_err());
        driver.detach("dev.data", "node-1").unwrap();
        driver.attach("dev.data", "node-2").unwrap();
        assert_eq!(driver.attach("nope", "node-2"), Err(StorageError::NotFound));
        assert_eq!(driver.detach("nope", "node-2"), Err(StorageError::NotFound));
    }

    #[test]
    fn delete_removes_the_data_but_not_while_attached() {
        let root = TempRoot::new();
        let mut driver = root.open(10 * GI);
        driver.create_volume(&request("dev", "data", GI)).unwrap();
        fs::create_dir_all(root.0.join("volumes/dev.data/sub")).unwrap();
        fs::write(root.0.join("volumes/dev.data/sub/f"), b"x").unwrap();
        driver.attach("dev.data", "node-1").unwrap();
        assert!(matches!(driver.delete_volume("dev.data"), Err(StorageError::Invalid(m)) if m.contains("detach it first")));
        driver.detach("dev.data", "node-1").unwrap();
        driver.delete_volume("dev.data").unwrap();
        assert!(!root.0.join("volumes/dev.data").exists());
        assert_eq!(driver.delete_volume("dev.data"), Err(StorageError::NotFound));
        // A new volume of the same name starts empty.
        driver.create_volume(&request("dev", "data", GI)).unwrap();
        assert_eq!(fs::read_dir(root.0.join("volumes/dev.data")).unwrap().count(), 0);
    }

    #[test]
    fn leftovers_are_removed_at_start_and_never_reused() {
        let root = TempRoot::new();
        fs::create_dir_all(root.0.join("volumes/dev.ghost")).unwrap();
        fs::write(root.0.join("volumes/dev.ghost/secret"), b"old").unwrap();
        let (mut driver, removed) = Driver::open(&root.config(GI)).unwrap();
        assert_eq!(removed, vec!["dev.ghost".to_owned()]);
        assert!(!root.0.join("volumes/dev.ghost").exists());
        // A leftover appearing later (e.g. an interrupted delete) is wiped by create.
        fs::create_dir_all(root.0.join("volumes/dev.late")).unwrap();
        fs::write(root.0.join("volumes/dev.late/secret"), b"old").unwrap();
        driver.create_volume(&request("dev", "late", 1)).unwrap();
        assert!(!root.0.join("volumes/dev.late/secret").exists());
    }

    #[test]
    fn a_corrupt_ledger_is_an_error_not_an_empty_disk() {
        let root = TempRoot::new();
        fs::write(root.0.join(LEDGER), b"{ not json").unwrap();
        let err = Driver::open(&root.config(GI)).unwrap_err();
        assert!(matches!(&err, StorageError::Io(m) if m.contains("corrupt")), "{err:?}");
    }

    #[test]
    fn requests_are_validated() {
        let root = TempRoot::new();
        let mut driver = root.open(10 * GI);
        let invalid = |r: Result<Volume, StorageError>| matches!(r, Err(StorageError::Invalid(_)));
        assert!(invalid(driver.create_volume(&request("Dev", "data", 1))));
        assert!(invalid(driver.create_volume(&request("dev", "../etc", 1))));
        assert!(invalid(driver.create_volume(&request("dev", "a/b", 1))));
        assert!(invalid(driver.create_volume(&request("dev", "", 1))));
        assert!(invalid(driver.create_volume(&request("dev.x", "data", 1))));
        assert!(invalid(driver.create_volume(&request("dev", "data", 0))));
        let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        assert_eq!(long.len(), 253, "a valid name");
        assert!(invalid(driver.create_volume(&request("dev", &long, 1))), "id longer than 255");
        let mut with_parameter = request("dev", "data", 1);
        with_parameter.parameters.push(("fstype".into(), "ext4".into()));
        assert!(matches!(driver.create_volume(&with_parameter), Err(StorageError::Invalid(m)) if m.contains("fstype")));
        assert!(driver.create_volume(&request("dev", "data.v1-2", 1)).is_ok());
        assert_eq!(fs::read_dir(root.0.join(VOLUMES)).unwrap().count(), 1);
    }

    #[test]
    fn config_and_quantities() {
        let pairs = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert_eq!(Config::parse(&[]).unwrap(), Config::default());
        assert_eq!(Config::parse(&pairs("capacity", "10Gi")).unwrap().capacity, 10 * GI);
        assert_eq!(Config::parse(&pairs("root", "/data")).unwrap().root, PathBuf::from("/data"));
        assert!(Config::parse(&pairs("capacity", "ten")).unwrap_err().starts_with("capacity"));
        assert!(Config::parse(&pairs("size", "1")).unwrap_err().contains("unknown config key `size`"));
        assert_eq!(parse_quantity("1500"), Some(1500));
        assert_eq!(parse_quantity("2k"), Some(2000));
        assert_eq!(parse_quantity("3Mi"), Some(3 << 20));
        assert_eq!(parse_quantity("1G"), Some(1_000_000_000));
        assert_eq!(parse_quantity("Gi"), None);
        assert_eq!(parse_quantity("1.5Gi"), None);
        assert_eq!(parse_quantity("99999999999Pi"), None);
        assert_eq!(format_bytes(10 * GI), "10Gi");
    }
}
