//! Extractors whose rejections are our problem documents, never axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldErrors};

/// A JSON body. Not JSON at all → 400 `malformed_json`; wrong content type → 415
/// `unsupported_media_type`; too large → 413 `payload_too_large`; valid JSON of the wrong shape
/// → 422 `validation_failed` with the offending field named in `errors`.
///
/// As a response, serialises `T` with `200 OK`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Expected a request body with `Content-Type: application/json`.",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "The request body is larger than this endpoint accepts.",
                )
            } else {
                ApiError::bad_request("unreadable_body", rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses a JSON document into `T`, with the problem a client should see on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let malformed = |err: serde_json::Error| {
        ApiError::bad_request(
            "malformed_json",
            format!("The request body is not valid JSON: {err}."),
        )
    };
    // Syntax first, over the whole body (trailing garbage included), then shape: a body that
    // is not JSON is a 400 whatever else is wrong with it.
    let document: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
    serde_path_to_error::deserialize(strict::Strict(document)).map_err(|err| {
        let path = err.path().to_string();
        let (field, message) = describe_data_error(&path, &err.into_inner().to_string());
        let mut errors = FieldErrors::default();
        errors.add(field, message);
        errors.into()
    })
}

/// Names the field and says what is wrong with it, in words a client developer can act on.
fn describe_data_error(path: &str, message: &str) -> (String, String) {
    // serde_json appends " at line L column C"; the field path says more than that.
    let message = message
        .rfind(" at line ")
        .map_or(message, |at| &message[..at]);
    let join = |field: &str| {
        if path == "." || path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        }
    };
    if let Some(field) = backticked(message, "missing field `") {
        return (join(field), "is required".to_owned());
    }
    if let Some(field) = backticked(message, "unknown field `") {
        // The path already ends at the unknown key (the parent object is not named twice).
        let named = if path.ends_with(field) {
            path.to_owned()
        } else {
            join(field)
        };
        return (named, "is not a known field".to_owned());
    }
    let field = if path == "." || path.is_empty() {
        "body".to_owned()
    } else {
        path.to_owned()
    };
    (field, message.to_owned())
}

fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

fn has_json_content_type(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers
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

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query parameters; a malformed query is a 400 `invalid_query` problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::bad_request("invalid_query", rejection.body_text())
            })
    }
}

/// Path parameters; a value that does not parse (e.g. a malformed UUID) cannot name an
/// existing resource, so it is a 404 `not_found` problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection: PathRejection| match rejection {
                PathRejection::FailedToDeserializePathParams(_) => ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "No resource at this path.",
                ),
                other => {
                    ApiError::internal(anyhow::anyhow!("path extraction: {}", other.body_text()))
                }
            })
    }
}

/// A JSON document read as it is written: serde's derived `Deserialize` of a struct also
/// takes an *array* of the field values in order (`["title", "body"]` for `{"title", "body"}`),
/// which no client means and no schema allows. Here a struct (or struct variant) comes only
/// from an object; everything else is read as `serde_json` reads it.
mod strict {
    use serde::de::{
        self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, Unexpected,
        VariantAccess, Visitor,
    };
    use serde::forward_to_deserialize_any;
    use serde_json::{Error, Map, Value};

    /// `serde_json`'s marker for `RawValue`, which must reach `serde_json` unchanged.
    const RAW_VALUE: &str = "$serde_json::private::RawValue";

    pub struct Strict(pub Value);

