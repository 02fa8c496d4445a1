//! Row ids are 64-bit snowflakes; JSON carries them as decimal strings because
//! JavaScript numbers lose precision past 2^53.

use crate::FieldError;

/// Parses an id given by a client, naming `field` when it is not a positive decimal id.
pub fn parse_id(field: &str, raw: &str) -> Result<i64, FieldError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.len() > 19 || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::new(field, "must be a decimal id string"));
    }
    match trimmed.parse::<i64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(FieldError::new(field, "must be a positive 64-bit id")),
    }
}

/// Accepts ids as JSON strings (the documented form) or as plain numbers.
pub fn id_from_json(field: &str, value: &serde_json::Value) -> Result<i64, FieldError> {
    match value {
        serde_json::Value::String(s) => parse_id(field, s),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(v) if v > 0 => Ok(v),
            _ => Err(FieldError::new(field, "must be a positive 64-bit id")),
        },
        _ => Err(FieldError::new(field, "must be an id string")),
    }
}

/// Parses a list of ids, naming the index of the first bad one.
pub fn ids_from_json(field: &str, values: &[serde_json::Value]) -> Result<Vec<i64>, FieldError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| id_from_json(&format!("{field}[{i}]"), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_names_the_field() {
        assert_eq!(parse_id("id", "42"), Ok(42));
        assert_eq!(parse_id("id", "abc").map_err(|e| e.field), Err("id".into()));
        assert!(parse_id("id", "0").is_err());
        assert!(parse_id("id", "99999999999999999999").is_err());
        let list = vec![serde_json::json!("1"), serde_json::json!("x")];
        assert_eq!(
            ids_from_json("ids", &list).map_err(|e| e.field),
            Err("ids[1]".into())
        );
    }
}
