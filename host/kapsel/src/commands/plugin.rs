//! `kapsel plugin push|rollback|test`: IT admins upload Wasm plug-ins and
//! return to the previous version; authors run theirs locally against
//! recorded cases ([`super::plugin_test`]). Listing and deleting are the generic
//! `kapsel get plugins` and `kapsel delete plugin NAME`.

use std::path::PathBuf;
use std::process::ExitCode;

use kapsel_api::kinds::plugin::PLUGIN;
use kapsel_client::{Client, ConnectionArgs};
use reqwest::Method;
use serde_json::Value;

use crate::commands::object_path;

#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Upload a component and make it the plug-in's active version (created if new).
    Push {
        /// The component (`.wasm`, built for wasm32-wasip2).
        file: PathBuf,
        /// The plug-in's name.
        #[arg(long)]
        name: String,
        /// The world it targets: scheduler-extension, storage-driver or network-driver (needed for a new plug-in).
        #[arg(long)]
        world: Option<String>,
        /// A version label, shown in `kapsel get plugins`.
        #[arg(long)]
        version: Option<String>,
    },
    /// Make the version before the last push active again.
    Rollback { name: String },
    /// Run a plug-in locally against recorded cases (no server needed).
    Test(super::plugin_test::TestArgs),
}

pub async fn run(connection: &ConnectionArgs, command: PluginCommand) -> anyhow::Result<ExitCode> {
    let (name, push) = match command {
        PluginCommand::Test(args) => return tokio::task::spawn_blocking(move || super::plugin_test::run(args)).await?,
        PluginCommand::Push { file, name, world, version } => (name, Some((file, world, version))),
        PluginCommand::Rollback { name } => (name, None),
    };
    let client = Client::connect(connection)?;
    let base = object_path(&PLUGIN, None, &name);
    let plugin = match push {
        Some((file, world, version)) => {
            let mut query: Vec<(&str, String)> = Vec::new();
            if let Some(world) = world {
                query.push(("world", world));
            }
            if let Some(version) = version {
                query.push(("version", version));
            }
            let path = format!("{base}/component?{}", serde_urlencoded::to_string(&query)?);
            client.upload_file(Method::POST, &path, "application/wasm", &file).await?
        }
        None => client.send(Method::POST, &format!("{base}/rollback"), None).await?,
    };
    let text = |pointer: &str| plugin.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
    println!("plugin/{} active: {} {} ({})", text("/metadata/name"), text("/spec/world"), text("/spec/version"), text("/spec/digest"));
    Ok(ExitCode::SUCCESS)
}
