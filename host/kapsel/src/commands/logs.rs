//! `kapsel logs [-f] POD [-c CONTAINER] [--tail N] [--previous] [--timestamps] [-n NS]`:
//! a container's log, relayed by the supervisor from the pod's node
//! (`GET …/pods/{name}/log`), written to stdout as it comes.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use futures::StreamExt as _;
use kapsel_api::kinds::pod::POD;
use kapsel_client::{Client, ConnectionArgs};

use crate::commands::object_path;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The pod.
    pod: String,
    /// The container (needed when the pod has several).
    #[arg(long, short = 'c')]
    container: Option<String>,
    /// Keep printing what the container writes, until its run ends.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// The container's previous run (before its last restart).
    #[arg(long, short = 'p')]
    previous: bool,
    /// Prefix each line with when it was written.
    #[arg(long)]
    timestamps: bool,
    /// The namespace (default: the kubeconfig's).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
}

pub async fn run(connection: &ConnectionArgs, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(connection)?;
    let namespace = args.namespace.unwrap_or_else(|| client.default_namespace.clone());
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(container) = args.container {
        query.push(("container", container));
    }
    if args.follow {
        query.push(("follow", "true".into()));
    }
    if let Some(tail) = args.tail {
        query.push(("tailLines", tail.to_string()));
    }
    if args.previous {
        query.push(("previous", "true".into()));
    }
    if args.timestamps {
        query.push(("timestamps", "true".into()));
    }
    let path = format!("{}/log?{}", object_path(&POD, Some(&namespace), &args.pod), serde_urlencoded::to_string(&query)?);
    let response = client.open(&path).await?;
    let mut chunks = response.bytes_stream();
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = chunks.next().await {
        stdout.write_all(&chunk.context("reading the log")?)?;
        stdout.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
