//! The embedded node agent of `kapsel serve`, as a child process: `kapsel
//! node` run from this same binary, so that no pod can exhaust the
//! supervisor (its memory, its threads, its runtime), and so that the pods
//! outlive the supervisor.
//!
//! The agent runs in its own process group (a ctrl-c in the terminal stops
//! the supervisor only) and logs to `DATA/node/agent.log`. When `kapsel
//! serve` stops, the agent and its pods go on; a `kapsel serve` started
//! again on the same data directory finds the agent through
//! `DATA/node/agent.json` and adopts it instead of starting another, so
//! restarting or upgrading the supervisor restarts no pod. An agent whose
//! supervisor has been unreachable for `--local-node-linger` stops with its
//! pods, so a supervisor that is gone for good leaves nothing behind. The
//! supervisor restarts an agent that dies, with back-off; its pods are then
//! taken over as after any agent restart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// What the supervisor records of the agent it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub pid: i32,
    /// The supervisor URL the agent was started for.
    pub server: String,
    /// The node's name.
    pub name: String,
}

/// The file that records the running agent, in the agent's directory.
pub const AGENT_RECORD_FILE: &str = "agent.json";
/// The agent's log, in the agent's directory (the previous run's is kept as `agent.log.1`).
pub const AGENT_LOG_FILE: &str = "agent.log";

/// How the embedded agent is started and kept.
#[derive(Debug, Clone)]
pub struct LocalAgent {
    /// The binary to run (`kapsel` itself).
    pub program: PathBuf,
    /// How long the agent keeps its pods while the supervisor is unreachable.
    pub linger: Duration,
    /// The memory limit of a container that sets none (`kapsel node --default-memory-limit`).
    pub default_memory_limit: String,
    /// Where the agent's ingress listens (`kapsel node --ingress-listen`).
    pub ingress_listen: std::net::SocketAddr,
    /// Seconds a pod has to start answering through it (`kapsel node --ingress-request-timeout`).
    pub ingress_request_timeout: u64,
}

