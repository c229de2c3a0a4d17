//! Controllers of the supervisor: loops that drive stored objects towards
//! what they say. Each reads from the store (the cache on SQLite) and
//! writes through the same store, so it is restart-safe: whatever it did
//! not finish, it finds again on its next pass.

pub mod audit;
pub mod namespace;
pub mod node_lifecycle;

use std::time::Duration;

use crate::App;

/// How often plug-ins' call counters and health reach their status.
pub const PLUGIN_STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Starts every controller; they stop when the server stops.
pub fn start(app: &App) {
    tokio::spawn(namespace::run(app.clone()));
    tokio::spawn(plugin_status(app.clone()));
    tokio::spawn(crate::quota::resync(app.clone()));
    tokio::spawn(crate::artifacts::collect_blobs(app.clone()));
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
