//! `kapsel push FILE NAME:TAG [-n NS]`: upload a workload image (a Wasm
//! component built for wasm32-wasip2) into the namespace's `Artifact`
//! NAME and point TAG at it; pods then name it as `image: NAME:TAG`. A file
//! over the server's cap (64 MiB) is refused before it is sent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use kapsel_api::kinds::artifact::{ARTIFACT, ImageReference};
use kapsel_client::{Client, ConnectionArgs};
use reqwest::Method;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The component file (`.wasm`).
    file: PathBuf,
    /// `NAME:TAG` (`NAME` alone is `NAME:latest`).
    image: String,
    /// The namespace (default: the kubeconfig's).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
}

pub async fn run(connection: &ConnectionArgs, args: PushArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(connection)?;
    let (name, tag) = match ImageReference::parse(&args.image).map_err(anyhow::Error::msg)? {
        ImageReference::Tag { name, tag } => (name, tag),
        ImageReference::Digest { .. } => anyhow::bail!("push to NAME:TAG; the digest is the server's to compute"),
    };
    let length = std::fs::metadata(&args.file).with_context(|| format!("reading {}", args.file.display()))?.len();
    let limit = kapsel_server::artifacts::MAX_PUSH_BYTES;
    if length > u64::try_from(limit).unwrap_or(u64::MAX) {
        anyhow::bail!("{} is {length} bytes: a push is at most {limit} bytes ({} MiB)", args.file.display(), limit >> 20);
    }
    let namespace = args.namespace.unwrap_or_else(|| client.default_namespace.clone());
    let path = format!("{}/{name}/push?tag={tag}", ARTIFACT.collection_path(Some(&namespace)));
    let artifact = client
        .upload_file(Method::POST, &path, "application/wasm", &args.file)
        .await
        .with_context(|| format!("pushing {} as {name}:{tag}", args.file.display()))?;
    let digest = artifact.pointer(&format!("/spec/tags/{tag}")).and_then(Value::as_str).unwrap_or_default();
    let size = artifact
        .pointer("/spec/images")
        .and_then(Value::as_array)
        .and_then(|images| images.iter().find(|i| i["digest"] == digest))
        .and_then(|i| i["size"].as_u64())
        .unwrap_or_default();
    println!("pushed {name}:{tag} to namespace {namespace} ({digest}, {size} bytes)");
    Ok(ExitCode::SUCCESS)
}
