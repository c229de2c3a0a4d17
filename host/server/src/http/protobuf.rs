//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed commands (`kubectl create namespace`,
//! `kubectl create quota`, `kubectl create configmap|secret`, `kubectl
//! create service`, `kubectl expose`) send. The envelope is the 4-byte magic `k8s\0`
//! and a `runtime.Unknown` holding the type and the encoded object
//! (messages from `k8s-pb`); the object is turned into the JSON the rest
//! of the server works on. Kinds without a converter here get a 415 that
//! says to send JSON or YAML, which every other client does.

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message as _;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// Decodes a protobuf body into the object's JSON form.
pub fn decode(bytes: &[u8]) -> Result<Value, ApiError> {
    let bad = |why: String| ApiError::BadRequest(format!("the protobuf body could not be decoded: {why}"));
    let payload = bytes.strip_prefix(MAGIC).ok_or_else(|| bad("it does not start with the k8s protobuf magic".into()))?;
    let envelope = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(payload).map_err(|e| bad(e.to_string()))?;
    let type_meta = envelope.type_meta.unwrap_or_default();
    let (api_version, kind) = (type_meta.api_version.unwrap_or_default(), type_meta.kind.unwrap_or_default());
    let raw = envelope.raw.unwrap_or_default();
    let mut object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => {
            let namespace = core::Namespace::decode(raw.as_slice()).map_err(|e| bad(e.to_string()))?;
            let finalizers = namespace.spec.map(|s| s.finalizers).unwrap_or_default();
            let mut object = json!({"metadata": metadata(namespace.metadata.unwrap_or_default())});
            if !finalizers.is_empty() {
                object["spec"] = json!({"finalizers": finalizers});
            }
            object
        }
        ("v1", "ResourceQuota") => {
            let quota = core::ResourceQuota::decode(raw.as_slice()).map_err(|e| bad(e.to_string()))?;
            let spec = quota.spec.unwrap_or_default();
            let hard: Map<String, Value> = spec.hard.into_iter().map(|(k, q)| (k, Value::String(q.string.unwrap_or_default()))).collect();
            let mut spec_json = json!({"hard": hard});
            if !spec.scopes.is_empty() {
                spec_json["scopes"] = json!(spec.scopes);
            }
            json!({"metadata": metadata(quota.metadata.unwrap_or_default()), "spec": spec_json})
        }
        ("v1", "ConfigMap") => {
            let config_map = core::ConfigMap::decode(raw.as_slice()).map_err(|e| bad(e.to_string()))?;
            let mut object = json!({"metadata": metadata(config_map.metadata.unwrap_or_default())});
            if !config_map.data.is_empty() {
                object["data"] = json!(config_map.data);
            }
            if !config_map.binary_data.is_empty() {
                object["binaryData"] = base64_map(config_map.binary_data);
            }
            if let Some(immutable) = config_map.immutable {
                object["immutable"] = json!(immutable);
            }
            object
        }
        ("v1", "Secret") => {
            let secret = core::Secret::decode(raw.as_slice()).map_err(|e| bad(e.to_string()))?;
            let mut object = json!({"metadata": metadata(secret.metadata.unwrap_or_default())});
            if !secret.data.is_empty() {
                object["data"] = base64_map(secret.data);
            }
            if !secret.string_data.is_empty() {
                object["stringData"] = json!(secret.string_data);
            }
            if let Some(kind) = secret.r#type.filter(|t| !t.is_empty()) {
                object["type"] = json!(kind);
            }
            if let Some(immutable) = secret.immutable {
                object["immutable"] = json!(immutable);
            }
            object
        }
        ("v1", "Service") => {
            let service = core::Service::decode(raw.as_slice()).map_err(|e| bad(e.to_string()))?;
            let spec = service.spec.unwrap_or_default();
            let ports: Vec<Value> = spec
                .ports
                .into_iter()
                .map(|port| {
                    let mut json = Map::new();
                    let mut put = |key: &str, value: Option<Value>| {
                        if let Some(value) = value {
                            json.insert(key.into(), value);
                        }
                    };
                    put("name", port.name.filter(|n| !n.is_empty()).map(Value::String));
                    put("protocol", port.protocol.filter(|p| !p.is_empty()).map(Value::String));
                    put("port", port.port.map(|p| json!(p)));
                    put(
                        "targetPort",
                        port.target_port.and_then(|target| match target.r#type {
                            Some(1) => target.str_val.map(Value::String),
                            _ => target.int_val.map(|p| json!(p)),
                        }),
                    );
                    Value::Object(json)
                })
                .collect();
            let mut spec_json = json!({"ports": ports});
            if !spec.selector.is_empty() {
                spec_json["selector"] = json!(spec.selector);
            }
            if let Some(kind) = spec.r#type.filter(|t| !t.is_empty()) {
                spec_json["type"] = json!(kind);
            }
            json!({"metadata": metadata(service.metadata.unwrap_or_default()), "spec": spec_json})
        }
        _ => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Kapsel accepts protobuf bodies only for v1 Namespace, ResourceQuota, ConfigMap, Secret and Service (got {api_version} {kind}); send application/json or application/yaml"
            )));
        }
    };
    object["apiVersion"] = Value::String(api_version);
    object["kind"] = Value::String(kind);
    Ok(object)
}

