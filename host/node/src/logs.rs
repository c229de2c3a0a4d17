//! Container logs on the node: what a guest writes to stdout and stderr, one
//! file per run of a container at `DATA/pods/<pod-uid>/<container>/<restart-count>.log`,
//! and the readers behind `GET …/pods/{name}/log` (tail, previous run,
//! timestamps, follow).
//!
//! Lines are stored in the CRI format kubelet uses
//! (`2026-11-26T12:00:00.123456789Z stdout F text`): the time the line was
//! written, the stream, `F` for a full line or `P` for a piece of a longer
//! one (lines are cut at [`MAX_LINE_BYTES`]); readers strip the prefix, or
//! keep the time when asked for timestamps. A run's file is capped
//! ([`DEFAULT_MAX_FILE_BYTES`], configurable): past the cap it is rotated to
//! `<n>.log.1` (one rotated file kept), so a chatty guest cannot fill the
//! disk. Only the current and the previous run of a container are kept.
//!
//! All logs of the node together have a budget ([`DEFAULT_BUDGET_BYTES`],
//! `kapsel node --log-budget`): when a run starts or a file rotates and the
//! logs directory holds more, the files of runs that have ended go first,
//! the least recently written first (a pod's `previous` log among them),
//! then the rotated halves of runs still being written; the file a run is
//! writing now is never removed, so the budget holds up to one capped file
//! per running container.
//! Writes never fail the guest: a log that cannot be written is reported
//! through `tracing` and the output dropped.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use tokio::sync::{mpsc, watch};

use crate::lock;

/// The default size at which a run's log file is rotated.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 10 << 20;

/// The default budget of all logs on a node together (1 GiB).
pub const DEFAULT_BUDGET_BYTES: u64 = 1 << 30;

/// Longest piece of a line stored in one record; longer lines are split
/// into partial (`P`) records and joined again by the readers.
pub const MAX_LINE_BYTES: usize = 16 << 10;

/// Which of a guest's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogSource {
    Stdout,
    Stderr,
}

impl LogSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::Stdout => "stdout",
            LogSource::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            LogSource::Stdout => 0,
            LogSource::Stderr => 1,
        }
    }
}

/// What to read from a container's log (the query of `GET …/log`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last this many lines (`tailLines`).
    pub tail_lines: Option<usize>,
    /// The run before the current one (`previous`).
    pub previous: bool,
    /// Prefix each line with the RFC 3339 time it was written (`timestamps`).
    pub timestamps: bool,
}

/// Why a log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The container has not started a run yet.
    #[error("container {container:?} has not started yet")]
    NotStarted { container: String },
    /// `previous` was asked for, but the container has run only once.
    #[error("previous terminated container {container:?} not found")]
    NoPreviousRun { container: String },
    #[error("reading the log of container {container:?}")]
    Io {
        container: String,
        #[source]
        source: io::Error,
    },
}

/// The logs of every container on this node, under `DATA/pods`.
#[derive(Debug, Clone)]
pub struct Logs {
    inner: Arc<LogsInner>,
}

#[derive(Debug)]
struct LogsInner {
    root: PathBuf,
    max_file_bytes: u64,
    /// The most all logs together may hold (see the module docs).
    budget_bytes: u64,
    /// Held while the budget is enforced (one pass at a time; others skip theirs).
    pruning: Mutex<()>,
    /// The runs being written now, by file path: followers wait on these.
    live: Mutex<HashMap<PathBuf, watch::Receiver<Progress>>>,
}

/// How far a live log has come; followers wake on every change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    /// Bytes written to the run's log so far (all files).
    written: u64,
    /// How often the file was rotated.
    rotations: u64,
    /// The run has ended: nothing more will be written.
    closed: bool,
}

impl Logs {
    /// The logs under `data_dir/pods`, each run's file rotated past `max_file_bytes`, with no budget for all of them.
    pub fn new(data_dir: &Path, max_file_bytes: u64) -> Self {
        Logs::with_budget(data_dir, max_file_bytes, u64::MAX)
    }

    /// The logs under `data_dir/pods`, each run's file rotated past
    /// `max_file_bytes`, all of them together held to `budget_bytes`.
    pub fn with_budget(data_dir: &Path, max_file_bytes: u64, budget_bytes: u64) -> Self {
        Logs {
            inner: Arc::new(LogsInner {
                root: data_dir.join("pods"),
                max_file_bytes: max_file_bytes.max(1),
                budget_bytes,
                pruning: Mutex::default(),
                live: Mutex::default(),
            }),
        }
    }

