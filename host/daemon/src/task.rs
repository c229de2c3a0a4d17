//! Long-lived tasks that outlive their bugs: [`supervise`] runs a loop as
//! a task and starts it again after a panic, so a bug that input reaches
//! ends one pass of one loop (a supervisor's controller, a node agent's pod
//! sync), never the loop.

use std::future::Future;
use std::time::Duration;

/// How long a loop that panicked waits before it starts again.
const RESTART_AFTER_PANIC: Duration = Duration::from_secs(1);

/// Runs the loop `start` makes as a task, and starts it again (after a
/// second, logging the panic) whenever it panics, until `stopping` turns
/// true: a bug that input reaches ends one pass of one controller, never
/// the controller. A loop that returns is done.
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
                    let message = panic_message(panic.as_ref());
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

/// What a caught panic says: its `&str` or `String` payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied()).unwrap_or("(no message)")
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

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        let text = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(text.as_ref()), "plain");
        let formatted = std::panic::catch_unwind(|| panic!("with {}", 42)).unwrap_err();
        assert_eq!(panic_message(formatted.as_ref()), "with 42");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(other.as_ref()), "(no message)");
    }
}
