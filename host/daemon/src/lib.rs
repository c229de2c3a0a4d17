//! What Kapsel's long-running processes — the supervisor (`kapsel serve`,
//! `kapsel-server`) and node agents (`kapsel node`, `kapsel-agent`) — share,
//! so that neither has to depend on the other: serving HTTPS ([`tls`]: a
//! server certificate's parameters and rustls configuration, the
//! self-signed certificate of a node's log endpoint, a listener that runs
//! each handshake in its own task), files written atomically into a data
//! directory ([`files`]), and tasks started again after a panic
//! ([`task::supervise`]).

pub mod files;
pub mod task;
pub mod tls;