    /// Holds all logs to the budget: removes the files of ended runs, least
    /// recently written first, then rotated files of live runs, until the
    /// total fits; returns the bytes removed. Skipped (0) while another pass runs.
    pub fn enforce_budget(&self) -> u64 {
        self.inner.enforce_budget()
    }

    /// The directory of one container's logs.
    pub fn container_dir(&self, pod_uid: &str, container: &str) -> PathBuf {
        self.inner.root.join(path_safe(pod_uid)).join(path_safe(container))
    }

    /// Starts the log of run `restart_count` of a container, removing every
    /// other run's log but the one before it.
    pub fn create(&self, pod_uid: &str, container: &str, restart_count: u32) -> io::Result<LogFile> {
        let dir = self.container_dir(pod_uid, container);
        std::fs::create_dir_all(&dir)?;
        for (run, _) in runs(&dir)? {
            if run != restart_count && Some(run) != restart_count.checked_sub(1) {
                remove_run(&dir, run);
            }
        }
        let path = dir.join(format!("{restart_count}.log"));
        let _ = std::fs::remove_file(rotated_path(&path));
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
        let (progress, watching) = watch::channel(Progress::default());
        lock(&self.inner.live).insert(path.clone(), watching);
        self.inner.enforce_budget();
        Ok(LogFile {
            inner: Arc::new(Mutex::new(Writer {
                path,
                file: Some(file),
                size: 0,
                max_file_bytes: self.inner.max_file_bytes,
                pending: [Vec::new(), Vec::new()],
                progress,
                closed: false,
                logs: Arc::downgrade(&self.inner),
                failed: false,
            })),
        })
    }

    /// Reads a container's current (or previous) run's log.
    pub async fn read(&self, pod_uid: &str, container: &str, query: &LogQuery) -> Result<Bytes, LogError> {
        let path = self.run_path(pod_uid, container, query.previous)?;
        let query = query.clone();
        let reading = tokio::task::spawn_blocking(move || {
            let mut assembler = Assembler::new(query.timestamps);
            read_run(&path, &mut assembler)?;
            assembler.finish();
            Ok(assembler.take_lines(query.tail_lines))
        });
        match reading.await {
            Ok(result) => result.map_err(|source| LogError::Io { container: container.to_string(), source }),
            Err(failed) => Err(LogError::Io { container: container.to_string(), source: io::Error::other(failed) }),
        }
    }

    /// Streams a container's log: what is there (cut to `tail_lines`), then
    /// what the running guest writes, ending when its run ends (at once when
    /// it is not running, or for `previous`).
    pub fn follow(&self, pod_uid: &str, container: &str, query: &LogQuery) -> Result<LogFollow, LogError> {
        let path = self.run_path(pod_uid, container, query.previous)?;
        let live = if query.previous { None } else { lock(&self.inner.live).get(&path).cloned() };
        let io_error = |source| LogError::Io { container: container.to_string(), source };
        // Open the current file before anything else, so that what is read
        // below and what is followed later join without a gap.
        let current = File::open(&path).map_err(io_error)?;
        let mut assembler = Assembler::new(query.timestamps);
        let rotated = rotated_path(&path);
        if rotated.exists() {
            read_file(&rotated, &mut assembler).map_err(io_error)?;
        }
        let (sender, receiver) = mpsc::channel(16);
        let tail_lines = query.tail_lines;
        tokio::spawn(async move {
            let follower = Follower { path, file: current, assembler, sender };
            follower.run(tail_lines, live).await;
        });
        Ok(LogFollow { receiver })
    }