/// Bytes by key as JSON holds them: base64 strings.
fn base64_map(map: std::collections::BTreeMap<String, Vec<u8>>) -> Value {
    use base64::Engine as _;
    Value::Object(
        map.into_iter().map(|(key, bytes)| (key, Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)))).collect(),
    )
}

/// The client-settable parts of `ObjectMeta`; server-owned fields are set by the server.
fn metadata(meta: meta::ObjectMeta) -> Value {
    let mut out = Map::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.insert(key.into(), Value::String(v));
        }
    };
    put("name", meta.name);
    put("generateName", meta.generate_name);
    put("namespace", meta.namespace);
    put("resourceVersion", meta.resource_version);
    if !meta.labels.is_empty() {
        out.insert("labels".into(), json!(meta.labels));
    }
    if !meta.annotations.is_empty() {
        out.insert("annotations".into(), json!(meta.annotations));
    }
    if !meta.finalizers.is_empty() {
        out.insert("finalizers".into(), json!(meta.finalizers));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta { api_version: Some("v1".into()), kind: Some(kind.into()) }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut bytes = MAGIC.to_vec();
        bytes.extend(unknown.encode_to_vec());
        bytes
    }

    #[test]
    fn decodes_a_namespace_as_kubectl_sends_it() {
        let namespace = core::Namespace {
            metadata: Some(meta::ObjectMeta {
                name: Some("dev".into()),
                labels: [("team".to_string(), "a".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(Default::default()),
            status: Some(Default::default()),
        };
        let object = decode(&envelope("Namespace", namespace.encode_to_vec())).unwrap();
        assert_eq!(object, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev", "labels": {"team": "a"}}}));
    }

    #[test]
    fn decodes_a_secret_and_a_config_map_as_kubectl_sends_them() {
        let secret = core::Secret {
            metadata: Some(meta::ObjectMeta { name: Some("db".into()), ..Default::default() }),
            data: [("password".to_string(), b"hunter2".to_vec())].into(),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let object = decode(&envelope("Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"password": "aHVudGVyMg=="}, "type": "Opaque"})
        );
        let config_map = core::ConfigMap {
            metadata: Some(meta::ObjectMeta { name: Some("settings".into()), ..Default::default() }),
            data: [("color".to_string(), "blue".to_string())].into(),
            binary_data: [("logo".to_string(), vec![0xff, 0])].into(),
            immutable: Some(true),
        };
        let object = decode(&envelope("ConfigMap", config_map.encode_to_vec())).unwrap();
        assert_eq!(object["data"], json!({"color": "blue"}));
        assert_eq!(object["binaryData"], json!({"logo": "/wA="}));
        assert_eq!(object["immutable"], json!(true));
    }

    #[test]
    fn refuses_what_it_cannot_convert() {
        assert!(matches!(decode(b"nope"), Err(ApiError::BadRequest(_))));
        assert!(matches!(decode(&envelope("Pod", Vec::new())), Err(ApiError::UnsupportedMediaType(_))));
    }
}
