//! The `kapsel` binary: the supervisor (`kapsel serve`), the CLI that talks
//! to it (`apply`, `get`, `describe`, `create from-template`, `delete`, `token`, `plugin`, `policy`),
//! benchmarks (`kapsel bench api|plugin`) and the node agent (`kapsel node`).
//! Commands are thin: they parse flags and call `kapsel_client` (HTTP to
//! the API), `kapsel_server::serve` or `kapsel_agent`; this binary wires
//! the supervisor to its own host's agent ([`local_node`]).

mod bench;
mod bench_http;
mod commands;
mod local_node;
mod output;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "kapsel", version, about = "Kapsel: a multi-tenant workload platform with a Kubernetes-style API and Wasm plug-ins")]
struct Cli {
    #[command(flatten)]
    connection: kapsel_client::ConnectionArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the supervisor: the Kubernetes-style API server and its datastore.
    Serve(ServeArgs),
    /// Create or update objects from YAML or JSON files (multi-document YAML, directories, `-` for stdin).
    Apply(commands::apply::ApplyArgs),
    /// List objects of a kind, or show one.
    Get(commands::get::GetArgs),
    /// Create objects from IT's catalogue: `kapsel create from-template NAME --set key=value`.
    #[command(subcommand)]
    Create(commands::create::CreateCommand),
    /// Show one object in detail.
    Describe(commands::get::DescribeArgs),
    /// Delete an object.
    Delete(commands::delete::DeleteArgs),
    /// Issue, list and revoke bearer tokens (IT admins).
    #[command(subcommand)]
    Token(commands::token::TokenCommand),
    /// Print a container's log (`-f` to follow it): `kapsel logs hello`.
    Logs(commands::logs::LogsArgs),
    /// Push a workload image (a wasm32-wasip2 component) as NAME:TAG into a namespace: `kapsel push app.wasm app:1`.
    Push(commands::push::PushArgs),
    /// Upload Wasm plug-ins and roll them back (IT admins); test them locally.
    #[command(subcommand)]
    Plugin(commands::plugin::PluginCommand),
    /// Admission policies: `kapsel policy test POLICY.yaml --object OBJECT.yaml`, `kapsel policy audit NAME`.
    #[command(subcommand)]
    Policy(commands::policy::PolicyCommand),
    /// Run a node agent: register this host as a Node, renew its lease (`--server URL --token NODE-TOKEN`).
    Node(kapsel_agent::NodeArgs),
    /// Measure the platform (`kapsel bench api|plugin|admission|schedule`).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Directory for the database, the admin token and the kubeconfig; created on first start.
    #[arg(long, env = "KAPSEL_DATA_DIR", default_value = "./kapsel-data")]
    data_dir: PathBuf,
    /// Address and port the API listens on.
    #[arg(long, env = "KAPSEL_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Datastore URL: `postgres://user@host:5432/db`, or `sqlite://PATH`. Default: SQLite in the data directory.
    #[arg(long, env = "KAPSEL_DATASTORE")]
    datastore: Option<String>,
    /// How many of the newest changes to keep for watches to resume from; older ones are compacted.
    #[arg(long, default_value_t = 10_000)]
    retained_changes: i64,
    /// Seconds between compactions of the change log.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    compaction_interval: u64,
    /// Extra DNS name or IP address for the server certificate (repeatable).
    #[arg(long)]
    tls_san: Vec<String>,
    /// On first start, do not install the default plug-ins (spread, namespace-ipam, local-volumes).
    #[arg(long)]
    no_default_plugins: bool,
    /// Seconds between admission audits (every policy against the existing objects it matches; results in its status); 0 turns the periodic audit off.
    #[arg(long, default_value_t = kapsel_server::controllers::audit::DEFAULT_INTERVAL.as_secs())]
    audit_interval: u64,
    /// Do not run a node agent for this host in-process (only `kapsel node` agents elsewhere run pods).
    #[arg(long)]
    no_local_node: bool,
    /// The name of this host's node (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Seconds this host's node agent (a child process that outlives `kapsel serve`, so a restart or upgrade restarts no pod) keeps its pods while the supervisor is unreachable, before it stops with them.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    local_node_linger: u64,
    /// The memory limit this host's node agent gives a container that sets no `limits.memory` (after LimitRange defaults), as a quantity.
    #[arg(long, default_value = "512Mi")]
    local_node_default_memory_limit: String,
    /// Where this host's node agent serves tenants' Services over plain HTTP (`curl -H 'Host: web.dev'
    /// http://127.0.0.1:8080/` or `curl http://127.0.0.1:8080/dev/web/`); port 0: any free port, published
    /// in the Node's `kapsel.io/ingress` annotation.
    #[arg(long, default_value = "127.0.0.1:8080")]
    ingress_listen: SocketAddr,
    /// Seconds a pod has to start answering a request through this host's ingress (then 504).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    ingress_request_timeout: u64,
    /// Seconds a node stays lost (no lease renewal for 10 s) before its pods are marked Failed.
    #[arg(long, default_value_t = 30)]
    node_pod_grace: u64,
    /// The most watches one identity (a tenant's or a node's token; IT admins are not limited) may hold open at once; one more is refused with 429.
    #[arg(long, default_value_t = kapsel_server::watches::DEFAULT_MAX_WATCHES_PER_IDENTITY as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_watches_per_identity: u64,
    /// The most AdmissionPolicies a namespace's tenants may create (IT admins are not limited; a ResourceQuota on count/admissionpolicies.kapsel.io can set a lower cap per namespace).
    #[arg(long, default_value_t = kapsel_server::admission::MAX_NAMESPACE_POLICIES)]
    max_namespace_policies: usize,
    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// Logs to stderr at `RUST_LOG`'s levels, or from `default_level` up.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS implementation for the whole process (server and client): rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Admission policies are compiled and evaluated recursively on the runtime's threads (`serve`
    // runs on one, not on the main thread): they get the stack that needs.
    let runtime = match tokio::runtime::Builder::new_multi_thread().thread_stack_size(kapsel_admission::STACK_BYTES).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", kapsel_client::describe_error(&error));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_format, "info");
            let config = kapsel_server::serve::ServeConfig {
                data_dir: args.data_dir.clone(),
                listen: args.listen,
                datastore: args.datastore,
                store: kapsel_store::StoreOptions {
                    retained_changes: args.retained_changes,
                    compaction_interval: Some(Duration::from_secs(args.compaction_interval)),
                    ..Default::default()
                },
                tls_san: args.tls_san,
                default_plugins: !args.no_default_plugins,
                audit_interval: Duration::from_secs(args.audit_interval),
                node_lifecycle: kapsel_server::controllers::node_lifecycle::NodeLifecycleOptions {
                    pod_grace: Duration::from_secs(args.node_pod_grace),
                    ..Default::default()
                },
                local_node: if args.no_local_node {
                    local_node::stop_recorded(&args.data_dir.join(kapsel_server::serve::NODE_DIR));
                    None
                } else {
                    let agent = local_node::LocalAgent {
                        program: std::env::current_exe().context("finding this binary, to run the node agent")?,
                        linger: Duration::from_secs(args.local_node_linger),
                        default_memory_limit: args.local_node_default_memory_limit,
                        ingress_listen: args.ingress_listen,
                        ingress_request_timeout: args.ingress_request_timeout,
                    };
                    Some(local_node(args.node_name, agent)?)
                },
                max_watches_per_identity: usize::try_from(args.max_watches_per_identity).unwrap_or(usize::MAX),
                max_namespace_policies: args.max_namespace_policies,
            };
            // On a runtime thread, whose stack fits the policies it loads at start.
            tokio::spawn(kapsel_server::serve::run(config)).await.context("the server failed")??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply(args) => commands::apply::run(&cli.connection, args).await,
        Command::Create(command) => commands::create::run(&cli.connection, command).await,
        Command::Get(args) => commands::get::run(&cli.connection, args).await,
        Command::Describe(args) => commands::get::describe(&cli.connection, args).await,
        Command::Delete(args) => commands::delete::run(&cli.connection, args).await,
        Command::Token(command) => commands::token::run(&cli.connection, command).await,
        Command::Plugin(command) => commands::plugin::run(&cli.connection, command).await,
        Command::Push(args) => commands::push::run(&cli.connection, args).await,
        Command::Logs(args) => commands::logs::run(&cli.connection, args).await,
        Command::Policy(command) => commands::policy::run(&cli.connection, command).await,
        Command::Bench(command) => {
            // What goes wrong in the in-process benches (a plug-in that fails to load, say); figures go to stdout.
            init_logging(LogFormat::Text, "warn");
            bench::run(&cli.connection, command).await
        }
        Command::Node(args) => {
            init_logging(LogFormat::Text, "info");
            kapsel_agent::command(kapsel_client::Client::connect(&cli.connection)?, args).await
        }
    }
}

/// The embedded node agent of `kapsel serve`: `kapsel node` for this host,
/// run from this binary as a child process that outlives the supervisor
/// ([`local_node`]), reaching the server over HTTPS with the node token
/// serve issues it.
fn local_node(name: Option<String>, supervisor: local_node::LocalAgent) -> anyhow::Result<kapsel_server::serve::LocalNode> {
    let name = match name {
        Some(name) => name,
        None => kapsel_agent::host_name()?,
    };
    kapsel_api::validation::dns1123_subdomain(&name).map_err(|e| anyhow::anyhow!("--node-name {name:?}: {e}"))?;
    kapsel_agent::at_least_a_mebibyte(&supervisor.default_memory_limit, "--local-node-default-memory-limit")?;
    let agent = std::sync::Arc::new(move |context: kapsel_server::serve::LocalNodeContext| {
        let supervisor = supervisor.clone();
        Box::pin(async move { supervisor.supervise(context).await }) as futures::future::BoxFuture<'static, anyhow::Result<()>>
    });
    Ok(kapsel_server::serve::LocalNode { name, agent })
}