    /// Removes every log of a pod (when it is gone from the node).
    pub fn remove_pod(&self, pod_uid: &str) -> io::Result<()> {
        match std::fs::remove_dir_all(self.inner.root.join(path_safe(pod_uid))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The pods that have logs on this node (for cleaning up after a restart).
    pub fn pod_uids(&self) -> io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.inner.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut uids = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                uids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        uids.sort();
        Ok(uids)
    }

    /// The file of the container's latest run, or of the one before.
    fn run_path(&self, pod_uid: &str, container: &str, previous: bool) -> Result<PathBuf, LogError> {
        let dir = self.container_dir(pod_uid, container);
        let mut runs = match runs(&dir) {
            Ok(runs) => runs,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(LogError::Io { container: container.to_string(), source }),
        };
        runs.sort_by_key(|(run, _)| std::cmp::Reverse(*run));
        let pick = if previous { runs.get(1) } else { runs.first() };
        match pick {
            Some((_, path)) => Ok(path.clone()),
            None if previous => Err(LogError::NoPreviousRun { container: container.to_string() }),
            None => Err(LogError::NotStarted { container: container.to_string() }),
        }
    }
}

/// The log of one run of a container: the guest's stdout and stderr are
/// written here (see [`LogFile::output`]). Clones share the file. The run's
/// log ends with [`LogFile::close`], or when the last clone is dropped.
#[derive(Clone)]
pub struct LogFile {
    inner: Arc<Mutex<Writer>>,
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile").field("path", &lock(&self.inner).path).finish()
    }
}

impl LogFile {
    /// The file being written.
    pub fn path(&self) -> PathBuf {
        lock(&self.inner).path.clone()
    }

    /// Appends output of `source`; whole lines become records at once,
    /// a trailing piece waits for the rest of its line (or for `close`).
    pub fn write(&self, source: LogSource, bytes: &[u8]) {
        lock(&self.inner).write(source, bytes);
    }

    /// Ends the run's log: pending pieces of lines are written and followers end.
    pub fn close(&self) {
        lock(&self.inner).close();
    }

    /// A guest output stream (stdout or stderr) writing into this log.
    pub fn output(&self, source: LogSource) -> GuestOutput {
        GuestOutput { log: self.clone(), source }
    }
}

struct Writer {
    path: PathBuf,
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    max_file_bytes: u64,
    /// The unfinished line of each stream.
    pending: [Vec<u8>; 2],
    progress: watch::Sender<Progress>,
    closed: bool,
    logs: Weak<LogsInner>,
    /// A write failed (reported once).
    failed: bool,
}

impl Writer {
    fn write(&mut self, source: LogSource, mut bytes: &[u8]) {
        if self.closed {
            return;
        }
        while !bytes.is_empty() {
            let pending = &mut self.pending[source.index()];
            match bytes.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    let mut line = std::mem::take(pending);
                    line.extend_from_slice(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                    self.record_line(source, &line);
                }
                None => {
                    pending.extend_from_slice(bytes);
                    bytes = &[];
                    while self.pending[source.index()].len() >= MAX_LINE_BYTES {
                        let piece: Vec<u8> = self.pending[source.index()].drain(..MAX_LINE_BYTES).collect();
                        self.record(source, 'P', &piece);
                    }
                }
            }
        }
    }

    /// A full line, cut into partial records when it is too long.
    fn record_line(&mut self, source: LogSource, line: &[u8]) {
        let mut pieces = line.chunks(MAX_LINE_BYTES).peekable();
        if pieces.peek().is_none() {
            self.record(source, 'F', b"");
        }
        while let Some(piece) = pieces.next() {
            let tag = if pieces.peek().is_some() { 'P' } else { 'F' };
            self.record(source, tag, piece);
        }
    }

    fn record(&mut self, source: LogSource, tag: char, content: &[u8]) {
        let time = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let mut record = Vec::with_capacity(time.len() + content.len() + 12);
        record.extend_from_slice(time.as_bytes());
        record.push(b' ');
        record.extend_from_slice(source.as_str().as_bytes());
        record.push(b' ');
        record.push(tag as u8);
        record.push(b' ');
        record.extend_from_slice(content);
        record.push(b'\n');
        if let Err(error) = self.append(&record) {
            if !self.failed {
                tracing::warn!(file = %self.path.display(), %error, "cannot write a container's log; its output is dropped");
                self.failed = true;
            }
            return;
        }
        let length = record.len() as u64;
        self.progress.send_modify(|p| p.written = p.written.saturating_add(length));
    }

    fn append(&mut self, record: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size.saturating_add(record.len() as u64) > self.max_file_bytes {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(OpenOptions::new().create(true).append(true).open(&self.path)?),
        };
        file.write_all(record)?;
        self.size = self.size.saturating_add(record.len() as u64);
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        std::fs::rename(&self.path, rotated_path(&self.path))?;
        self.file = Some(OpenOptions::new().create(true).write(true).truncate(true).open(&self.path)?);
        self.size = 0;
        self.progress.send_modify(|p| p.rotations = p.rotations.saturating_add(1));
        if let Some(logs) = self.logs.upgrade() {
            logs.enforce_budget();
        }
        Ok(())
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        for source in [LogSource::Stdout, LogSource::Stderr] {
            let rest = std::mem::take(&mut self.pending[source.index()]);
            if !rest.is_empty() {
                self.record_line(source, &rest);
            }
        }
        self.closed = true;
        self.file = None;
        self.progress.send_modify(|p| p.closed = true);
        if let Some(logs) = self.logs.upgrade() {
            lock(&logs.live).remove(&self.path);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.close();
    }
}

