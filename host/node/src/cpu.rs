//! CPU limits: bandwidth control for one container, as Linux's CFS quota
//! does it for a cgroup. A container with `limits.cpu` of `m` millicores may
//! run its guest `m/1000 × period` in every period (100 ms by default);
//! once it has, it is held until the period ends.
//!
//! The runtime measures the time the guest itself runs: wasmtime's call
//! hook marks each entry into guest code (the start of a run, a return from
//! a host call) and each exit (a host call, an epoch check, the end of the
//! run), and the store's [`CpuMeter`] adds what lies between to the
//! container's [`CpuThrottle`] — the wall time the
//! guest held its thread, which is the CPU time it used (on a loaded machine
//! more, which only throttles more); time spent waiting in the host (a
//! `sleep`, reading stdin) is not counted. At every epoch tick
//! the epoch callback asks [`CpuMeter::hold_until`] whether the quota is
//! spent: if so the guest yields with a sleep until the period it has paid
//! for ends. Overrunning the quota (a guest checks only at epoch ticks, so it
//! can run up to a tick past it) is a debt paid in the next periods, so the
//! average over time is the limit; quota left unused in a period is lost.
//!
//! A container that serves HTTP runs one store per request, at the same
//! time: their meters share the container's one account, so all its
//! requests together are held to its limit, as the threads of a cgroup are.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lock;

/// Linux's default CFS period (`cpu.cfs_period_us`).
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(100);

/// The smallest quota per period (kubelet's `MinQuotaPeriod`, 1 ms).
pub const MIN_QUOTA: Duration = Duration::from_millis(1);

/// The guest time a container with a limit of `millicores` may use in each
/// `period`, at least [`MIN_QUOTA`]; `None` for 0, which kubelet treats as no limit.
pub fn quota(millicores: u64, period: Duration) -> Option<Duration> {
    if millicores == 0 {
        return None;
    }
    let nanos = period.as_nanos().saturating_mul(u128::from(millicores)) / 1000;
    Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).max(MIN_QUOTA))
}

/// One container's CPU account.
#[derive(Debug, Clone)]
pub struct CpuThrottle {
    quota: Duration,
    period: Duration,
    /// When the current period began.
    period_start: Instant,
    /// Guest time counted against the current period; past the quota it is a debt.
    used: Duration,
    /// How often, and how long in all, the guest was held.
    throttled: u64,
    throttled_for: Duration,
}

impl CpuThrottle {
    /// An account allowing `quota` of guest time in every `period`, its first period starting `now`.
    pub fn new(quota: Duration, period: Duration, now: Instant) -> CpuThrottle {
        let period = period.max(Duration::from_millis(1));
        CpuThrottle {
            quota: quota.max(Duration::from_nanos(1)),
            period,
            period_start: now,
            used: Duration::ZERO,
            throttled: 0,
            throttled_for: Duration::ZERO,
        }
    }

    /// Counts `time` of guest running, ending at `now`.
    pub fn ran(&mut self, time: Duration, now: Instant) {
        self.roll(now);
        self.used = self.used.saturating_add(time);
    }

    /// Whether the guest must wait, asked at `now`: `None` while the
    /// current period's quota is not spent; otherwise the end of the last
    /// period its use (debt included) pays for — the guest is held until then.
    pub fn hold_until(&mut self, now: Instant) -> Option<Instant> {
        self.roll(now);
        if self.used < self.quota {
            return None;
        }
        let periods = u32::try_from(self.used.as_nanos() / self.quota.as_nanos()).unwrap_or(u32::MAX);
        let until = self.period_start.checked_add(self.period.saturating_mul(periods))?;
        self.throttled = self.throttled.saturating_add(1);
        self.throttled_for = self.throttled_for.saturating_add(until.saturating_duration_since(now));
        Some(until)
    }

    /// How many times the guest was held, and for how long in all.
    pub fn throttled(&self) -> (u64, Duration) {
        (self.throttled, self.throttled_for)
    }

    /// Moves to the period `now` is in: each period passed refills one quota
    /// (paying off a debt first; what is left unused is lost).
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.period_start);
        if elapsed < self.period {
            return;
        }
        let periods = elapsed.as_nanos() / self.period.as_nanos();
        let periods = u32::try_from(periods).unwrap_or(u32::MAX);
        self.used = self.used.saturating_sub(self.quota.saturating_mul(periods));
        self.period_start = self.period_start.checked_add(self.period.saturating_mul(periods)).unwrap_or(now);
    }
}

/// One store's view of its container's [`CpuThrottle`]: it marks when this
/// store's guest runs and counts that time into the account it shares with
/// the container's other stores.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    account: Arc<Mutex<CpuThrottle>>,
    /// Since when this store's guest has been running, while it is.
    running_since: Option<Instant>,
}

impl CpuMeter {
    /// A meter counting into `account`.
    pub fn new(account: Arc<Mutex<CpuThrottle>>) -> CpuMeter {
        CpuMeter { account, running_since: None }
    }

    /// The guest starts (or resumes) running at `now`.
    pub fn resumed(&mut self, now: Instant) {
        self.running_since = Some(now);
    }

