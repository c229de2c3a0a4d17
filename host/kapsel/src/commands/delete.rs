//! `kapsel delete KIND NAME`.

use std::process::ExitCode;

use kapsel_client::{Client, ConnectionArgs};

use crate::commands::{namespace_for, object_path, resolve_kind};

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    pub kind: String,
    /// Names of the objects to delete.
    #[arg(required = true)]
    pub names: Vec<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
}

pub async fn run(connection: &ConnectionArgs, args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(connection)?;
    let resource = resolve_kind(&args.kind)?;
    let namespace = namespace_for(resource, args.namespace.as_deref(), &client);
    let mut failed = false;
    for name in &args.names {
        match client.delete(&object_path(resource, namespace, name)).await {
            Ok(_) => println!("{} {name:?} deleted", resource.singular),
            Err(error) => {
                failed = true;
                eprintln!("error: {}", kapsel_client::describe_error(&error));
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