impl LogsInner {
    fn enforce_budget(&self) -> u64 {
        if self.budget_bytes == u64::MAX {
            return 0;
        }
        let Ok(_pass) = self.pruning.try_lock() else { return 0 };
        let live: std::collections::HashSet<PathBuf> = lock(&self.live).keys().cloned().collect();
        let files = match log_files(&self.root) {
            Ok(files) => files,
            Err(error) => {
                tracing::warn!(dir = %self.root.display(), %error, "cannot list the node's logs to hold them to their budget");
                return 0;
            }
        };
        let mut total = files.iter().fold(0u64, |total, file| total.saturating_add(file.bytes));
        if total <= self.budget_bytes {
            return 0;
        }
        // Ended runs first, then rotated halves of live runs; within each, least recently written first.
        // The file a live run writes now is not a candidate.
        let mut candidates: Vec<(bool, std::time::SystemTime, &LogFileEntry)> = files
            .iter()
            .filter_map(|file| {
                let run_is_live = live.contains(&file.run);
                match (run_is_live, file.rotated) {
                    (true, false) => None,
                    (true, true) => Some((true, file.modified, file)),
                    (false, _) => Some((false, file.modified, file)),
                }
            })
            .collect();
        candidates.sort_by_key(|(of_live_run, modified, _)| (*of_live_run, *modified));
        let mut removed = 0u64;
        for (_, _, file) in candidates {
            if total <= self.budget_bytes {
                break;
            }
            match std::fs::remove_file(&file.path) {
                Ok(()) => {
                    total = total.saturating_sub(file.bytes);
                    removed = removed.saturating_add(file.bytes);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => total = total.saturating_sub(file.bytes),
                Err(error) => tracing::warn!(file = %file.path.display(), %error, "cannot remove a log file over the node's log budget"),
            }
        }
        if removed > 0 {
            tracing::info!(
                removed_bytes = removed,
                budget_bytes = self.budget_bytes,
                "old container logs removed to keep the node's log budget"
            );
        }
        removed
    }
}

/// One file under the logs directory.
#[derive(Debug)]
struct LogFileEntry {
    path: PathBuf,
    /// The run's file (`<n>.log`) this file belongs to (itself, or the one it was rotated from).
    run: PathBuf,
    rotated: bool,
    bytes: u64,
    modified: std::time::SystemTime,
}

/// Every run's files under `root` (`<pod>/<container>/<n>.log[.1]`).
fn log_files(root: &Path) -> io::Result<Vec<LogFileEntry>> {
    let mut files = Vec::new();
    let pods = match std::fs::read_dir(root) {
        Ok(pods) => pods,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for pod in pods.flatten() {
        let Ok(containers) = std::fs::read_dir(pod.path()) else { continue };
        for container in containers.flatten() {
            let Ok(entries) = std::fs::read_dir(container.path()) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
                let (run, rotated) = match name.strip_suffix(".1") {
                    Some(base) if base.ends_with(".log") => (path.with_file_name(base), true),
                    _ if name.ends_with(".log") => (path.clone(), false),
                    _ => continue,
                };
                let Ok(metadata) = entry.metadata() else { continue };
                if !metadata.is_file() {
                    continue;
                }
                let modified = metadata.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
                files.push(LogFileEntry { path, run, rotated, bytes: metadata.len(), modified });
            }
        }
    }
    Ok(files)
}

/// A guest's stdout or stderr, written into a [`LogFile`]. It is always
/// ready: a write goes to the file at once.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    log: LogFile,
    source: LogSource,
}

