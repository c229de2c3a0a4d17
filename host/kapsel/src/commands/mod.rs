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

/// How the CLI reads YAML (manifests, policy and plug-in cases): as the API
/// server reads a YAML body, so that a manifest means the same applied by
/// `kapsel` or sent as YAML. Its scalars are YAML 1.2's (only `true` and
/// `false` are booleans; `0755` and `1_000` stay strings; `.inf` and `.nan`
/// become null, as JSON has neither), `<<` is an ordinary key, and a
/// repeated key's last value is taken.
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        null_as_string: true,
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
        merge_keys: serde_saphyr::MergeKeyPolicy::AsOrdinary,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
    }
}

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
