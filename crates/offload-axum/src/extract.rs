//! Drop-in replacements for axum's `Json`, `Query` and `Path` whose
//! rejections are problem details.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::rejection::{JsonRejection, PathRejection, QueryRejection};

/// A JSON request body (or response), like [`axum::Json`], refused with a
/// [`JsonRejection`]: 415 for a wrong content type, 400 for malformed JSON,
/// 413 over the body limit ([`axum::extract::DefaultBodyLimit`]), 422 for
/// the wrong shape.
///
/// ```
/// use offload_axum::Json;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct NewNote { text: String }
///
/// async fn create(Json(note): Json<NewNote>) -> String {
///     note.text
/// }
/// let app: axum::Router = axum::Router::new().route("/notes", axum::routing::post(create));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = JsonRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(JsonRejection::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    JsonRejection::PayloadTooLarge
                } else {
                    JsonRejection::BodyUnreadable
                }
            })?;
        decode(&bytes).map(Json)
    }
}

/// Decodes a JSON body: text that is not JSON is a syntax error (400);
/// JSON of the wrong shape is a data error (422) naming the field at fault.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonRejection> {
    // Parsing to a value first keeps the two apart: serde's derive reads
    // arrays as structs, so `[1, 2, 3]` would otherwise fail mid-parse
    // as "trailing characters".
    let value = match serde_json::from_slice::<UniqueKeys>(bytes) {
        Ok(UniqueKeys(value)) => value,
        Err(error) if error.is_data() => {
            // Only a repeated key is a data error here: any JSON is a value.
            return Err(JsonRejection::InvalidBody {
                field: None,
                detail: error.to_string(),
            });
        }
        Err(error) => return Err(JsonRejection::MalformedJson(error.to_string())),
    };
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        JsonRejection::InvalidBody {
            field: (path != ".").then_some(path),
            detail: error.into_inner().to_string(),
        }
    })
}

/// A JSON value whose objects repeat no key. serde_json keeps the last of
/// repeated keys, so `{"name": "a", "name": "b"}` would pass as `"b"`: a
/// proxy or validator that reads the first sees another request (RFC 8259
/// leaves the meaning open; I-JSON, RFC 7493, forbids them).
struct UniqueKeys(serde_json::Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items.into())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key `{key}`: each key may appear once per object"
                )));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(object.into())
    }
}

/// `application/json` or any `application/*+json`, parameters ignored.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query parameters, like [`axum::extract::Query`], refused with a
/// [`QueryRejection`] (400).
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = QueryRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(value))
    }
}

/// Path parameters, like [`axum::extract::Path`], refused with a
/// [`PathRejection`] (400).
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = PathRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Path(value))
    }
}
