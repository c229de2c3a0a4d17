//! `Event`: recorded by the platform; an Event about a cluster-scoped
//! object (a node, a plug-in, a cluster policy) may name any tenant's
//! objects, so it is IT's alone to read (`crate::events::for_it_only`).

use serde_json::Value;

use super::Strategy;
use crate::auth::Identity;

#[derive(Debug)]
pub struct Events;

impl Strategy for Events {
    fn hidden_from(&self, _identity: &Identity, event: &Value) -> bool {
        crate::events::for_it_only(event)
    }
}
