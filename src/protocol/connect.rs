//! The CONNECT JSON, decoded the way nats-server decodes it (spec 1.4): Go's
//! `encoding/json` into the *existing* options, so keys match
//! case-insensitively, the last duplicate wins, `null` leaves a value alone,
//! unknown keys are ignored, and a type mismatch or trailing garbage is an
//! error (which makes nats-server close the connection silently).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// The client's connection options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectOptions {
    pub verbose: bool,
    pub pedantic: bool,
    pub echo: bool,
    pub tls_required: bool,
    pub auth_token: Option<String>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub name: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
    pub protocol: i64,
    pub headers: bool,
    pub no_responders: bool,
    pub jwt: Option<String>,
    pub nkey: Option<String>,
    pub sig: Option<String>,
    pub account: Option<String>,
    pub new_account: bool,
}

impl Default for ConnectOptions {
    /// nats-server's defaults before the first CONNECT: verbose, pedantic and
    /// echo are on.
    fn default() -> Self {
        ConnectOptions {
            verbose: true,
            pedantic: true,
            echo: true,
            tls_required: false,
            auth_token: None,
            user: None,
            pass: None,
            name: None,
            lang: None,
            version: None,
            protocol: 0,
            headers: false,
            no_responders: false,
            jwt: None,
            nkey: None,
            sig: None,
            account: None,
            new_account: false,
        }
    }
}

/// Why a CONNECT JSON was refused. nats-server closes without an error.
#[derive(Debug, thiserror::Error)]
#[error("invalid CONNECT JSON: {0}")]
pub struct ConnectError(String);

impl ConnectOptions {
    /// Decodes `json` over `self`, as Go's `json.Unmarshal` into the existing
    /// struct. On error `self` may be partly updated; callers close anyway.
    pub fn merge_json(&mut self, json: &[u8]) -> Result<(), ConnectError> {
        let mut de = serde_json::Deserializer::from_slice(json);
        Merge(self)
            .deserialize(&mut de)
            .map_err(|e| ConnectError(e.to_string()))?;
        de.end().map_err(|e| ConnectError(e.to_string()))
    }

    fn set(&mut self, key: &str, value: Value) -> Result<(), String> {
        if value.is_null() {
            return Ok(());
        }
        let key = key.to_ascii_lowercase();
        match key.as_str() {
            "verbose" => self.verbose = boolean(&key, value)?,
            "pedantic" => self.pedantic = boolean(&key, value)?,
            "echo" => self.echo = boolean(&key, value)?,
            "tls_required" => self.tls_required = boolean(&key, value)?,
            "headers" => self.headers = boolean(&key, value)?,
            "no_responders" => self.no_responders = boolean(&key, value)?,
            "new_account" => self.new_account = boolean(&key, value)?,
            "auth_token" => self.auth_token = Some(string(&key, value)?),
            "user" => self.user = Some(string(&key, value)?),
            "pass" => self.pass = Some(string(&key, value)?),
            "name" => self.name = Some(string(&key, value)?),
            "lang" => self.lang = Some(string(&key, value)?),
            "version" => self.version = Some(string(&key, value)?),
            "jwt" => self.jwt = Some(string(&key, value)?),
            "nkey" => self.nkey = Some(string(&key, value)?),
            "sig" => self.sig = Some(string(&key, value)?),
            "account" => self.account = Some(string(&key, value)?),
            "protocol" => {
                self.protocol = value
                    .as_i64()
                    .filter(|_| value.is_i64() || value.is_u64())
                    .ok_or_else(|| format!("{key}: not an integer"))?
            }
            _ => {}
        }
        Ok(())
    }
}

fn boolean(key: &str, value: Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("{key}: not a boolean"))
}

fn string(key: &str, value: Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(format!("{key}: not a string")),
    }
}

/// Visits the JSON object's entries in document order, so that the last of
/// two keys that differ only in case wins, as in Go.
struct Merge<'o>(&'o mut ConnectOptions);

impl<'de> DeserializeSeed<'de> for Merge<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Merge<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    /// `null` into a Go struct is a no-op.
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let value: Value = map.next_value()?;
            self.0.set(&key, value).map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(json: &str) -> Result<ConnectOptions, ConnectError> {
        let mut opts = ConnectOptions::default();
        opts.merge_json(json.as_bytes()).map(|_| opts)
    }

    #[test]
    fn defaults_apply_when_keys_are_absent() {
        let opts = merged(r#"{"jwt":"x"}"#).unwrap();
        assert!(opts.verbose && opts.pedantic && opts.echo);
        assert_eq!(opts.jwt.as_deref(), Some("x"));
        assert_eq!(opts.protocol, 0);
    }

    #[test]
    fn keys_are_case_insensitive_and_the_last_wins() {
        let opts =
            merged(r#"{"sig":"a","SIG":"b","Verbose":false,"jwt":null,"unknown":[1]}"#).unwrap();
        assert_eq!(opts.sig.as_deref(), Some("b"));
        assert!(!opts.verbose);
        assert_eq!(opts.jwt, None);
    }

    #[test]
    fn type_mismatches_and_garbage_are_errors() {
        assert!(merged(r#"{"verbose":"false"}"#).is_err());
        assert!(merged(r#"{"protocol":1.5}"#).is_err());
        assert!(merged(r#"{"protocol":1.0}"#).is_err());
        assert!(merged(r#"{"name":5}"#).is_err());
        assert!(merged(r#"{} x"#).is_err());
        assert!(merged("").is_err());
        assert!(merged("[]").is_err());
        assert!(merged("null").is_ok());
    }

    #[test]
    fn a_second_connect_decodes_over_the_first() {
        let mut opts = merged(r#"{"jwt":"j","sig":"s","verbose":false}"#).unwrap();
        opts.merge_json(br#"{}"#).unwrap();
        assert_eq!(opts.jwt.as_deref(), Some("j"));
        assert!(!opts.verbose);
    }
}
