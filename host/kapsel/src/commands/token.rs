//! `kapsel token create|list|revoke`: IT admins issue bearer tokens to users
//! with roles in namespaces (or to node agents: `--node NAME`), see them,
//! and revoke them.

use std::process::ExitCode;

use anyhow::bail;
use kapsel_api::kinds::token::{Role, TOKEN};
use kapsel_client::{Client, ConnectionArgs};
use serde_json::{Value, json};

use crate::commands::object_path;
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Issue a token; prints the secret once.
    Create {
        /// The user the token authenticates as.
        #[arg(long, required_unless_present = "node")]
        user: Option<String>,
        /// A node agent's token for the node NAME (for `kapsel node --token`): it may
        /// register that node, renew its lease and report the status of the pods bound to it.
        #[arg(long, conflicts_with_all = ["user", "namespaces", "roles", "admin"])]
        node: Option<String>,
        /// A namespace to grant a role in; pair each with a --role.
        #[arg(long = "namespace", short = 'n')]
        namespaces: Vec<String>,
        /// The role in the matching --namespace: view, edit or owner.
        #[arg(long = "role", value_parser = clap::builder::PossibleValuesParser::new(Role::NAMES))]
        roles: Vec<String>,
        /// Make the user an IT admin (every verb on every kind).
        #[arg(long)]
        admin: bool,
        /// Expiry as an RFC 3339 time, e.g. 2027-01-01T00:00:00Z.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke tokens by name.
    Revoke {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub async fn run(connection: &ConnectionArgs, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let client = Client::connect(connection)?;
    match command {
        TokenCommand::Create { user, node, namespaces, roles, admin, expires_at } => {
            if namespaces.len() != roles.len() {
                bail!("give one --role for each --namespace (got {} namespaces and {} roles)", namespaces.len(), roles.len());
            }
            let grants: Vec<Value> = namespaces.iter().zip(&roles).map(|(ns, role)| json!({"namespace": ns, "role": role})).collect();
            let user = match (&node, user) {
                (Some(node), _) => kapsel_api::kinds::token::node_user(node),
                (None, Some(user)) => user,
                (None, None) => bail!("give --user (or --node for a node agent's token)"),
            };
            let prefix: String = user.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
            let mut spec = json!({"user": user, "admin": admin, "roles": grants});
            if let Some(node) = &node {
                spec["node"] = json!(node);
            }
            if let Some(expiry) = expires_at {
                spec["expiresAt"] = json!(expiry);
            }
            let token = json!({"apiVersion": TOKEN.api_version(), "kind": TOKEN.kind, "metadata": {"generateName": format!("{}-", prefix.trim_matches('-'))}, "spec": spec});
            let created = client.post(&TOKEN.collection_path(None), &token).await?;
            let name = kapsel_api::object::name(&created).unwrap_or_default();
            let secret = created.pointer("/status/token").and_then(Value::as_str).unwrap_or_default();
            eprintln!("token {name:?} created for user {user:?}; this is the only time its secret is shown:");
            println!("{secret}");
        }
        TokenCommand::List => {
            let list = client.get(&TOKEN.collection_path(None)).await?;
            let items = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
            let (headers, rows) = output::object_table(&TOKEN, &items, false, false);
            output::print_table(&headers, &rows);
        }
        TokenCommand::Revoke { names } => {
            for name in names {
                client.delete(&object_path(&TOKEN, None, &name)).await?;
                println!("token {name:?} revoked");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
