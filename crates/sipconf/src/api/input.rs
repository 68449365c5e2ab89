//! Lenient request bodies (docs/api.md "Conventions"): booleans as `true` or
//! `"true"` in any case, numbers as `2000` or `"2000"`, `null` as absent,
//! unknown fields ignored, enum strings in any case. Every malformed field is
//! a 400 that names it. It reads bodies and nothing else: what a field does
//! is the handler's business.

use super::error::ApiError;
use serde_json::{Map, Value};

/// A request body as a JSON object.
#[derive(Debug, Default)]
pub struct Input {
    fields: Map<String, Value>,
}

impl Input {
    /// Parses a body; an empty body is an empty object.
    pub fn parse(body: &[u8]) -> Result<Input, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Input::default());
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => Ok(Input { fields }),
            Ok(_) => Err(ApiError::Validation(
                "The request body must be a JSON object".into(),
            )),
            Err(e) => Err(ApiError::Validation(format!(
                "The request body is not valid JSON: {e}"
            ))),
        }
    }

    /// A field's value; `null` is absent.
    fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).filter(|v| !v.is_null())
    }

    pub fn string(&self, name: &'static str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ApiError::Validation(format!(
                "The property {name} must be a string"
            ))),
        }
    }

    pub fn required_string(&self, name: &'static str) -> Result<String, ApiError> {
        match self.string(name)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(ApiError::MissingProperty(name)),
        }
    }

    pub fn boolean(&self, name: &'static str) -> Result<Option<bool>, ApiError> {
        let bad = || ApiError::Validation(format!("The property {name} must be true or false"));
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(bad()),
        }
    }

    pub fn number(&self, name: &'static str) -> Result<Option<u64>, ApiError> {
        let bad = || {
            ApiError::Validation(format!(
                "The property {name} must be a whole number that is not negative"
            ))
        };
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    /// An absolute http(s) URL; `""` clears it (`Some(None)`).
    pub fn url(&self, name: &'static str) -> Result<Option<Option<String>>, ApiError> {
        let Some(text) = self.string(name)? else {
            return Ok(None);
        };
        let text = text.trim().to_string();
        if text.is_empty() {
            return Ok(Some(None));
        }
        match reqwest::Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Ok(Some(Some(text)))
            }
            _ => Err(ApiError::InvalidUrl(name, text)),
        }
    }

    /// A string that must be one of a set (any case), parsed by `parse`.
    pub fn choice<T>(
        &self,
        name: &'static str,
        allowed: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ApiError> {
        let Some(text) = self.string(name)? else {
            return Ok(None);
        };
        parse(text.trim()).map(Some).ok_or_else(|| {
            ApiError::Validation(format!("The property {name} must be one of {allowed}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_stand_for_booleans_and_numbers_and_null_is_absent() {
        let input = Input::parse(
            br#"{"mute":"TRUE","hold":false,"callbackTimeout":"2000","tag":null,"other":[1]}"#,
        )
        .unwrap();
        assert_eq!(input.boolean("mute").unwrap(), Some(true));
        assert_eq!(input.boolean("hold").unwrap(), Some(false));
        assert_eq!(input.number("callbackTimeout").unwrap(), Some(2000));
        assert_eq!(input.string("tag").unwrap(), None);
        assert!(matches!(
            input.required_string("tag"),
            Err(ApiError::MissingProperty("tag"))
        ));
    }

    #[test]
    fn malformed_values_name_the_field() {
        let input = Input::parse(br#"{"mute":"yes","callbackUrl":"ftp://x"}"#).unwrap();
        match input.boolean("mute") {
            Err(ApiError::Validation(m)) => assert!(m.contains("mute")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            input.url("callbackUrl"),
            Err(ApiError::InvalidUrl("callbackUrl", _))
        ));
        assert!(Input::parse(b"{nope").is_err());
        assert!(Input::parse(b"[1]").is_err());
        assert!(Input::parse(b"  ").is_ok());
    }
}
