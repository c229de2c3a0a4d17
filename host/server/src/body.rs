//! Request bodies: read under a size cap (413 past it), decoded from JSON,
//! YAML or (for what kubectl sends that way) Kubernetes protobuf by
//! `Content-Type`, and checked to be an object (400 otherwise).

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::Value;

use crate::error::ApiError;

/// The largest request body accepted (the Kubernetes API server's limit).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Reads the whole body, refusing one larger than [`MAX_BODY_BYTES`].
pub async fn read(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|error| {
        let too_large = std::error::Error::source(&error).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::TooLarge { limit: MAX_BODY_BYTES }
        } else {
            ApiError::BadRequest(format!("could not read the request body: {error}"))
        }
    })
}

/// The media type of a request, without parameters, lower-cased.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Decodes a JSON or YAML body into a JSON object.
pub fn decode_object(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, ApiError> {
    let media = media_type(headers);
    let value = match media.as_str() {
        "application/yaml" | "application/x-yaml" | "text/yaml" => decode_yaml(bytes)?,
        crate::protobuf::MEDIA_TYPE => crate::protobuf::decode(bytes)?,
        // curl -d sends form encoding by default; a JSON body is what it carries.
        "" | "application/json" | "text/plain" | "application/x-www-form-urlencoded" => decode_json(bytes)?,
        other if other.ends_with("+json") => decode_json(bytes)?,
        other if other.ends_with("+yaml") => decode_yaml(bytes)?,
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {other})"
            )));
        }
    };
    if !value.is_object() {
        return Err(ApiError::BadRequest("the request body must be an object".into()));
    }
    Ok(value)
}

pub fn decode_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("the request body is empty".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))
}

fn decode_yaml(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_yaml::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("the request body is not valid YAML: {e}")))
}

/// Reads a binary upload (a component) of at most `limit` bytes, hashing it
/// as it arrives: its bytes and `sha256:<hex>`. An announced
/// `Content-Length` over the limit is refused before anything is read.
pub async fn receive_blob(headers: &HeaderMap, body: Body, limit: usize) -> Result<(Vec<u8>, String), ApiError> {
    use futures::StreamExt as _;
    use sha2::Digest as _;
    let too_large = ApiError::TooLarge { limit };
    let announced = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if announced.is_some_and(|length| length > limit) {
        return Err(too_large);
    }
    let mut bytes = Vec::with_capacity(announced.unwrap_or(0));
    let mut hasher = sha2::Sha256::new();
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the upload: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large);
        }
        hasher.update(&chunk);
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, format!("sha256:{:x}", hasher.finalize())))
}