    fn unexpected(value: &Value) -> Unexpected<'_> {
        match value {
            Value::Null => Unexpected::Unit,
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => Unexpected::Unsigned(u),
                (_, Some(i), _) => Unexpected::Signed(i),
                (_, _, Some(f)) => Unexpected::Float(f),
                _ => Unexpected::Other("number"),
            },
            Value::String(s) => Unexpected::Str(s),
            Value::Array(_) => Unexpected::Seq,
            Value::Object(_) => Unexpected::Map,
        }
    }

    /// JSON Schema's `integer` is any number without a fractional part, so `2.0` is one: an
    /// integer field takes a float that is a whole number (exactly representable, within
    /// ±2^53) as that integer, and refuses any other as serde_json does.
    fn integral(value: Value) -> Value {
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        match &value {
            Value::Number(n) if n.is_f64() => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => {
                    if f >= 0.0 {
                        Value::from(f as u64)
                    } else {
                        Value::from(f as i64)
                    }
                }
                _ => value,
            },
            _ => value,
        }
    }

    macro_rules! integers {
        ($($method:ident)*) => {$(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                de::Deserializer::$method(integral(self.0), visitor)
            }
        )*};
    }

    impl<'de> de::Deserializer<'de> for Strict {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Array(items) => {
                    let mut seq = Seq(items.into_iter());
                    let value = visitor.visit_seq(&mut seq)?;
                    match seq.0.len() {
                        0 => Ok(value),
                        _ => Err(de::Error::custom("too many elements in the array")),
                    }
                }
                Value::Object(map) => visitor.visit_map(Fields {
                    iter: map.into_iter(),
                    value: None,
                }),
                scalar => de::Deserializer::deserialize_any(scalar, visitor),
            }
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Null => visitor.visit_none(),
                other => visitor.visit_some(Strict(other)),
            }
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Error> {
            if name == RAW_VALUE {
                return de::Deserializer::deserialize_newtype_struct(self.0, name, visitor);
            }
            visitor.visit_newtype_struct(self)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            match self.0 {
                Value::Object(_) => self.deserialize_any(visitor),
                other => Err(de::Error::invalid_type(unexpected(&other), &visitor)),
            }
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            match self.0 {
                Value::Object(map) if map.len() == 1 => {
                    let Some((variant, value)) = map.into_iter().next() else {
                        return Err(de::Error::invalid_length(0, &"one variant"));
                    };
                    visitor.visit_enum(Variant { variant, value })
                }
                other => de::Deserializer::deserialize_enum(other, name, variants, visitor),
            }
        }

        integers! {
            deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
            deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        }

        forward_to_deserialize_any! {
            bool f32 f64 char str string bytes
            byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
        }
    }

    struct Seq(std::vec::IntoIter<Value>);

    impl<'de> SeqAccess<'de> for Seq {
        type Error = Error;

        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, Error> {
            self.0
                .next()
                .map(|value| seed.deserialize(Strict(value)))
                .transpose()
        }

        fn size_hint(&self) -> Option<usize> {
            Some(self.0.len())
        }
    }

    struct Fields {
        iter: <Map<String, Value> as IntoIterator>::IntoIter,
        value: Option<Value>,
    }

    impl<'de> MapAccess<'de> for Fields {
        type Error = Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Error> {
            match self.iter.next() {
                Some((key, value)) => {
                    self.value = Some(value);
                    seed.deserialize(Key(key)).map(Some)
                }
                None => Ok(None),
            }
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
            match self.value.take() {
                Some(value) => seed.deserialize(Strict(value)),
                None => Err(de::Error::custom("a value without a key")),
            }
        }

        fn size_hint(&self) -> Option<usize> {
            Some(self.iter.len())
        }
    }

    /// An object's key: a string, which a map with number or boolean keys reads as one, as
    /// `serde_json` does (`{"1": ...}` into a `BTreeMap<u32, _>`).
    struct Key(String);

    macro_rules! parse_key {
        ($($method:ident => $visit:ident),* $(,)?) => {$(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                match self.0.parse() {
                    Ok(value) => visitor.$visit(value),
                    Err(_) => Err(de::Error::invalid_type(Unexpected::Str(&self.0), &visitor)),
                }
            }
        )*};
    }

    impl<'de> de::Deserializer<'de> for Key {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_string(self.0)
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_newtype_struct(self)
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_enum(self.0.into_deserializer())
        }

        parse_key! {
            deserialize_bool => visit_bool,
            deserialize_i8 => visit_i8,
            deserialize_i16 => visit_i16,
            deserialize_i32 => visit_i32,
            deserialize_i64 => visit_i64,
            deserialize_i128 => visit_i128,
            deserialize_u8 => visit_u8,
            deserialize_u16 => visit_u16,
            deserialize_u32 => visit_u32,
            deserialize_u64 => visit_u64,
            deserialize_u128 => visit_u128,
        }

        forward_to_deserialize_any! {
            f32 f64 char str string bytes byte_buf option unit unit_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }

    struct Variant {
        variant: String,
        value: Value,
    }

    impl<'de> EnumAccess<'de> for Variant {
        type Error = Error;
        type Variant = Payload;

        fn variant_seed<V: DeserializeSeed<'de>>(
            self,
            seed: V,
        ) -> Result<(V::Value, Payload), Error> {
            let variant = seed.deserialize(self.variant.into_deserializer())?;
            Ok((variant, Payload(self.value)))
        }
    }

    struct Payload(Value);

    impl<'de> VariantAccess<'de> for Payload {
        type Error = Error;

        fn unit_variant(self) -> Result<(), Error> {
            match self.0 {
                Value::Null => Ok(()),
                other => Err(de::Error::invalid_type(
                    unexpected(&other),
                    &"a unit variant",
                )),
            }
        }

        fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
            seed.deserialize(Strict(self.0))
        }

        fn tuple_variant<V: Visitor<'de>>(
            self,
            _len: usize,
            visitor: V,
        ) -> Result<V::Value, Error> {
            de::Deserializer::deserialize_seq(Strict(self.0), visitor)
        }

        fn struct_variant<V: Visitor<'de>>(
            self,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            de::Deserializer::deserialize_struct(Strict(self.0), "", fields, visitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Input {
        title: String,
        tags: Vec<String>,
    }

    fn problem(body: &str) -> crate::Problem {
        parse_json::<Input>(body.as_bytes())
            .unwrap_err()
            .to_problem()
    }

    #[test]
    fn an_integer_may_be_written_as_a_whole_float_as_json_schema_allows() {
        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Counts {
            guests: i32,
            seats: u64,
            ratio: f64,
        }
        let counts: Counts =
            parse_json(br#"{"guests": 2.0, "seats": 1e3, "ratio": 1.0}"#).expect("whole floats");
        assert_eq!(
            counts,
            Counts {
                guests: 2,
                seats: 1000,
                ratio: 1.0
            }
        );
        for body in [
            r#"{"guests": 2.5, "seats": 1, "ratio": 1}"#,
            r#"{"guests": 1, "seats": -1.0, "ratio": 1}"#,
            r#"{"guests": 1e300, "seats": 1, "ratio": 1}"#,
        ] {
            assert!(parse_json::<Counts>(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn syntax_errors_are_400() {
        for body in ["{", "not json", "{\"title\": \"x\", }", "{} trailing"] {
            let p = problem(body);
            assert_eq!(
                (p.status, p.code.as_str()),
                (400, "malformed_json"),
                "{body}"
            );
        }
    }

    #[test]
    fn shape_errors_name_the_field() {
        let p = problem(r#"{"title": 5, "tags": []}"#);
        assert_eq!((p.status, p.code.as_str()), (422, "validation_failed"));
        let errors = p.errors.unwrap();
        assert!(
            errors["title"][0].contains("expected a string"),
            "{errors:?}"
        );

        let errors = problem(r#"{"tags": []}"#).errors.unwrap();
        assert_eq!(errors["title"], vec!["is required"]);

        let errors = problem(r#"{"title": "a", "tags": [], "colour": 1}"#)
            .errors
            .unwrap();
        assert_eq!(
            errors.get("colour"),
            Some(&vec!["is not a known field".to_owned()]),
            "{errors:?}"
        );

        let errors = problem(r#"{"title": "a", "tags": ["ok", 3]}"#)
            .errors
            .unwrap();
        assert!(errors.contains_key("tags[1]"), "{errors:?}");

        let errors = problem("\"just a string\"").errors.unwrap();
        assert!(errors.contains_key("body"), "{errors:?}");
    }

    #[test]
    fn a_struct_is_an_object_never_an_array() {
        // serde's derive alone would take the field values in order.
        let p = problem(r#"["a title", ["tag"]]"#);
        assert_eq!((p.status, p.code.as_str()), (422, "validation_failed"));
        assert!(p.errors.unwrap().contains_key("body"));

        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Outer {
            inner: Option<Inner>,
            list: Vec<Inner>,
            pair: (u8, String),
            choice: Choice,
        }
        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Inner {
            n: u8,
        }
        #[derive(Debug, serde::Deserialize, PartialEq)]
        #[serde(rename_all = "lowercase")]
        enum Choice {
            Plain,
            Wrapped(Inner),
        }
        let nested = parse_json::<Outer>(
            br#"{"inner": [1], "list": [], "pair": [1, "x"], "choice": "plain"}"#,
        )
        .unwrap_err()
        .to_problem();
        assert!(
            nested.errors.unwrap().contains_key("inner"),
            "nested arrays are refused too"
        );

        let ok: Outer = parse_json(
            br#"{"inner": null, "list": [{"n": 1}, {"n": 2}], "pair": [7, "x"], "choice": {"wrapped": {"n": 3}}}"#,
        )
        .unwrap();
        assert_eq!(
            ok,
            Outer {
                inner: None,
                list: vec![Inner { n: 1 }, Inner { n: 2 }],
                pair: (7, "x".into()),
                choice: Choice::Wrapped(Inner { n: 3 }),
            }
        );
        let wrapped_array = parse_json::<Outer>(
            br#"{"inner": null, "list": [], "pair": [7, "x"], "choice": {"wrapped": [3]}}"#,
        );
        assert!(wrapped_array.is_err());
        let by_number: std::collections::BTreeMap<u32, bool> =
            parse_json(br#"{"7": true, "12": false}"#).unwrap();
        assert_eq!(by_number.get(&12), Some(&false));
        let plain: Outer =
            parse_json(br#"{"inner": {"n": 9}, "list": [], "pair": [0, ""], "choice": "plain"}"#)
                .unwrap();
        assert_eq!(plain.inner, Some(Inner { n: 9 }));
    }
}
