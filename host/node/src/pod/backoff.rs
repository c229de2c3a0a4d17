//! Kubelet's back-off between restarts of a failing container (and between
//! attempts to pull an image): the base delay, doubled after each failure up
//! to a cap, back to the base after a run that lasted long enough. Durations
//! are written the way Go prints them (`10s`, `1m20s`, `5m0s`), as in
//! kubelet's `back-off 20s restarting failed container=…` message.

use std::time::Duration;

/// The delays of one container (or one image pull).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    reset_after: Duration,
    last: Option<Duration>,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration, reset_after: Duration) -> Self {
        Backoff { base, cap: cap.max(base), reset_after, last: None }
    }

    /// The delay before the next attempt, after a run that lasted `ran_for`.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.reset_after {
            self.last = None;
        }
        let delay = match self.last {
            None => self.base,
            Some(last) => last.saturating_mul(2).min(self.cap),
        };
        self.last = Some(delay);
        delay
    }

    /// Forgets past failures (the next delay is the base).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// A duration as Go's `time.Duration.String` writes it.
pub fn go_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".into();
    }
    if duration < Duration::from_secs(1) {
        let micros = duration.as_micros();
        return if micros.is_multiple_of(1000) { format!("{}ms", micros / 1000) } else { format!("{}µs", micros) };
    }
    let total = duration.as_secs();
    let (hours, minutes, seconds) = (total / 3600, (total / 60) % 60, total % 60);
    let nanos = duration.subsec_nanos();
    let seconds = if nanos == 0 {
        format!("{seconds}s")
    } else {
        let fraction = format!("{nanos:09}");
        format!("{seconds}.{}s", fraction.trim_end_matches('0'))
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, minutes) => format!("{minutes}m{seconds}"),
        (hours, minutes) => format!("{hours}h{minutes}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn delays_double_up_to_the_cap_and_reset_after_a_long_run() {
        let mut backoff = Backoff::new(10 * SECOND, 300 * SECOND, 600 * SECOND);
        let delays: Vec<u64> = (0..7).map(|_| backoff.next_delay(SECOND).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff.next_delay(600 * SECOND), 10 * SECOND);
        assert_eq!(backoff.next_delay(SECOND), 20 * SECOND);
        backoff.reset();
        assert_eq!(backoff.next_delay(SECOND), 10 * SECOND);
    }

    #[test]
    fn durations_read_as_in_kubelet_messages() {
        assert_eq!(go_duration(10 * SECOND), "10s");
        assert_eq!(go_duration(80 * SECOND), "1m20s");
        assert_eq!(go_duration(300 * SECOND), "5m0s");
        assert_eq!(go_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(3723 * SECOND), "1h2m3s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }
}
