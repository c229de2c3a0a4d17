//! Controllers of the supervisor: loops that drive stored objects towards
//! what they say. Each reads from the store (the cache on SQLite) and
//! writes through the same store, so it is restart-safe: whatever it did
//! not finish, it finds again on its next pass.

pub mod audit;
pub mod namespace;
pub mod node_lifecycle;

use std::future::Future;
use std::time::Duration;

use crate::App;

/// How often plug-ins' call counters and health reach their status.
pub const PLUGIN_STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Starts every controller; they stop when the server stops.
pub fn start(app: &App) {
    let looping = app.clone();
    supervise("namespace", app.stopping.clone(), move || namespace::run(looping.clone()));
    let looping = app.clone();
    supervise("plugin-status", app.stopping.clone(), move || plugin_status(looping.clone()));
    let looping = app.clone();
    supervise("quota-resync", app.stopping.clone(), move || crate::quota::resync(looping.clone()));
    let looping = app.clone();
    supervise("blob-collection", app.stopping.clone(), move || crate::artifacts::collect_blobs(looping.clone()));
}

/// How long a loop that panicked waits before it starts again.
const RESTART_AFTER_PANIC: Duration = Duration::from_secs(1);

/// Runs the loop `start` makes as a task, and starts it again (after a
/// second, logging the panic) whenever it panics, until the server stops:
/// a bug that input reaches ends one pass of one controller, never the
/// controller. A loop that returns is done.
pub fn supervise<F, Fut>(name: &'static str, stopping: tokio::sync::watch::Receiver<bool>, start: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(start()).await {
                Ok(()) => return,
                Err(error) if error.is_panic() => {
                    let panic = error.into_panic();
                    let message = crate::panic_message(panic.as_ref());
                    tracing::error!(controller = name, panic = message, "a controller panicked; starting it again");
                }
                Err(_) => return,
            }
            if *stopping.borrow() {
                return;
            }
            tokio::time::sleep(RESTART_AFTER_PANIC).await;
        }
    });
}

/// Writes plug-ins' counters and health (`Active`/`Degraded`) into their status.
async fn plugin_status(app: App) {
    let mut stopping = app.stopping.clone();
    let mut ticker = tokio::time::interval(PLUGIN_STATUS_INTERVAL);
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => break,
            _ = ticker.tick() => {}
        }
        app.plugins.flush_status().await;
    }
    // What the last calls did still reaches the status.
    app.plugins.flush_status().await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_controller_that_panics_is_started_again() {
        let (_stop, stopping) = tokio::sync::watch::channel(false);
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        supervise("test", stopping, move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("a bug");
                }
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "ran, panicked twice, then ran to its end once");
    }
}