    /// The guest stops running at `now` (it calls the host, or reaches an
    /// epoch check): the time since it resumed is counted. Nothing is
    /// counted when it was not running.
    pub fn paused(&mut self, now: Instant) {
        if let Some(since) = self.running_since.take() {
            lock(&self.account).ran(now.saturating_duration_since(since), now);
        }
    }

    /// [`CpuThrottle::hold_until`] of the shared account.
    pub fn hold_until(&self, now: Instant) -> Option<Instant> {
        lock(&self.account).hold_until(now)
    }

    /// [`CpuThrottle::throttled`] of the shared account.
    pub fn throttled(&self) -> (u64, Duration) {
        lock(&self.account).throttled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn quotas_follow_the_limit() {
        assert_eq!(quota(250, DEFAULT_PERIOD), Some(25 * MS));
        assert_eq!(quota(1500, DEFAULT_PERIOD), Some(150 * MS));
        assert_eq!(quota(1, DEFAULT_PERIOD), Some(MIN_QUOTA), "at least kubelet's minimum");
        assert_eq!(quota(0, DEFAULT_PERIOD), None, "0 is no limit");
        assert!(quota(u64::MAX, Duration::MAX).is_some(), "no overflow");
    }

    fn meter(quota: Duration, period: Duration, now: Instant) -> CpuMeter {
        CpuMeter::new(Arc::new(Mutex::new(CpuThrottle::new(quota, period, now))))
    }

    #[test]
    fn the_quota_spent_holds_the_guest_to_the_end_of_the_period() {
        let t0 = Instant::now();
        let mut cpu = meter(25 * MS, 100 * MS, t0);
        // 20 ms run in ticks of 10 ms: under the quota.
        cpu.resumed(t0);
        cpu.paused(t0 + 10 * MS);
        assert_eq!(cpu.hold_until(t0 + 10 * MS), None);
        cpu.resumed(t0 + 10 * MS);
        cpu.paused(t0 + 20 * MS);
        assert_eq!(cpu.hold_until(t0 + 20 * MS), None);
        // The third tick passes the quota: held until the period ends.
        cpu.resumed(t0 + 20 * MS);
        cpu.paused(t0 + 30 * MS);
        assert_eq!(cpu.hold_until(t0 + 30 * MS), Some(t0 + 100 * MS));
        // The next period starts with the 5 ms overrun as a debt: 20 ms more.
        cpu.resumed(t0 + 100 * MS);
        cpu.paused(t0 + 115 * MS);
        assert_eq!(cpu.hold_until(t0 + 115 * MS), None);
        cpu.paused(t0 + 118 * MS);
        cpu.resumed(t0 + 118 * MS);
        cpu.paused(t0 + 123 * MS);
        assert_eq!(cpu.hold_until(t0 + 123 * MS), Some(t0 + 200 * MS));
        assert_eq!(cpu.throttled(), (2, 70 * MS + 77 * MS));
    }

    #[test]
    fn a_long_run_is_paid_for_over_several_periods() {
        let t0 = Instant::now();
        let mut cpu = CpuThrottle::new(25 * MS, 100 * MS, t0);
        // 80 ms without a check (a slow host call counted as guest time, say): three quotas and a bit.
        cpu.ran(80 * MS, t0 + 80 * MS);
        assert_eq!(cpu.hold_until(t0 + 80 * MS), Some(t0 + 300 * MS));
        // Asked again at the end of the hold: 5 ms of debt left, running is allowed.
        assert_eq!(cpu.hold_until(t0 + 300 * MS), None);
    }

    #[test]
    fn unused_quota_is_lost_and_waiting_in_the_host_is_not_counted() {
        let t0 = Instant::now();
        let mut cpu = meter(25 * MS, 100 * MS, t0);
        // Idle for 10 periods: no credit builds up.
        cpu.resumed(t0 + 1000 * MS);
        cpu.paused(t0 + 1030 * MS);
        assert_eq!(cpu.hold_until(t0 + 1030 * MS), Some(t0 + 1100 * MS));
        // A guest that sleeps in the host between short runs is never held.
        let mut sleeper = meter(25 * MS, 100 * MS, t0);
        for second in 0..5u32 {
            let at = t0 + second * 1000 * MS;
            sleeper.resumed(at);
            sleeper.paused(at + 2 * MS);
            assert_eq!(sleeper.hold_until(at + 2 * MS), None);
        }
        // Pausing twice counts once.
        sleeper.paused(t0 + 6000 * MS);
        assert_eq!(sleeper.hold_until(t0 + 6000 * MS), None);
    }

    #[test]
    fn the_stores_of_one_container_share_its_quota() {
        let t0 = Instant::now();
        let account = Arc::new(Mutex::new(CpuThrottle::new(25 * MS, 100 * MS, t0)));
        let (mut first, mut second) = (CpuMeter::new(account.clone()), CpuMeter::new(account));
        // Two requests run side by side for 15 ms each: 30 ms of the 25 ms quota.
        first.resumed(t0);
        second.resumed(t0);
        first.paused(t0 + 15 * MS);
        assert_eq!(first.hold_until(t0 + 15 * MS), None);
        second.paused(t0 + 15 * MS);
        assert_eq!(second.hold_until(t0 + 15 * MS), Some(t0 + 100 * MS));
        assert_eq!(first.hold_until(t0 + 15 * MS), Some(t0 + 100 * MS), "both are held");
        assert_eq!(first.throttled().0, 2);
    }
}
