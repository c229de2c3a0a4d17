//! One module per CLI command that talks to the API.

pub mod apply;
pub mod create;
pub mod delete;
pub mod get;
pub mod logs;
pub mod plugin;
pub mod plugin_test;
pub mod policy;
pub mod push;
pub mod token;
