//! Controllers of the supervisor: loops that drive stored objects towards
//! what they say. Each reads from the store (the cache on SQLite) and
//! writes through the same store, so it is restart-safe: whatever it did
//! not finish, it finds again on its next pass. A periodic controller is a
//! pass function given to [`Periodic`], which owns the loop; every loop
//! runs under [`supervise`] (`kapsel_daemon::task`), which starts it again
//! after a panic.

pub mod audit;
pub mod namespace;
pub mod node_lifecycle;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kapsel_daemon::task::supervise;
use tokio::sync::Notify;

use crate::App;

/// How often plug-ins' call counters and health reach their status.
pub const PLUGIN_STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Starts every controller; they stop when the server stops.
pub fn start(app: &App) {
    let passes = AtomicU32::new(0);
    Periodic::new("namespace", namespace::PASS_INTERVAL)
        .start(app, move |app| namespace::pass(app, passes.fetch_add(1, Ordering::Relaxed)));
    Periodic::new("plugin-status", PLUGIN_STATUS_INTERVAL)
        .with_last_pass()
        .start(app, |app| async move { app.plugins.flush_status().await });
    Periodic::new("quota-resync", crate::quota::RESYNC_INTERVAL).start(app, crate::quota::resync);
    Periodic::new("blob-collection", crate::artifacts::BLOB_COLLECTION_INTERVAL).start(app, crate::artifacts::collect_blobs);
    let releasing = app.clone();
    supervise("pod-address-release", app.stopping.clone(), move || crate::pod_network::release(releasing.clone()));
}

/// A controller that runs a pass every `period`, the first at once, until
/// the server stops: the loop every periodic controller would otherwise
/// write. Under [`supervise`] (a pass that panics ends that pass, not the
/// controller); a pass that takes longer than the period delays the next
/// instead of bunching them; each pass's length is logged at debug level,
/// and a warning says when a pass took longer than its period. A pass can
/// also be asked for at once ([`Activation::now`]).
#[derive(Debug, Clone, Copy)]
pub struct Periodic {
    name: &'static str,
    period: Duration,
    last_pass: bool,
}

/// Asks a [`Periodic`] controller for a pass now, not at its next tick.
#[derive(Debug, Clone)]
pub struct Activation(Arc<Notify>);

impl Activation {
    /// The controller runs a pass as soon as it is free (several requests before it starts make one pass).
    pub fn now(&self) {
        self.0.notify_one();
    }
}

impl Periodic {
    pub fn new(name: &'static str, period: Duration) -> Periodic {
        Periodic { name, period, last_pass: false }
    }

    /// Runs one more pass when the server stops (what the last moments changed still gets written).
    pub fn with_last_pass(self) -> Periodic {
        Periodic { last_pass: true, ..self }
    }

    /// Starts the controller: `pass` gets the application each time.
    pub fn start<F, Fut>(self, app: &App, pass: F) -> Activation
    where
        F: Fn(App) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.start_with(app.clone(), app.stopping.clone(), pass)
    }

    /// Starts the controller with any `context` for its passes, until `stopping` turns true.
    pub fn start_with<C, F, Fut>(self, context: C, stopping: tokio::sync::watch::Receiver<bool>, pass: F) -> Activation
    where
        C: Clone + Send + Sync + 'static,
        F: Fn(C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let activation = Activation(Arc::new(Notify::new()));
        let pass = Arc::new(pass);
        let asked = activation.0.clone();
        let looping = stopping.clone();
        supervise(self.name, stopping, move || self.run(context.clone(), looping.clone(), Arc::clone(&pass), Arc::clone(&asked)));
        activation
    }

    async fn run<C, F, Fut>(self, context: C, mut stopping: tokio::sync::watch::Receiver<bool>, pass: Arc<F>, asked: Arc<Notify>)
    where
        C: Clone,
        F: Fn(C) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut ticker = tokio::time::interval(self.period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => break,
                _ = ticker.tick() => {}
                () = asked.notified() => {}
            }
            self.timed(pass(context.clone())).await;
        }
        if self.last_pass {
            self.timed(pass(context)).await;
        }
    }

    async fn timed(&self, pass: impl Future<Output = ()>) {
        let started = std::time::Instant::now();
        pass.await;
        let took = started.elapsed();
        if took > self.period {
            tracing::warn!(
                controller = self.name,
                took_ms = took.as_millis() as u64,
                period_ms = self.period.as_millis() as u64,
                "a pass took longer than its period"
            );
        } else {
            tracing::debug!(controller = self.name, took_us = took.as_micros() as u64, "pass done");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_periodic_controller_runs_at_once_then_every_period_on_demand_and_once_more_at_the_end() {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let runs = Arc::new(AtomicUsize::new(0));
        let activation =
            Periodic::new("test", Duration::from_secs(10)).with_last_pass().start_with(runs.clone(), stopping, |runs| async move {
                runs.fetch_add(1, Ordering::SeqCst);
            });
        let settle = || tokio::time::sleep(Duration::from_millis(1));
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the first pass runs at once");
        tokio::time::sleep(Duration::from_secs(10)).await;
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "then one every period");
        activation.now();
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "and one when asked");
        stop.send(true).unwrap();
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 4, "and a last one when the server stops");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4, "then none");
    }
}
