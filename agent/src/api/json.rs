//! `ApiJson<T>`: the JSON body extractor whose rejections use the JSON error shape.
//!
//! Numbers are read as JSON Schema reads them: `2.0` is the integer 2, so a client generated
//! from the OpenAPI document (where such fields are `type: integer`) is not refused for
//! writing an integral value with a fraction part. `2.5` stays a number an integer field
//! refuses. Integers beyond the signed 64-bit range (`format: int64` in the document) are
//! refused whatever the field.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A JSON request body (always an object). Malformed JSON → 400 `malformed_json`; JSON of the
/// wrong shape (an array, a string…) or with unknown fields → 400 `invalid_request`; a missing `Content-Type: application/json` → 415;
/// a body over the limit → 413.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (value, _) = read(req, state, false).await?;
        Ok(Self(value))
    }
}

/// A create's JSON body, as [`ApiJson`], with the body itself kept for the fingerprint of
/// creates that choose their own id (`ops::idempotent`).
pub struct CreateJson<T>(pub T, pub Value);

impl<S, T> FromRequest<S> for CreateJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (value, body) = read(req, state, true).await?;
        Ok(Self(value, body.unwrap_or(Value::Null)))
    }
}

/// Reads and decodes a JSON body; with `keep`, also returns the body as JSON.
async fn read<S: Send + Sync, T: DeserializeOwned>(
    req: Request,
    state: &S,
    keep: bool,
) -> Result<(T, Option<Value>), ApiError> {
    if !is_json(&req) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body with Content-Type: application/json",
        ));
    }
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is larger than the API accepts",
            )
        } else {
            ApiError::bad_request(format!(
                "The request body cannot be read: {}",
                rejection.body_text()
            ))
        }
    })?;
    let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("The request body is not valid JSON: {e}"),
        )
    })?;
    // Every body of this API is a JSON object (and every struct in it: `strict.rs`); serde
    // alone would also read a struct from an array of its fields in order.
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "The request body has the wrong shape: it must be a JSON object",
        ));
    }
    integral_floats_to_integers(&mut value).map_err(|e| {
        ApiError::bad_request(format!("The request body has a number out of range: {e}"))
    })?;
    let kept = keep.then(|| value.clone());
    serde_path_to_error::deserialize(super::strict::Strict(value))
        .map(|decoded| (decoded, kept))
        .map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            if at == "." {
                ApiError::bad_request(format!("The request body has the wrong shape: {inner}"))
            } else {
                ApiError::bad_request(format!(
                    "The request body has the wrong shape: {at}: {inner}"
                ))
            }
        })
}

/// `application/json` or any `+json` type, as axum's own extractor accepts.
fn is_json(req: &Request) -> bool {
    let Some(value) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Largest integer a request may carry: the document says `int64` for every integer.
const MAX_INTEGER: u64 = i64::MAX as u64;

/// Rewrites every float with no fraction part that fits a 64-bit signed integer as that
/// integer, and refuses integers beyond the signed 64-bit range.
fn integral_floats_to_integers(value: &mut Value) -> Result<(), String> {
    match value {
        Value::Number(n) if n.as_u64().is_some_and(|u| u > MAX_INTEGER) => Err(format!(
            "{n} is larger than {MAX_INTEGER}, the largest integer the API takes"
        )),
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return Ok(()) };
            // -2^63 ≤ f < 2^63: both bounds are exact in f64.
            if f.fract() == 0.0
                && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f)
            {
                *value = Value::from(f as i64);
            }
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(integral_floats_to_integers),
        Value::Object(map) => map.values_mut().try_for_each(integral_floats_to_integers),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_become_integers_and_fractions_stay() {
        let mut v = serde_json::json!({"a": 2.0, "b": [-3.0, 1.5], "d": 1e300});
        integral_floats_to_integers(&mut v).unwrap();
        assert_eq!(v["a"], Value::from(2_i64));
        assert_eq!(v["b"][0], Value::from(-3_i64));
        assert!(v["b"][1].is_f64());
        assert!(v["d"].is_f64());
        let n: u64 = serde_json::from_value(v["a"].clone()).unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn integers_beyond_int64_are_refused() {
        let mut ok = serde_json::json!({"a": 9_223_372_036_854_775_807_u64});
        integral_floats_to_integers(&mut ok).unwrap();
        let mut big = serde_json::json!({"a": [9_223_372_036_854_775_808_u64]});
        let err = integral_floats_to_integers(&mut big).unwrap_err();
        assert!(err.contains("9223372036854775808"), "{err}");
    }
}
