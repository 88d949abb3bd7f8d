//! Strict JSON: what a security boundary must refuse and serde_json lets through.
//!
//! serde_json keeps the last of two equal keys, so `{"ticket":"INC-1","ticket":"INC-2"}` means
//! whatever the last reader decides; a log and a check that read it differently disagree. And
//! `deny_unknown_fields` does not reach the unit variants of internally tagged enums, so
//! `{"type":"unwatch","admin":true}` parses. Parsing here refuses both, at any depth:
//!
//! 1. the text is read into a `serde_json::Value` by a visitor that refuses a key seen twice in
//!    one object;
//! 2. the value is decoded into the typed message;
//! 3. the message is encoded again, and every key of the input must appear in that encoding at
//!    the same place. A key the type does not know (and so dropped) is refused by name.
//!
//! Step 3 relies on the wire types writing every field they read (no `skip_serializing`), which
//! the round-trip tests of each type check.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserializer, Serialize};
use serde_json::{Map, Value};

/// Why a strict parse refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictError {
    /// Not JSON, or JSON of the wrong shape for the type.
    #[error("{0}")]
    Malformed(String),
    /// A key appears twice in one object; `path` names the object (`$` is the top).
    #[error("duplicate key {key:?} in {path}")]
    DuplicateKey { path: String, key: String },
    /// A key the message type does not have; `path` names it (`$.request.admin`).
    #[error("unknown field {path}")]
    UnknownField { path: String },
}

/// Parses `text` into a JSON value, refusing a key that appears twice in one object.
pub fn unique_value(text: &str) -> Result<Value, StrictError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = UniqueSeed { path: "$".into(), duplicate: &duplicate }.deserialize(&mut de).and_then(|v| {
        de.end()?;
        Ok(v)
    });
    match (parsed, duplicate.into_inner()) {
        (_, Some((path, key))) => Err(StrictError::DuplicateKey { path, key }),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(StrictError::Malformed(e.to_string())),
    }
}

/// Decodes `value` into `T` and refuses any key of `value` that `T` does not know.
pub fn typed<T: DeserializeOwned + Serialize>(value: Value) -> Result<T, StrictError> {
    let msg: T = T::deserialize(&value).map_err(|e| StrictError::Malformed(e.to_string()))?;
    let known = serde_json::to_value(&msg).map_err(|e| StrictError::Malformed(e.to_string()))?;
    match unknown_key(&value, &known, "$") {
        Some(path) => Err(StrictError::UnknownField { path }),
        None => Ok(msg),
    }
}

/// [`unique_value`] then [`typed`]: the strict counterpart of `serde_json::from_str`.
pub fn from_str<T: DeserializeOwned + Serialize>(text: &str) -> Result<T, StrictError> {
    typed(unique_value(text)?)
}

/// [`from_str`] over bytes that must be UTF-8.
pub fn from_slice<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<T, StrictError> {
    let text = std::str::from_utf8(bytes).map_err(|e| StrictError::Malformed(format!("not UTF-8: {e}")))?;
    from_str(text)
}

/// The path of the first key in `input` that `known` (the re-encoded message) lacks.
fn unknown_key(input: &Value, known: &Value, path: &str) -> Option<String> {
    match (input, known) {
        (Value::Object(input), Value::Object(known)) => input.iter().find_map(|(k, v)| {
            let here = format!("{path}.{k}");
            match known.get(k) {
                None => Some(here),
                Some(kv) => unknown_key(v, kv, &here),
            }
        }),
        (Value::Array(input), Value::Array(known)) => {
            input.iter().zip(known).enumerate().find_map(|(i, (v, kv))| unknown_key(v, kv, &format!("{path}[{i}]")))
        }
        _ => None,
    }
}

/// Builds a `Value`, noting the first duplicate key (with where it was) before failing.
struct UniqueSeed<'a> {
    path: String,
    duplicate: &'a RefCell<Option<(String, String)>>,
}

impl<'de> DeserializeSeed<'de> for UniqueSeed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(UniqueSeed {
            path: format!("{}[{}]", self.path, items.len()),
            duplicate: self.duplicate,
        })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some((self.path.clone(), key.clone()));
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let value =
                map.next_value_seed(UniqueSeed { path: format!("{}.{key}", self.path), duplicate: self.duplicate })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests;
