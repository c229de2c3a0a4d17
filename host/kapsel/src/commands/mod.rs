//! One module per CLI command that talks to the API.

pub mod apply;
pub mod create;
pub mod delete;
pub mod get;
pub mod logs;
pub mod plugin;
pub mod plugin_test;
pub mod policy;
pub mod push;
pub mod token;

use anyhow::Context as _;
use kapsel_api::registry::{self, ResourceType};
use kapsel_client::Client;

/// The kind a command-line name means (`pods`, `po`, `pod`, `Pod`, `tokens.kapsel.io`).
pub fn resolve_kind(name: &str) -> anyhow::Result<&'static ResourceType> {
    registry::resolve(name).with_context(|| {
        let known: Vec<&str> = registry::ALL.iter().map(|r| r.plural).collect();
        format!("the server doesn't have a resource type {name:?} (known: {})", known.join(", "))
    })
}

/// The namespace a command acts in: `-n`, else the kubeconfig's, for namespaced kinds only.
pub fn namespace_for<'a>(resource: &ResourceType, flag: Option<&'a str>, client: &'a Client) -> Option<&'a str> {
    resource.namespaced().then(|| flag.unwrap_or(&client.default_namespace))
}

/// The URL of one object.
pub fn object_path(resource: &ResourceType, namespace: Option<&str>, name: &str) -> String {
    format!("{}/{}", resource.collection_path(namespace), name)
}
