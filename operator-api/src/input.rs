//! Decoding request bodies and query strings so that every failure is a 400 that
//! names the offending field by its path (`hardware.sn`, `nic[0].mac`).

use actix_web::HttpRequest;
use serde::de::DeserializeOwned;

use crate::ApiError;

pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("body", "a JSON body is required"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        field_error(&path, &inner.to_string())
    })?;
    de.end()
        .map_err(|_| ApiError::invalid("body", "trailing characters after the JSON value"))?;
    Ok(value)
}

pub fn query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    let de =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(req.query_string().as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        field_error(&path, &inner.to_string())
    })
}

/// serde reports a missing field at its parent's path; name the field itself.
fn field_error(path: &str, message: &str) -> ApiError {
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    // serde_path_to_error writes `?` for a position it could not name (truncated input).
    let parent = path.trim_end_matches('?').trim_end_matches('.');
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.trim_end_matches('`');
        let field = if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}.{name}")
        };
        return ApiError::invalid(field, "is required");
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        return ApiError::invalid(
            if parent.is_empty() { "body" } else { parent },
            format!("has an unknown value `{rest}"),
        );
    }
    ApiError::invalid(
        if parent.is_empty() { "body" } else { parent },
        format!("is malformed: {message}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_node::Error;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        sn: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        hardware: Inner,
        count: Option<u32>,
    }

    fn field_of(body: &str) -> String {
        match json::<Outer>(body.as_bytes()) {
            Err(ApiError(Error::InvalidArgument { field, .. })) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"hardware":{"sn":"x"}}"#), "name");
        assert_eq!(field_of(r#"{"name":"a","hardware":{}}"#), "hardware.sn");
        assert_eq!(
            field_of(r#"{"name":"a","hardware":{"sn":1}}"#),
            "hardware.sn"
        );
        assert_eq!(
            field_of(r#"{"name":"a","hardware":{"sn":"x"},"count":-1}"#),
            "count"
        );
        assert_eq!(field_of(r#"{"name":"a""#), "body");
        assert_eq!(field_of(r#"{"name": "a", "#), "body");
        assert_eq!(field_of(r#"{"name":"a","hardware":{"sn":"#), "hardware.sn");
        assert_eq!(field_of(""), "body");
        assert_eq!(field_of(r#"{"name":"a","hardware":{"sn":"x"}} x"#), "body");
    }
}
