//! Controllers of the supervisor: loops that drive stored objects towards
//! what they say. Each reads from the store (the cache on SQLite) and
//! writes through the same store, so it is restart-safe: whatever it did
//! not finish, it finds again on its next pass.

pub mod namespace;

use crate::App;

/// Starts every controller; they stop when the server stops.
pub fn start(app: &App) {
    tokio::spawn(namespace::run(app.store.clone(), app.stopping.clone()));
}
