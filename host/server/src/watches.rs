//! Open watches, counted per identity: each identity but IT admins may
//! hold at most [`WatchLimits`]' number of watches open at once (`kapsel
//! serve --max-watches-per-identity`); one more is refused with 429
//! `TooManyRequests` and a `Retry-After`, so no tenant can hold the
//! server's memory and connections with watches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::Identity;
use crate::error::ApiError;

/// The default of `kapsel serve --max-watches-per-identity`.
pub const DEFAULT_MAX_WATCHES_PER_IDENTITY: usize = 100;

/// How long a client told it has too many watches open should wait.
const WATCH_RETRY_AFTER_SECONDS: u64 = 5;

/// The watches each identity has open, and how many it may.
#[derive(Debug, Clone)]
pub struct WatchLimits {
    max_per_identity: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits::new(DEFAULT_MAX_WATCHES_PER_IDENTITY)
    }
}

impl WatchLimits {
    pub fn new(max_per_identity: usize) -> Self {
        WatchLimits { max_per_identity, open: Arc::default() }
    }

    /// Counts one more watch of `identity`, or refuses it (429) at the limit; IT admins are not counted.
    pub fn acquire(&self, identity: &Identity) -> Result<Option<WatchPermit>, ApiError> {
        if identity.admin {
            return Ok(None);
        }
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(identity.user.clone()).or_default();
        if *count >= self.max_per_identity {
            return Err(ApiError::TooManyRequests {
                message: format!("too many watches open: {:?} has {count} open, the most one identity may have at once", identity.user),
                retry_after_seconds: WATCH_RETRY_AFTER_SECONDS,
            });
        }
        *count += 1;
        Ok(Some(WatchPermit { limits: self.clone(), user: identity.user.clone() }))
    }

    /// How many watches `user` has open.
    pub fn open(&self, user: &str) -> usize {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(user).copied().unwrap_or(0)
    }
}

/// One open watch, counted until it is dropped.
#[derive(Debug)]
pub struct WatchPermit {
    limits: WatchLimits,
    user: String,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}
