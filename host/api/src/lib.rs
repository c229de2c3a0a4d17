//! Kapsel's API contract, shared by the supervisor, the node agent and the CLI.
//!
//! This crate owns what a client and the server must agree on, and nothing
//! heavier: the registry of resource kinds (group, version, kind, plural,
//! scope, validation), the Kubernetes `Status` error body, label and field
//! selectors, resource quantities, and helpers over objects held as JSON.
//! Objects travel and are stored as `serde_json::Value`; each kind's typed
//! shape (from `k8s-openapi` for the core kinds) is used to validate them.

pub mod fields;
pub mod kinds;
pub mod object;
pub mod quantity;
pub mod registry;
pub mod selector;
pub mod status;
pub mod validation;

pub use quantity::Quantity;
pub use registry::{ResourceType, Scope};
pub use status::{Status, StatusCause, StatusDetails};
pub use validation::FieldError;

/// The API group of Kapsel's own (platform) kinds.
pub const KAPSEL_GROUP: &str = "kapsel.io";
/// The version served for [`KAPSEL_GROUP`].
pub const KAPSEL_VERSION: &str = "v1alpha1";
