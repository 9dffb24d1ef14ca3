//! Creates with a client-chosen id (`POST /v1/servers|networks|subnets|ports|volumes|images`
//! with `id`): a controller's retry with the same id and the same body gets the existing
//! resource instead of a duplicate; the same id with a different body is 409. This is also how
//! a controller gives a network the same identity on several nodes.
//!
//! The body without `id` is fingerprinted (SHA-256 of its canonical JSON: keys sorted, no
//! whitespace) and
//! the fingerprint recorded before the create runs. The resource itself is the truth: when it
//! does not exist (a create that failed or was interrupted), the request runs as a new create.

use super::{OpError, Services};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::future::Future;

/// A resource that can be created with a client-chosen id.
pub trait Creatable: Sized {
    /// The kind, as errors and the fingerprint table name it (`server`, `network`, …).
    const KIND: &'static str;

    /// The resource with this id, or [`OpError::NotFound`].
    fn find(services: &Services, id: &str) -> impl Future<Output = Result<Self, OpError>> + Send;
}

/// The canonical text of a JSON value: object keys sorted, no whitespace.
pub fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// The fingerprint of a request body.
pub fn fingerprint(body: &Value) -> String {
    hex::encode(Sha256::digest(canonical(body).as_bytes()))
}

/// Checks a client-chosen id: any UUID spelling, returned in the canonical lowercase form.
///
/// # Errors
/// [`OpError::InvalidInput`] when it is not a UUID.
pub fn normalize_id(id: &str) -> Result<String, OpError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| OpError::InvalidInput(format!("id {id:?} is not a UUID")))
}

/// Runs `create` once per client-chosen id: without an id it simply runs; with one, an
/// existing resource made by the same body is returned as is, one made by another body is
/// refused, and otherwise the fingerprint is recorded and `create` runs with the (normalized)
/// id. Creates with ids are serialized on the node so two identical retries cannot both run.
///
/// # Errors
/// [`OpError::InvalidInput`] for an id that is not a UUID, [`OpError::Conflict`] when the id
/// belongs to a resource made by another request, or whatever `create` returns.
pub async fn create<T, F, Fut>(
    services: &Services,
    id: Option<String>,
    body: &Value,
    create: F,
) -> Result<T, OpError>
where
    T: Creatable,
    F: FnOnce(Option<String>) -> Fut,
    Fut: Future<Output = Result<T, OpError>>,
{
    let Some(id) = id else {
        return create(None).await;
    };
    let id = normalize_id(&id)?;
    let _one_at_a_time = services.idempotent_creates().lock().await;
    // The id itself is compared in its normalized form, not as spelled in the body.
    let print = match body {
        Value::Object(map) => {
            let mut map = map.clone();
            map.remove("id");
            fingerprint(&Value::Object(map))
        }
        other => fingerprint(other),
    };
    match T::find(services, &id).await {
        Ok(existing) => {
            let recorded = services.store().create_fingerprint(T::KIND, &id).await?;
            return if recorded.as_deref() == Some(print.as_str()) {
                Ok(existing)
            } else {
                Err(OpError::Conflict(format!(
                    "{} {id} already exists and was created by a different request; repeat the \
                     original request exactly, or choose another id",
                    T::KIND
                )))
            };
        }
        Err(OpError::NotFound { .. }) => {}
        Err(other) => return Err(other),
    }
    services
        .store()
        .put_create_fingerprint(T::KIND, &id, &print)
        .await?;
    create(Some(id)).await
}

impl Creatable for super::servers::Server {
    const KIND: &'static str = "server";
    async fn find(services: &Services, id: &str) -> Result<Self, OpError> {
        super::servers::get(services, id).await
    }
}

impl Creatable for crate::net::model::Network {
    const KIND: &'static str = "network";
    async fn find(services: &Services, id: &str) -> Result<Self, OpError> {
        super::networks::get(services, id).await
    }
}

impl Creatable for crate::net::model::Subnet {
    const KIND: &'static str = "subnet";
    async fn find(services: &Services, id: &str) -> Result<Self, OpError> {
        super::networks::subnets::get(services, id).await
    }
}

impl Creatable for crate::net::model::Port {
    const KIND: &'static str = "port";
    async fn find(services: &Services, id: &str) -> Result<Self, OpError> {
        super::networks::ports::get(services, id).await
    }
}

impl Creatable for crate::state::Volume {
    const KIND: &'static str = "volume";
    async fn find(services: &Services, id: &str) -> Result<Self, OpError> {
        super::volumes::get(services, id).await
    }
}

impl Creatable for crate::state::ImageRecord {
    const KIND: &'static str = "image";
    async fn find(services: &Services, id: &str) -> Result<Self, OpError> {
        super::images::get(services, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_ignores_key_order_and_spacing_only() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[2,1]},"b":1}"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(canonical(&a), r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
    }

    #[test]
    fn ids_are_uuids_in_any_spelling() {
        assert_eq!(
            normalize_id("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap(),
            "6f9619ff-8b86-d011-b42d-00c04fc964ff"
        );
        assert!(normalize_id("not-a-uuid").is_err());
        assert!(normalize_id("").is_err());
    }
}
