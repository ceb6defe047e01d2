//! How a connector authenticates to an API: the `auth` object of a configuration.
//!
//! Connectors that call an HTTP API with a static credential can put an
//! `Option<Auth>` in their config, so every connector accepts the same shape and a
//! user writes it the same way everywhere:
//!
//! ```json
//! {"auth": {"type": "bearer", "token": "…"}}
//! {"auth": {"type": "header", "name": "X-Api-Key", "value": "…"}}
//! ```
//!
//! ```ignore
//! use sluice_sdk::auth::Auth;
//!
//! #[derive(serde::Deserialize)]
//! struct Config {
//!     base_url: String,
//!     #[serde(default)]
//!     auth: Option<Auth>,
//! }
//!
//! let mut request = sluice_sdk::http::Request::get(&config.base_url)?;
//! if let Some(auth) = &config.auth {
//!     request = auth.apply(request);
//! }
//! ```
//!
//! The credential is a secret: name it among the connection's secrets so the host
//! redacts it from logs and errors. This module only reads a config and builds a
//! header; it never stores or sends anything itself.

use serde::Deserialize;
use serde_json::json;

use crate::http::Request;

/// How requests authenticate: one header carrying a static credential.
///
/// Deserialized from an object tagged by `type` (`bearer` or `header`); unknown
/// types and unknown fields are rejected, so a misspelt field fails the check
/// instead of silently sending no credential.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: String,
    },
    /// Any header carrying a key, e.g. `X-Api-Key`.
    Header {
        /// The header's name.
        name: String,
        /// The header's value.
        value: String,
    },
}

impl Auth {
    /// The header (name, value) that carries the credential.
    pub fn header(&self) -> (String, String) {
        match self {
            Auth::Bearer { token } => ("authorization".into(), format!("Bearer {token}")),
            Auth::Header { name, value } => (name.clone(), value.clone()),
        }
    }

    /// `request` carrying the credential.
    pub fn apply(&self, request: Request) -> Request {
        let (name, value) = self.header();
        request.header(name, value)
    }

    /// The JSON Schema of an optional `auth` property, for a connector's `spec`.
    /// Secrets are marked `writeOnly`, so tools never display them.
    pub fn json_schema() -> serde_json::Value {
        json!({"oneOf": [
            {"type": "object", "additionalProperties": false, "required": ["type", "token"],
             "properties": {"type": {"const": "bearer"},
                            "token": {"type": "string", "writeOnly": true}}},
            {"type": "object", "additionalProperties": false,
             "required": ["type", "name", "value"],
             "properties": {"type": {"const": "header"},
                            "name": {"type": "string", "minLength": 1},
                            "value": {"type": "string", "writeOnly": true}}},
            {"type": "null"}
        ]})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> serde_json::Result<Option<Auth>> {
        serde_json::from_value(v)
    }

    #[test]
    fn both_shapes_parse_and_become_one_header() {
        let bearer = parse(json!({"type": "bearer", "token": "t"}))
            .unwrap()
            .unwrap();
        assert_eq!(bearer.header(), ("authorization".into(), "Bearer t".into()));
        let header = parse(json!({"type": "header", "name": "X-Api-Key", "value": "k"}))
            .unwrap()
            .unwrap();
        assert_eq!(header.header(), ("X-Api-Key".into(), "k".into()));
        assert_eq!(parse(json!(null)).unwrap(), None);
    }

    #[test]
    fn unknown_types_and_fields_are_refused() {
        assert!(parse(json!({"type": "basic", "user": "u"})).is_err());
        assert!(parse(json!({"type": "bearer", "token": "t", "extra": 1})).is_err());
        assert!(parse(json!({"type": "header", "name": "X-Api-Key"})).is_err());
        assert!(parse(json!({"token": "t"})).is_err());
    }
}