/// Most bytes a guest may hand over in one write (WASI's `check-write` permit).
const WRITE_PERMIT: usize = 64 << 10;

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl wasmtime_wasi::p2::OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.log.write(self.source, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        self.log.write(self.source, bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A followed log: chunks of whole lines, ending when the run ends.
#[derive(Debug)]
pub struct LogFollow {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
}

impl futures::Stream for LogFollow {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

/// The task behind a [`LogFollow`].
struct Follower {
    path: PathBuf,
    file: File,
    assembler: Assembler,
    sender: mpsc::Sender<io::Result<Bytes>>,
}

impl Follower {
    async fn run(mut self, tail_lines: Option<usize>, live: Option<watch::Receiver<Progress>>) {
        let Some(mut live) = live else {
            // Not running: what is there is all there will be.
            if self.read_on().await {
                self.assembler.finish();
                self.send(tail_lines).await;
            }
            return;
        };
        let seen = *live.borrow_and_update();
        let mut rotations = seen.rotations;
        if !self.read_on().await {
            return;
        }
        if seen.closed {
            // The run ended before the follow began: nothing more will come.
            self.assembler.finish();
        }
        if !self.send(tail_lines).await || seen.closed {
            return;
        }
        loop {
            let progress = match live.changed().await {
                Ok(()) => *live.borrow_and_update(),
                Err(_) => Progress { closed: true, ..*live.borrow() },
            };
            // Read what the current file got, then move to the new file if it was rotated.
            if !self.read_on().await {
                return;
            }
            if progress.rotations != rotations {
                rotations = progress.rotations;
                match File::open(&self.path) {
                    Ok(file) => self.file = file,
                    Err(error) => {
                        let _ = self.sender.send(Err(error)).await;
                        return;
                    }
                }
                if !self.read_on().await {
                    return;
                }
            }
            if progress.closed {
                self.assembler.finish();
            }
            if !self.send(None).await || progress.closed {
                return;
            }
        }
    }

    /// Reads the rest of the current file into the assembler; false when that failed (and was reported).
    async fn read_on(&mut self) -> bool {
        let mut bytes = Vec::new();
        match self.file.read_to_end(&mut bytes) {
            Ok(_) => {
                self.assembler.feed(&bytes);
                true
            }
            Err(error) => {
                let _ = self.sender.send(Err(error)).await;
                false
            }
        }
    }

    /// Sends the lines assembled so far; false when the reader has gone.
    async fn send(&mut self, tail_lines: Option<usize>) -> bool {
        let chunk = self.assembler.take_lines(tail_lines);
        chunk.is_empty() || self.sender.send(Ok(chunk)).await.is_ok()
    }
}

/// Turns stored records back into the guest's lines (joining partial
/// records), with or without their times.
struct Assembler {
    timestamps: bool,
    /// Bytes of a record not yet ended by its newline.
    carry: Vec<u8>,
    /// A line being joined from partial records, per stream: its first time and content.
    partial: [Option<(String, Vec<u8>)>; 2],
    lines: Vec<Vec<u8>>,
}

impl Assembler {
    fn new(timestamps: bool) -> Self {
        Assembler { timestamps, carry: Vec::new(), partial: [None, None], lines: Vec::new() }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            if self.carry.is_empty() {
                self.record(&bytes[..end]);
            } else {
                let mut record = std::mem::take(&mut self.carry);
                record.extend_from_slice(&bytes[..end]);
                self.record(&record);
            }
            bytes = &bytes[end + 1..];
        }
        self.carry.extend_from_slice(bytes);
    }

    fn record(&mut self, record: &[u8]) {
        let Some(parsed) = parse_record(record) else {
            // Not a record of ours: pass it through as it is.
            self.lines.push(record.to_vec());
            return;
        };
        let slot = &mut self.partial[parsed.source.index()];
        let (time, mut content) = match slot.take() {
            Some((time, mut content)) => {
                content.extend_from_slice(parsed.content);
                (time, content)
            }
            None => (parsed.time.to_string(), parsed.content.to_vec()),
        };
        if parsed.partial {
            *slot = Some((time, content));
        } else {
            self.push_line(&time, &mut content);
        }
    }

    fn push_line(&mut self, time: &str, content: &mut Vec<u8>) {
        let mut line = Vec::with_capacity(time.len() + content.len() + 2);
        if self.timestamps {
            line.extend_from_slice(time.as_bytes());
            line.push(b' ');
        }
        line.append(content);
        line.push(b'\n');
        self.lines.push(line);
    }

    /// The end of the run: what is left becomes lines.
    fn finish(&mut self) {
        if !self.carry.is_empty() {
            let record = std::mem::take(&mut self.carry);
            self.record(&record);
        }
        for index in 0..2 {
            if let Some((time, mut content)) = self.partial[index].take() {
                self.push_line(&time, &mut content);
            }
        }
    }

    /// The lines assembled so far (only the last `tail` of them), as one chunk.
    fn take_lines(&mut self, tail: Option<usize>) -> Bytes {
        let lines = std::mem::take(&mut self.lines);
        let skip = tail.map_or(0, |tail| lines.len().saturating_sub(tail));
        Bytes::from(lines.into_iter().skip(skip).flatten().collect::<Vec<u8>>())
    }
}

struct Record<'a> {
    time: &'a str,
    source: LogSource,
    partial: bool,
    content: &'a [u8],
}

/// Splits `TIME STREAM TAG CONTENT`.
fn parse_record(record: &[u8]) -> Option<Record<'_>> {
    let mut fields = record.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?;
    let source = match fields.next()? {
        b"stdout" => LogSource::Stdout,
        b"stderr" => LogSource::Stderr,
        _ => return None,
    };
    let partial = match fields.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Record { time, source, partial, content: fields.next().unwrap_or_default() })
}

