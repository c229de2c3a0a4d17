//! Request bodies: read under a size cap (413 past it), decoded from JSON,
//! YAML or (for what kubectl sends that way) Kubernetes protobuf by
//! `Content-Type`, and checked to be an object (400 otherwise).
//!
//! A decoded body is bounded like the raw one: JSON and protobuf cannot
//! grow much past their bytes, but YAML's anchors and aliases can (a
//! "billion laughs" document of a megabyte expands to gigabytes). YAML is
//! therefore decoded through [`Bounded`], which charges every node it
//! builds — aliases expanded — against a budget proportional to the body,
//! and stops with 413 the moment the budget runs out, before the memory is
//! spent. Before that, the number of its nodes is bounded from its bytes
//! ([`MAX_YAML_NODES`]), and the parser's own limits (serde-saphyr's
//! budget) are set from the same numbers ([`yaml_options`]), so that
//! [`Bounded`] is the one that binds.

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::Value;

use crate::error::ApiError;

/// The largest request body accepted (the Kubernetes API server's limit).
pub const MAX_BODY_BYTES: usize = crate::budget::MAX_OBJECT_BYTES;

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

/// How long a refused request's body is read before the connection is left to close.
const DISCARD_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops what is left of a refused request's body: at most
/// [`MAX_BODY_BYTES`], for at most a few seconds, so that a client still
/// sending gets the answer rather than a closed connection.
pub async fn discard(body: Body) {
    use futures::StreamExt as _;
    let mut chunks = body.into_data_stream();
    let mut seen = 0usize;
    let _ = tokio::time::timeout(DISCARD_FOR, async {
        while let Some(Ok(chunk)) = chunks.next().await {
            seen = seen.saturating_add(chunk.len());
            if seen > MAX_BODY_BYTES {
                break;
            }
        }
    })
    .await;
}

/// The media type of a request, without parameters, lower-cased.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Bodies from this size up are decoded on a blocking thread, so that a
/// big (or hostile) one never holds an async worker other requests need.
const DECODE_OFF_THREAD_BYTES: usize = 256 * 1024;

/// [`decode_object`], on a blocking thread for a big body.
pub async fn decode(headers: &HeaderMap, bytes: Bytes) -> Result<Value, ApiError> {
    if bytes.len() < DECODE_OFF_THREAD_BYTES {
        return decode_object(headers, &bytes);
    }
    let headers = headers.clone();
    tokio::task::spawn_blocking(move || decode_object(&headers, &bytes))
        .await
        .map_err(|e| ApiError::internal("decoding the request body", e))?
}

/// Decodes a JSON or YAML body into a JSON object.
pub fn decode_object(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, ApiError> {
    let media = media_type(headers);
    let value = match media.as_str() {
        "application/yaml" | "application/x-yaml" | "text/yaml" => decode_yaml(bytes)?,
        crate::http::protobuf::MEDIA_TYPE => crate::http::protobuf::decode(bytes)?,
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

/// How much a YAML body may decode to: about what its bytes would be as
/// JSON (four times them, at least 64 KiB), whatever its aliases say.
pub fn yaml_budget(body_len: usize) -> usize {
    body_len.saturating_mul(4).max(64 * 1024)
}

/// The most nodes a YAML body may hold (aliases counted once). The parser's
/// work, and the copies of anchored nodes it keeps to replay their aliases,
/// grow with them, so their number is bounded before it starts.
pub const MAX_YAML_NODES: usize = 200_000;

/// An upper bound of the nodes (parser events) of a YAML text: each starts
/// at a flow or block indicator, an alias, or a new line.
fn yaml_node_bound(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| matches!(b, b',' | b'[' | b'{' | b'-' | b':' | b'*' | b'\n')).count()
}

/// How a YAML body is read, as it was with serde_yaml. Its scalars as YAML
/// 1.2's core schema reads them (only `true` and `false` are booleans; `0755`
/// and `1_000` stay strings; `.inf` and `.nan` become null, as JSON has
/// neither; a key is its text, `~` too), `<<` an ordinary key and a repeated
/// key's last value taken, as a JSON body is read. The parser's limits follow
/// `budget`, the one [`Bounded`] charges, so that it binds first: every node
/// costs it at least [`NODE_COST`](crate::budget::NODE_COST), so no more
/// nodes, aliases or bytes of string than these get through it. Nesting
/// stays at the parser's 64 levels: serde_yaml allowed 128, but this
/// deserializer's frames are larger (a debug build's 2 MiB test thread
/// overflows at about 90).
fn yaml_options(budget: usize) -> serde_saphyr::Options {
    let nodes = budget / crate::budget::NODE_COST + 1;
    // A node is at most a start and an end event, an alias one more.
    let events = nodes.saturating_mul(3).saturating_add(8);
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: events,
            max_nodes: nodes,
            max_aliases: nodes,
            max_anchors: MAX_YAML_NODES,
            max_total_scalar_bytes: budget,
            // Many aliases of one anchor are ordinary; what they expand to is charged.
            enforce_alias_anchor_ratio: false,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: events,
        },
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        null_as_string: true,
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
        merge_keys: serde_saphyr::MergeKeyPolicy::AsOrdinary,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
        with_snippet: false,
    }
}

/// Whether the parser stopped at one of its size limits rather than at bad
/// YAML (nesting too deep is bad YAML here, as it is for a JSON body).
fn is_parser_limit(error: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error;
    match error {
        Error::WithSnippet { error, .. } | Error::AliasError { error, .. } => is_parser_limit(error),
        Error::Budget { breach: serde_saphyr::budget::BudgetBreach::Depth { .. }, .. } => false,
        Error::Budget { .. }
        | Error::AliasReplayLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. }
        | Error::AliasReplayCounterOverflow { .. } => true,
        _ => false,
    }
}

