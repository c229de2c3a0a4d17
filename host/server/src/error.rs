//! The one public API error type and its Kubernetes `Status` (code,
//! reason, causes). Operations return `Result<_, ApiError>`; user mistakes
//! map to 4xx with the Kubernetes reason, and only faults of the server
//! itself become 500 `InternalError` (logged with their cause chain when
//! answered, `crate::http::status`).

use kapsel_api::{FieldError, ResourceType, Status, StatusCause, StatusDetails};
use kapsel_store::StoreError;

/// A failed API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{resource} {name:?} not found")]
    NotFound { resource: String, name: String },
    #[error("{0}")]
    NoRoute(String),
    #[error("{resource} {name:?} already exists")]
    AlreadyExists { resource: String, name: String },
    #[error("Operation cannot be fulfilled on {resource} {name:?}: {reason}")]
    Conflict { resource: String, name: String, reason: String },
    #[error("{0}")]
    Expired(String),
    #[error("{kind} {name:?} is invalid: {}", invalid_summary(causes))]
    Invalid { kind: String, group: String, name: String, causes: Vec<FieldError> },
    /// A patch that is well-formed but cannot be applied (422, as Kubernetes answers).
    #[error("{0}")]
    PatchNotApplicable(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request entity too large: limit is {limit} bytes")]
    TooLarge { limit: usize },
    /// A body within the byte limit whose decoded or computed result is not
    /// (YAML aliases, a patch's result, a template's expansion): 413 naming the limit.
    #[error("request entity too large: {0}")]
    ExpandsTooLarge(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    /// A limit on how much one identity may have or do at once (open
    /// watches, on-demand audits): 429 with `Retry-After`.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_seconds: u64 },
    /// A plug-in call failed under the `Fail` policy (500, as Kubernetes
    /// answers when a webhook it must call fails).
    #[error("Internal error occurred: {0}")]
    PluginFailed(#[from] PluginFailure),
    #[error("internal error: {context}")]
    Internal {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ApiError {
    /// A 422 `Invalid` for an object of `resource`.
    pub fn invalid(resource: &ResourceType, name: &str, causes: Vec<FieldError>) -> Self {
        ApiError::Invalid { kind: resource.kind.to_string(), group: resource.group.to_string(), name: name.to_string(), causes }
    }

    /// A 409 `Conflict` on an object of `resource`.
    pub fn conflict(resource: &ResourceType, name: &str, reason: &str) -> Self {
        ApiError::Conflict { resource: qualified(resource), name: name.to_string(), reason: reason.to_string() }
    }

    pub fn not_found(resource: &ResourceType, name: &str) -> Self {
        ApiError::NotFound { resource: qualified(resource), name: name.to_string() }
    }

    /// Maps a store failure on `resource`/`name` to the API error a client expects.
    pub fn from_store(error: StoreError, resource: &ResourceType, name: &str) -> Self {
        match error {
            StoreError::NotFound => ApiError::not_found(resource, name),
            StoreError::AlreadyExists => ApiError::AlreadyExists { resource: qualified(resource), name: name.to_string() },
            StoreError::Conflict { .. } => ApiError::Conflict {
                resource: qualified(resource),
                name: name.to_string(),
                reason: "the object has been modified; please apply your changes to the latest version and try again".into(),
            },
            StoreError::Compacted { requested, oldest } => ApiError::Expired(format!("too old resource version: {requested} ({oldest})")),
            StoreError::Closed => ApiError::ServiceUnavailable("the server is shutting down".into()),
            StoreError::AtomicOpFailed { error, .. } if matches!(*error, StoreError::DiskFull(_)) => {
                ApiError::from_store(*error, resource, name)
            }
            StoreError::DiskFull(_) => {
                tracing::error!(error = &error as &dyn std::error::Error, "a write failed: the datastore's disk is full");
                ApiError::ServiceUnavailable(
                    "the datastore has no space left on its disk: writes are refused until space is freed (nothing was written; reads keep working)"
                        .into(),
                )
            }
            other => ApiError::internal("datastore", other),
        }
    }

    pub fn internal(context: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal { context: context.into(), source: Box::new(source) }
    }

    /// The HTTP status code of this error (the `code` of its `Status`).
    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Expired(_) => 410,
            ApiError::Invalid { .. } | ApiError::PatchNotApplicable(_) => 422,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::TooLarge { .. } | ApiError::ExpandsTooLarge(_) => 413,
            ApiError::ServiceUnavailable(_) => 503,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::PluginFailed(_) | ApiError::Internal { .. } => 500,
        }
    }

    /// The Kubernetes `reason` of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Expired(_) => "Expired",
            ApiError::Invalid { .. } | ApiError::PatchNotApplicable(_) => "Invalid",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::TooLarge { .. } | ApiError::ExpandsTooLarge(_) => "RequestEntityTooLarge",
            ApiError::ServiceUnavailable(_) => "ServiceUnavailable",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::PluginFailed(_) | ApiError::Internal { .. } => "InternalError",
        }
    }

    /// The `Status` body of this error.
    pub fn status(&self) -> Status {
        let status = Status::failure(self.code(), self.reason(), self.to_string());
        match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. } => {
                let (kind, group) = resource.split_once('.').unwrap_or((resource.as_str(), ""));
                status.with_details(StatusDetails { name: name.clone(), kind: kind.into(), group: group.into(), ..Default::default() })
            }
            ApiError::Invalid { kind, group, name, causes } => status.with_details(StatusDetails {
                name: name.clone(),
                kind: kind.clone(),
                group: group.clone(),
                causes: causes
                    .iter()
                    .map(|c| StatusCause { reason: c.reason.into(), message: c.message.clone(), field: c.field.clone() })
                    .collect(),
                ..Default::default()
            }),
            ApiError::PluginFailed(failure) => status.with_details(StatusDetails {
                name: failure.plugin.clone(),
                kind: "plugins".into(),
                group: kapsel_api::KAPSEL_GROUP.into(),
                causes: vec![StatusCause { reason: "PluginFailed".into(), message: failure.error.to_string(), field: String::new() }],
                ..Default::default()
            }),
            ApiError::TooManyRequests { retry_after_seconds, .. } => status.with_details(StatusDetails {
                retry_after_seconds: Some(u32::try_from(*retry_after_seconds).unwrap_or(u32::MAX)),
                ..Default::default()
            }),
            _ => status,
        }
    }
}

/// The causes of an `Invalid`, as Kubernetes writes them: one bare, several in brackets.
fn invalid_summary(causes: &[FieldError]) -> String {
    let parts: Vec<String> = causes.iter().map(ToString::to_string).collect();
    if parts.len() == 1 { parts.into_iter().next().unwrap_or_default() } else { format!("[{}]", parts.join(", ")) }
}

/// `pods`, or `tokens.kapsel.io` for a kind outside the core group.
fn qualified(resource: &ResourceType) -> String {
    if resource.group.is_empty() { resource.plural.to_string() } else { format!("{}.{}", resource.plural, resource.group) }
}

/// A plug-in call that failed under the `Fail` policy: the operation fails with this.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plug-in {plugin:?} failed while {operation}: {error}")]
pub struct PluginFailure {
    pub plugin: String,
    pub operation: String,
    pub error: kapsel_plugins::PluginError,
}
