//! The context every operation of the application is asked with (who asks,
//! whether it is a dry run, what happens to unknown fields), whoever calls
//! it: the HTTP layer from a request's identity and query, a controller or
//! a benchmark with its own.

use crate::auth::Identity;
use crate::error::ApiError;

/// What an operation is asked with, besides its object.
#[derive(Debug, Clone)]
pub struct Context {
    pub identity: Identity,
    /// Run every step but store nothing (`dryRun=All`).
    pub dry_run: bool,
    pub field_validation: FieldValidation,
}

impl Context {
    /// An operation by `identity` that stores what it does, warning of unknown fields.
    pub fn new(identity: Identity) -> Context {
        Context { identity, dry_run: false, field_validation: FieldValidation::default() }
    }
}

/// What a write does with fields its kind does not have (`fieldValidation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Refuse the write (400).
    Strict,
    /// Drop them and warn (the default).
    #[default]
    Warn,
    /// Drop them silently.
    Ignore,
}

impl FieldValidation {
    /// Parses the `fieldValidation` parameter (absent: `Warn`).
    pub fn parse(given: Option<&str>) -> Result<FieldValidation, ApiError> {
        match given.unwrap_or("Warn") {
            "Strict" => Ok(FieldValidation::Strict),
            "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            other => Err(ApiError::BadRequest(format!("fieldValidation must be one of Strict, Warn or Ignore (got {other:?})"))),
        }
    }
}