/// Reads a run's rotated file (when there is one) and then its current file.
fn read_run(path: &Path, assembler: &mut Assembler) -> io::Result<()> {
    let rotated = rotated_path(path);
    if rotated.exists() {
        read_file(&rotated, assembler)?;
    }
    read_file(path, assembler)
}

fn read_file(path: &Path, assembler: &mut Assembler) -> io::Result<()> {
    match std::fs::read(path) {
        Ok(bytes) => {
            assembler.feed(&bytes);
            Ok(())
        }
        // Rotated away between listing and reading: nothing lost that the caller can still get.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The runs logged in a container's directory: restart count and path of each `<n>.log`.
fn runs(dir: &Path) -> io::Result<Vec<(u32, PathBuf)>> {
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let run = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse().ok());
        if let Some(run) = run {
            runs.push((run, path));
        }
    }
    Ok(runs)
}

fn remove_run(dir: &Path, run: u32) {
    let path = dir.join(format!("{run}.log"));
    let _ = std::fs::remove_file(rotated_path(&path));
    let _ = std::fs::remove_file(&path);
}

fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// A name usable as one path component (uids and container names already are; this keeps it so).
fn path_safe(name: &str) -> String {
    let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') { format!("_{safe}") } else { safe }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn text(bytes: &Bytes) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[tokio::test]
    async fn lines_are_stored_in_cri_format_and_read_back_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path(), DEFAULT_MAX_FILE_BYTES);
        let log = logs.create("uid-1", "main", 0).unwrap();
        log.write(LogSource::Stdout, b"one\ntw");
        log.write(LogSource::Stderr, b"oops\n");
        log.write(LogSource::Stdout, b"o\nunfinished");
        log.close();
        let stored = std::fs::read_to_string(log.path()).unwrap();
        let records: Vec<&str> = stored.lines().collect();
        assert_eq!(records.len(), 4, "{stored}");
        assert!(records[0].ends_with(" stdout F one"), "{stored}");
        assert!(records[1].ends_with(" stderr F oops"), "{stored}");
        assert!(records[3].ends_with(" stdout F unfinished"), "{stored}");
        assert!(chrono::DateTime::parse_from_rfc3339(records[0].split(' ').next().unwrap()).is_ok());

        let all = logs.read("uid-1", "main", &LogQuery::default()).await.unwrap();
        assert_eq!(text(&all), "one\noops\ntwo\nunfinished\n");
        let tail = logs.read("uid-1", "main", &LogQuery { tail_lines: Some(2), ..LogQuery::default() }).await.unwrap();
        assert_eq!(text(&tail), "two\nunfinished\n");
        let stamped = logs.read("uid-1", "main", &LogQuery { timestamps: true, tail_lines: Some(1), ..LogQuery::default() }).await.unwrap();
        let (time, line) = text(&stamped).split_once(' ').map(|(t, l)| (t.to_string(), l.to_string())).unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(&time).is_ok(), "{time}");
        assert_eq!(line, "unfinished\n");
    }

    #[tokio::test]
    async fn long_lines_are_split_and_joined_again() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path(), DEFAULT_MAX_FILE_BYTES);
        let log = logs.create("uid", "main", 0).unwrap();
        let long = "x".repeat(MAX_LINE_BYTES * 2 + 10);
        log.write(LogSource::Stdout, format!("{long}\nshort\n").as_bytes());
        log.close();
        let stored = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(stored.lines().filter(|r| r.contains(" stdout P ")).count(), 2);
        let all = logs.read("uid", "main", &LogQuery::default()).await.unwrap();
        assert_eq!(text(&all), format!("{long}\nshort\n"));
    }

    #[tokio::test]
    async fn a_full_file_is_rotated_once_and_only_two_runs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path(), 400);
        let log = logs.create("uid", "main", 0).unwrap();
        for n in 0..40 {
            log.write(LogSource::Stdout, format!("line {n}\n").as_bytes());
        }
        log.close();
        let path = log.path();
        assert!(std::fs::metadata(&path).unwrap().len() <= 400);
        assert!(rotated_path(&path).exists());
        let all = text(&logs.read("uid", "main", &LogQuery::default()).await.unwrap());
        assert!(all.ends_with("line 39\n"), "{all}");
        assert!(!all.starts_with("line 0\n"), "the oldest lines went with the rotation: {all}");

        logs.create("uid", "main", 1).unwrap().write(LogSource::Stdout, b"second run\n");
        logs.create("uid", "main", 2).unwrap().write(LogSource::Stdout, b"third run\n");
        let container_dir = logs.container_dir("uid", "main");
        let mut files: Vec<String> =
            std::fs::read_dir(&container_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        files.sort();
        assert_eq!(files, ["1.log", "2.log"]);
        assert_eq!(text(&logs.read("uid", "main", &LogQuery::default()).await.unwrap()), "third run\n");
        let previous = LogQuery { previous: true, ..LogQuery::default() };
        assert_eq!(text(&logs.read("uid", "main", &previous).await.unwrap()), "second run\n");
    }

    #[tokio::test]
    async fn reading_what_does_not_exist_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path(), DEFAULT_MAX_FILE_BYTES);
        let error = logs.read("uid", "main", &LogQuery::default()).await.unwrap_err();
        assert!(matches!(error, LogError::NotStarted { .. }), "{error}");
        logs.create("uid", "main", 0).unwrap().close();
        let previous = LogQuery { previous: true, ..LogQuery::default() };
        let error = logs.read("uid", "main", &previous).await.unwrap_err();
        assert_eq!(error.to_string(), "previous terminated container \"main\" not found");
    }

    #[tokio::test]
    async fn follow_streams_new_lines_across_rotations_and_ends_with_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path(), 300);
        let log = logs.create("uid", "main", 0).unwrap();
        for n in 0..3 {
            log.write(LogSource::Stdout, format!("before {n}\n").as_bytes());
        }
        let mut follow = logs.follow("uid", "main", &LogQuery { tail_lines: Some(2), ..LogQuery::default() }).unwrap();
        let first = follow.next().await.unwrap().unwrap();
        assert_eq!(text(&first), "before 1\nbefore 2\n");

        let writer = log.clone();
        let writing = tokio::spawn(async move {
            for n in 0..30 {
                writer.write(LogSource::Stdout, format!("after {n}\n").as_bytes());
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            writer.close();
        });
        let mut followed = String::new();
        while let Some(chunk) = follow.next().await {
            followed.push_str(&text(&chunk.unwrap()));
        }
        writing.await.unwrap();
        let expected: String = (0..30).map(|n| format!("after {n}\n")).collect();
        assert_eq!(followed, expected);

        // A finished run is read and the stream ends at once.
        let chunks: Vec<_> = logs.follow("uid", "main", &LogQuery { tail_lines: Some(1), ..LogQuery::default() }).unwrap().collect().await;
        assert_eq!(chunks.len(), 1);
        assert_eq!(text(chunks[0].as_ref().unwrap()), "after 29\n");
    }

    /// On one thread the follower starts only after the run has ended; a kept clone of the log must not keep it waiting.
    #[tokio::test(flavor = "current_thread")]
    async fn a_follow_begun_as_the_run_ends_ends_too() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path(), DEFAULT_MAX_FILE_BYTES);
        let log = logs.create("uid", "main", 0).unwrap();
        log.write(LogSource::Stdout, b"last words");
        let follow = logs.follow("uid", "main", &LogQuery::default()).unwrap();
        let _kept = log.clone();
        log.close();
        let chunks: Vec<_> = tokio::time::timeout(std::time::Duration::from_secs(5), follow.collect()).await.expect("the follow ends");
        assert_eq!(chunks.len(), 1);
        assert_eq!(text(chunks[0].as_ref().unwrap()), "last words\n");
    }

    /// Sets a file's modification time `seconds` after the epoch (the budget removes the least recently written first).
    fn written_at(path: &Path, seconds: u64) {
        let file = OpenOptions::new().append(true).open(path).unwrap();
        file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds)).unwrap();
    }

    fn size_of(root: &Path) -> u64 {
        log_files(root).unwrap().iter().map(|f| f.bytes).sum()
    }

    #[test]
    fn the_budget_removes_ended_runs_oldest_first_and_never_a_live_file() {
        let dir = tempfile::tempdir().unwrap();
        // Records of a 100-byte line are 141 bytes: 5 lines are 705 bytes, a 1000-byte file holds 7.
        let logs = Logs::with_budget(dir.path(), 1000, 2500);
        let line = format!("{}\n", "x".repeat(100));
        let exists = |uid: &str| logs.container_dir(uid, "main").join("0.log").exists();
        // Three ended runs of three pods, written at times 30, 10, 20: 2115 bytes, within the budget.
        for (uid, at) in [("newest", 30), ("oldest", 10), ("middle", 20)] {
            let log = logs.create(uid, "main", 0).unwrap();
            for _ in 0..5 {
                log.write(LogSource::Stdout, line.as_bytes());
            }
            log.close();
            written_at(&log.path(), at);
        }
        assert_eq!(size_of(&logs.inner.root), 3 * 705);
        // A live run rotates (987 bytes more): the least recently written ended run goes.
        let live = logs.create("live", "main", 0).unwrap();
        for _ in 0..12 {
            live.write(LogSource::Stdout, line.as_bytes());
        }
        assert!(rotated_path(&live.path()).exists(), "the live run rotated");
        assert!(!exists("oldest"), "the least recently written went first");
        assert!(exists("middle") && exists("newest"));
        written_at(&rotated_path(&live.path()), 100);

        // Another run starts (over budget: the next ended run goes), then rotates: with the last
        // ended run gone it is still over, so the older rotated half of a live run goes too.
        let second = logs.create("second", "main", 0).unwrap();
        assert!(!exists("middle") && exists("newest"));
        for _ in 0..8 {
            second.write(LogSource::Stdout, line.as_bytes());
        }
        assert!(!exists("newest"));
        assert!(!rotated_path(&live.path()).exists(), "the older rotated half went");
        assert!(rotated_path(&second.path()).exists(), "the newer one stays");
        assert!(live.path().exists() && second.path().exists(), "the files runs write now are never removed");
        assert!(size_of(&logs.inner.root) <= 2500, "{} bytes", size_of(&logs.inner.root));
        live.write(LogSource::Stdout, b"still written\n");
        live.close();
        second.close();
        let text = String::from_utf8(std::fs::read(live.path()).unwrap()).unwrap();
        assert!(text.ends_with("stdout F still written\n"), "{text}");
        assert_eq!(logs.enforce_budget(), 0, "within the budget, nothing goes");
    }

    #[test]
    fn without_a_budget_nothing_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path(), 100);
        let log = logs.create("uid", "main", 0).unwrap();
        log.write(LogSource::Stdout, "y".repeat(5000).as_bytes());
        log.close();
        assert_eq!(logs.enforce_budget(), 0);
        assert!(log.path().exists());
    }

    #[test]
    fn path_components_stay_components() {
        assert_eq!(path_safe("0b5c-11ef"), "0b5c-11ef");
        assert_eq!(path_safe("../x"), ".._x");
        assert_eq!(path_safe(".."), "_..");
        assert_eq!(path_safe(""), "_");
    }
}