fn decode_yaml(bytes: &[u8]) -> Result<Value, ApiError> {
    let nodes = yaml_node_bound(bytes);
    if nodes > MAX_YAML_NODES {
        return Err(ApiError::ExpandsTooLarge(format!(
            "the YAML body may hold up to {nodes} nodes, more than the {MAX_YAML_NODES} a YAML body may (its parser's work grows with them); send large objects as JSON"
        )));
    }
    let budget = yaml_budget(bytes.len());
    let remaining = std::cell::Cell::new(budget);
    serde_saphyr::with_deserializer_from_slice_with_options(bytes, yaml_options(budget), |deserializer| {
        serde::de::DeserializeSeed::deserialize(Bounded { remaining: &remaining }, deserializer)
    })
    .map_err(|e| {
        if remaining.get() == 0 {
            ApiError::ExpandsTooLarge(format!(
                "the YAML body expands to more than {budget} bytes once its anchors and aliases are followed (a body of {} bytes may decode to at most {budget})",
                bytes.len()
            ))
        } else if is_parser_limit(&e) {
            ApiError::ExpandsTooLarge(format!("the YAML body goes past a limit of its parser: {e}"))
        } else {
            ApiError::BadRequest(format!("the request body is not valid YAML: {e}"))
        }
    })
}

/// Decodes one value into a JSON [`Value`], charging each node (and the
/// bytes of its strings) to `remaining`; fails once it reaches zero.
#[derive(Debug, Clone, Copy)]
struct Bounded<'a> {
    remaining: &'a std::cell::Cell<usize>,
}

impl Bounded<'_> {
    fn charge<E: serde::de::Error>(&self, bytes: usize) -> Result<(), E> {
        let cost = crate::budget::NODE_COST.saturating_add(bytes);
        match self.remaining.get().checked_sub(cost) {
            Some(left) if left > 0 => {
                self.remaining.set(left);
                Ok(())
            }
            _ => {
                self.remaining.set(0);
                Err(E::custom("the decoded body exceeds its size budget"))
            }
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("any JSON-compatible value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut fields = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.charge(key.len())?;
            let value = map.next_value_seed(self)?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/yaml"));
        headers
    }

    #[test]
    fn yaml_with_too_many_nodes_is_refused_before_parsing() {
        let flat = format!("a: [{}]", vec!["x"; MAX_YAML_NODES + 1].join(","));
        let error = decode_object(&yaml(), flat.as_bytes()).unwrap_err();
        assert!(matches!(error, ApiError::ExpandsTooLarge(_)), "{error:?}");
        assert!(error.to_string().contains("send large objects as JSON"), "{error}");
        // Ordinary documents, and long strings, are far from it.
        let ordinary = format!("metadata: {{name: x}}\ndata:\n  blob: {}\n", "QUJD".repeat(500_000));
        assert!(decode_object(&yaml(), ordinary.as_bytes()).is_ok());
    }

    #[test]
    fn yaml_scalars_are_read_as_yaml_1_2_reads_them() {
        let body = "metadata: {name: x}\nflags: [yes, no, on, off, y, n, true, FALSE, ~, null, '']\n\
                    numbers: [0755, 1_000, 1:20, 1e3, 0x10, .inf, 2024-01-01]\n<<: {merged: 1}\n~: tilde\nkey: first\nkey: last\n";
        let value = decode_object(&yaml(), body.as_bytes()).unwrap();
        assert_eq!(value["flags"], serde_json::json!(["yes", "no", "on", "off", "y", "n", true, false, null, null, ""]));
        assert_eq!(value["numbers"], serde_json::json!(["0755", "1_000", "1:20", 1000.0, 16, null, "2024-01-01"]));
        assert_eq!(value["<<"], serde_json::json!({"merged": 1}));
        assert_eq!(value["~"], "tilde");
        assert_eq!(value["key"], "last");
    }

    #[test]
    fn the_parser_limits_do_not_bind_before_the_budget() {
        // Many aliases of one anchor: within the budget, whatever their ratio to anchors.
        let many = format!("metadata: {{name: x}}\nbase: &a [x]\ncopies: [{}]\n", vec!["*a"; 2_000].join(","));
        assert_eq!(decode_object(&yaml(), many.as_bytes()).unwrap()["copies"].as_array().map(Vec::len), Some(2_000));
        // Nesting too deep is refused as bad input, as it is in JSON.
        let nested = format!("a: {}{}\n", "[".repeat(60), "]".repeat(60));
        assert!(decode_object(&yaml(), nested.as_bytes()).is_ok());
        let deep = format!("a: {}{}\n", "[".repeat(200), "]".repeat(200));
        let error = decode_object(&yaml(), deep.as_bytes()).unwrap_err();
        assert!(matches!(error, ApiError::BadRequest(_)), "{error:?}");
    }

    #[test]
    fn aliases_are_counted_as_they_expand() {
        let bomb = format!("base: &a [{}]\ncopies: [{}]\n", vec!["x"; 1000].join(","), vec!["*a"; 10_000].join(","));
        let error = decode_object(&yaml(), bomb.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("anchors and aliases"), "{error}");
        let modest = "base: &a {k: v}\ncopies: [*a, *a]\n";
        assert_eq!(decode_object(&yaml(), modest.as_bytes()).unwrap()["copies"][1]["k"], "v");
    }
}