impl LocalAgent {
    /// Keeps the agent of `context` running until the supervisor stops
    /// (which leaves the agent running).
    pub async fn supervise(&self, context: kapsel_server::serve::LocalNodeContext) -> anyhow::Result<()> {
        let mut stopping = context.stopping.clone();
        std::fs::create_dir_all(&context.data_dir).with_context(|| format!("creating {}", context.data_dir.display()))?;
        let record_path = context.data_dir.join(AGENT_RECORD_FILE);
        let mut backoff = Duration::from_secs(1);
        loop {
            let pid = match adoptable(&record_path, &context) {
                Some(pid) => {
                    tracing::info!(node = %context.name, pid, "adopted the running node agent: its pods go on");
                    pid
                }
                None => {
                    let pid = self.start(&context)?;
                    let record = AgentRecord { pid, server: context.server.clone(), name: context.name.clone() };
                    kapsel_daemon::files::write_atomically(&record_path, &serde_json::to_vec(&record)?, 0o600)?;
                    tracing::info!(node = %context.name, pid, log = %context.data_dir.join(AGENT_LOG_FILE).display(), "started the node agent");
                    pid
                }
            };
            let started = std::time::Instant::now();
            // Watch the agent until it ends or the supervisor stops.
            loop {
                tokio::select! {
                    _ = stopping.wait_for(|stop| *stop) => {
                        tracing::info!(node = %context.name, pid, "the node agent keeps running its pods while the supervisor is away");
                        return Ok(());
                    }
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                if !alive(pid) {
                    break;
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_secs(1);
            }
            tracing::error!(node = %context.name, pid, retry_in = ?backoff, "the node agent ended; starting it again (see its log)");
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Starts `kapsel node` for `context`, in its own process group, logging to its log file.
    fn start(&self, context: &kapsel_server::serve::LocalNodeContext) -> anyhow::Result<i32> {
        let log_path = context.data_dir.join(AGENT_LOG_FILE);
        if log_path.exists() {
            let _ = std::fs::rename(&log_path, context.data_dir.join(format!("{AGENT_LOG_FILE}.1")));
        }
        let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = tokio::process::Command::new(&self.program);
        command
            .arg("node")
            .arg("--server")
            .arg(&context.server)
            .arg("--certificate-authority")
            .arg(&context.ca_file)
            .arg("--name")
            .arg(&context.name)
            .arg("--data-dir")
            .arg(&context.data_dir)
            // The supervisor reaches it on loopback, at any free port.
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--supervisor-linger")
            .arg(self.linger.as_secs().to_string())
            .arg("--default-memory-limit")
            .arg(&self.default_memory_limit)
            .arg("--ingress-listen")
            .arg(self.ingress_listen.to_string())
            .arg("--ingress-request-timeout")
            .arg(self.ingress_request_timeout.to_string())
            // The token travels in the environment, not on the command line others can read.
            .env("KAPSEL_TOKEN", &context.token)
            .env_remove("KAPSEL_SERVER")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        let child = command.spawn().with_context(|| format!("starting {} node", self.program.display()))?;
        let pid = child.id().context("the node agent has no process id")?;
        // Reap it when it ends (while this supervisor lives); the supervision loop watches the pid.
        tokio::spawn(async move {
            let mut child = child;
            let _ = child.wait().await;
        });
        i32::try_from(pid).context("process id out of range")
    }
}

/// The pid of a running agent this supervisor may adopt: recorded for the
/// same server and node, and alive as a `kapsel node` process. An agent
/// recorded for another server address is stopped (it could not reach this
/// one).
fn adoptable(record_path: &Path, context: &kapsel_server::serve::LocalNodeContext) -> Option<i32> {
    let record: AgentRecord = serde_json::from_slice(&std::fs::read(record_path).ok()?).ok()?;
    if !alive(record.pid) || !is_agent(record.pid) {
        return None;
    }
    if record.server == context.server && record.name == context.name {
        return Some(record.pid);
    }
    tracing::warn!(pid = record.pid, was = %record.server, now = %context.server, "stopping the node agent of an earlier supervisor address");
    stop(record.pid);
    None
}

/// Stops the agent recorded in `data_dir` (an agent's directory), if it
/// still runs: one this supervisor will not use (`--no-local-node`), or a
/// bench's.
pub fn stop_recorded(data_dir: &Path) {
    let Ok(bytes) = std::fs::read(data_dir.join(AGENT_RECORD_FILE)) else { return };
    let Ok(record) = serde_json::from_slice::<AgentRecord>(&bytes) else { return };
    if alive(record.pid) && is_agent(record.pid) {
        tracing::info!(pid = record.pid, dir = %data_dir.display(), "stopping the node agent an earlier `kapsel serve` started");
        stop(record.pid);
    }
}

fn pid(pid: i32) -> Option<rustix::process::Pid> {
    rustix::process::Pid::from_raw(pid)
}

/// Whether process `pid` exists (and is not a zombie).
fn alive(raw: i32) -> bool {
    let Some(process) = pid(raw) else { return false };
    if rustix::process::test_kill_process(process).is_err() {
        return false;
    }
    // A zombie (ended, not yet reaped) counts as ended.
    std::fs::read_to_string(format!("/proc/{raw}/stat"))
        .map(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"))
        .unwrap_or(true)
}

/// Whether process `pid` is a `kapsel node` (a recycled pid is not).
fn is_agent(pid: i32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let arguments: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    arguments.get(1).is_some_and(|a| *a == b"node") && arguments.iter().any(|a| *a == b"--supervisor-linger")
}

fn stop(raw: i32) {
    if let Some(process) = pid(raw) {
        let _ = rustix::process::kill_process(process, rustix::process::Signal::TERM);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_not_an_agent() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(alive(me));
        assert!(!is_agent(me));
        assert!(!alive(i32::MAX));
        assert!(!alive(0));
    }

    #[test]
    fn records_round_trip() {
        let record = AgentRecord { pid: 42, server: "https://127.0.0.1:6443".into(), name: "host".into() };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<AgentRecord>(&text).unwrap(), record);
    }
}
