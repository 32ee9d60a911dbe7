//! JWT claim types (nats-io/jwt v2 layout) and the decoder.
//!
//! Owns: the serde model of operator, account and user claims, and
//! `decode` (spec 3.1, 3.2). Decoding is tolerant the way Go's
//! `encoding/json` is: unknown fields are ignored and absent fields take the
//! zero value (so an absent limit is 0, "nothing allowed", spec 3.5).
//! Does not own: chain checks, time checks or permissions (see `store`).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Go's `base64.RawURLEncoding` as nats-io/jwt decodes with it: no padding,
/// and the unused low bits of the last character are not checked.
const URL_SAFE_NO_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::auth::nkey;

// === claim types ===

/// The fields common to every claim (`jwt v2/claims.go:ClaimsData`), with
/// the kind-specific `nats` object. Field order is the order nats-io/jwt
/// writes them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Claims<N> {
    #[serde(rename = "aud", skip_serializing_if = "String::is_empty")]
    pub audience: String,
    #[serde(rename = "exp", skip_serializing_if = "is_zero")]
    pub expires: i64,
    #[serde(rename = "jti", skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(rename = "iat", skip_serializing_if = "is_zero")]
    pub issued_at: i64,
    #[serde(rename = "iss", skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "nbf", skip_serializing_if = "is_zero")]
    pub not_before: i64,
    #[serde(rename = "sub", skip_serializing_if = "String::is_empty")]
    pub subject: String,
    pub nats: N,
}

pub type OperatorClaims = Claims<Operator>;
pub type AccountClaims = Claims<Account>;
pub type UserClaims = Claims<User>;
pub type GenericClaims = Claims<Generic>;

/// `nats` of an operator JWT (`jwt v2/operator_claims.go`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Operator {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub account_server_url: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operator_service_urls: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub system_account: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub assert_server_version: String,
    #[serde(skip_serializing_if = "is_false")]
    pub strict_signing_key_usage: bool,
    #[serde(flatten)]
    pub generic: GenericFields,
}

/// `nats` of an account JWT (`jwt v2/account_claims.go`). Parts natsgate
/// does not interpret (imports, exports, mappings, ...) are kept as raw JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Account {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imports: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exports: Option<Value>,
    pub limits: OperatorLimits,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<SigningKey>,
    /// `{"<user key or *>": <unix seconds>}`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub revocations: BTreeMap<String, i64>,
    #[serde(skip_serializing_if = "Permissions::is_empty")]
    pub default_permissions: Permissions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mappings: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Value>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_traffic: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub info_url: String,
    #[serde(flatten)]
    pub generic: GenericFields,
}

/// Account `limits` (`OperatorLimits`): NATS limits, account limits, and the
/// JetStream limits kept raw. `-1` is unlimited; absent is 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OperatorLimits {
    #[serde(skip_serializing_if = "is_zero")]
    pub subs: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub data: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub payload: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub imports: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub exports: i64,
    #[serde(skip_serializing_if = "is_false")]
    pub wildcards: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub disallow_bearer: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub conn: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub leaf: i64,
    /// JetStream limits and anything newer, passed through untouched.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl OperatorLimits {
    /// What nsc writes for a new account: everything unlimited (`-1`), JetStream disabled.
    pub fn unlimited() -> OperatorLimits {
        OperatorLimits {
            subs: -1,
            data: -1,
            payload: -1,
            imports: -1,
            exports: -1,
            wildcards: true,
            disallow_bearer: false,
            conn: -1,
            leaf: -1,
            other: Map::new(),
        }
    }
}

/// One entry of an account's `signing_keys`: a plain key or a user scope.
#[derive(Clone, Debug, PartialEq)]
pub enum SigningKey {
    Plain(String),
    Scoped(Box<UserScope>),
}

impl SigningKey {
    pub fn key(&self) -> &str {
        match self {
            SigningKey::Plain(k) => k,
            SigningKey::Scoped(s) => &s.key,
        }
    }
}

/// A scoped signing key (`jwt v2/signingkeys.go:UserScope`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserScope {
    pub kind: String,
    pub key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub role: String,
    pub template: UserPermissionLimits,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl Serialize for SigningKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SigningKey::Plain(k) => s.serialize_str(k),
            SigningKey::Scoped(scope) => scope.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for SigningKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(k) => Ok(SigningKey::Plain(k)),
            v @ Value::Object(_) => {
                let scope: UserScope =
                    serde_json::from_value(v).map_err(serde::de::Error::custom)?;
                if scope.kind != USER_SCOPE {
                    return Err(serde::de::Error::custom(format!(
                        "unknown signing key scope {:?}",
                        scope.kind
                    )));
                }
                Ok(SigningKey::Scoped(Box::new(scope)))
            }
            _ => Err(serde::de::Error::custom(
                "signing key must be a string or an object",
            )),
        }
    }
}

/// `nats` of a user JWT (`jwt v2/user_claims.go:User`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    #[serde(flatten)]
    pub limits: UserPermissionLimits,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub issuer_account: String,
    #[serde(flatten)]
    pub generic: GenericFields,
}

/// Permissions and limits of a user, also the template of a scoped key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserPermissionLimits {
    #[serde(rename = "pub", skip_serializing_if = "Permission::is_empty")]
    pub publish: Permission,
    #[serde(rename = "sub", skip_serializing_if = "Permission::is_empty")]
    pub subscribe: Permission,
    #[serde(rename = "resp", skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponsePermission>,
    #[serde(
        rename = "src",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_cidr_list"
    )]
    pub source: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub times: Vec<TimeRange>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub times_location: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub subs: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub data: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub payload: i64,
    #[serde(skip_serializing_if = "is_false")]
    pub bearer_token: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub proxy_required: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_connection_types: Vec<String>,
}

impl UserPermissionLimits {
    /// What nsc writes for a new, unrestricted user: limits `-1`.
    pub fn unlimited() -> UserPermissionLimits {
        UserPermissionLimits {
            subs: -1,
            data: -1,
            payload: -1,
            ..UserPermissionLimits::default()
        }
    }

    /// True when nothing at all is set (what a scoped signing key requires
    /// of its users, spec 3.11).
    pub fn is_empty(&self) -> bool {
        *self == UserPermissionLimits::default()
    }
}

/// `pub`, `sub` or `resp`: the `Permissions` object (also the account's
/// `default_permissions`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Permissions {
    #[serde(rename = "pub", skip_serializing_if = "Permission::is_empty")]
    pub publish: Permission,
    #[serde(rename = "sub", skip_serializing_if = "Permission::is_empty")]
    pub subscribe: Permission,
    #[serde(rename = "resp", skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponsePermission>,
}

impl Permissions {
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty() && self.response.is_none()
    }
}

/// An allow and a deny list. In a JWT an empty list and an absent list are
/// the same (omitempty).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Permission {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl Permission {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// `resp`: replies allowed per request and for how long (`ttl` in
/// nanoseconds, a Go `time.Duration`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsePermission {
    pub max: i64,
    pub ttl: i64,
}

/// One `times` entry, `HH:MM:SS` strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeRange {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub start: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub end: String,
}

/// `tags`, `type`, `version`, present in every `nats` object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenericFields {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub version: i64,
}

/// The kind of a claim, from `nats.type` (v2) or the top-level `type` (v1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimKind {
    Operator,
    Account,
    User,
    /// Any kind (`jwt.DecodeGeneric`): the resolver's delete request.
    Generic,
}

impl ClaimKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ClaimKind::Operator => "operator",
            ClaimKind::Account => "account",
            ClaimKind::User => "user",
            ClaimKind::Generic => "generic",
        }
    }
}

/// A claim kind natsgate can decode.
pub trait ClaimBody: DeserializeOwned + Serialize + Default + Clone {
    const KIND: ClaimKind;
    fn generic(&self) -> &GenericFields;
    fn generic_mut(&mut self) -> &mut GenericFields;
    /// The key prefixes allowed for `iss` (spec 3.2 rule 5).
    fn issuer_allowed(iss: &str) -> bool;
}

impl ClaimBody for Operator {
    const KIND: ClaimKind = ClaimKind::Operator;
    fn generic(&self) -> &GenericFields {
        &self.generic
    }
    fn generic_mut(&mut self) -> &mut GenericFields {
        &mut self.generic
    }
    fn issuer_allowed(iss: &str) -> bool {
        nkey::is_operator_public_key(iss)
    }
}

impl ClaimBody for Account {
    const KIND: ClaimKind = ClaimKind::Account;
    fn generic(&self) -> &GenericFields {
        &self.generic
    }
    fn generic_mut(&mut self) -> &mut GenericFields {
        &mut self.generic
    }
    fn issuer_allowed(iss: &str) -> bool {
        nkey::is_operator_public_key(iss) || nkey::is_account_public_key(iss)
    }
}

/// `nats` of a generic claim (`jwt v2/genericlaims.go`), as nsc signs
/// the resolver's delete request: `accounts` is what it asks to delete.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Generic {
    #[serde(flatten)]
    pub generic: GenericFields,
    /// Kept raw: a malformed list is the caller's error to name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<serde_json::Value>,
}

impl ClaimBody for Generic {
    const KIND: ClaimKind = ClaimKind::Generic;
    fn generic(&self) -> &GenericFields {
        &self.generic
    }
    fn generic_mut(&mut self) -> &mut GenericFields {
        &mut self.generic
    }
    fn issuer_allowed(_: &str) -> bool {
        true
    }
}

impl ClaimBody for User {
    const KIND: ClaimKind = ClaimKind::User;
    fn generic(&self) -> &GenericFields {
        &self.generic
    }
    fn generic_mut(&mut self) -> &mut GenericFields {
        &mut self.generic
    }
    fn issuer_allowed(iss: &str) -> bool {
        nkey::is_account_public_key(iss)
    }
}

// === decoding ===

/// Why a token did not decode (spec 3.2). The texts follow nats-io/jwt.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("JWT is too long")]
    TooLong,
    #[error("expected 3 chunks")]
    Chunks,
    #[error("invalid header: {0}")]
    Header(String),
    #[error("invalid claims: {0}")]
    Payload(String),
    #[error("JWT was generated by a newer version")]
    NewerVersion,
    #[error("expected {expected} claim type, got {actual:?}")]
    WrongKind {
        expected: &'static str,
        actual: String,
    },
    #[error("invalid signature")]
    Signature,
    #[error("claim failed V{version} signature verification")]
    NotVerified { version: i64 },
    #[error("unable to validate the issuer {0:?} for this kind of claim")]
    Issuer(String),
}

/// Decode and verify a token of kind `N` (`jwt v2/decoder.go:Decode` plus
/// `Decode<Kind>Claims`): 3 chunks, header, payload, version, kind,
/// signature by `iss`, issuer prefix. No time checks.
pub fn decode<N: ClaimBody>(token: &str) -> Result<Claims<N>, DecodeError> {
    // The chunks first, as nats-io/jwt: a large blob without dots gets
    // the same text as from nats-server.
    if memchr::memchr_iter(b'.', token.as_bytes()).count() != 2 {
        return Err(DecodeError::Chunks);
    }
    if token.len() > MAX_TOKEN_SIZE {
        return Err(DecodeError::TooLong);
    }
    let chunks: Vec<&str> = token.split('.').collect();
    let [header_b64, payload_b64, sig_b64] = chunks[..] else {
        return Err(DecodeError::Chunks);
    };
    let header = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|e| DecodeError::Header(e.to_string()))?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| DecodeError::Header(e.to_string()))?;
    if !header.typ.eq_ignore_ascii_case(TOKEN_TYPE) {
        return Err(DecodeError::Header(format!(
            "not supported type {:?}",
            header.typ
        )));
    }
    if !header.alg.eq_ignore_ascii_case(ALGORITHM) && !header.alg.eq_ignore_ascii_case(ALGORITHM_V1)
    {
        return Err(DecodeError::Header(format!(
            "unexpected {:?} algorithm",
            header.alg
        )));
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|e| DecodeError::Payload(e.to_string()))?;
    let ident: Identifier =
        serde_json::from_slice(&payload).map_err(|e| DecodeError::Payload(e.to_string()))?;
    let (version, kind) = if !ident.kind.is_empty() {
        (1, ident.kind.as_str())
    } else {
        (ident.nats.version, ident.nats.kind.as_str())
    };
    if version > LIBRARY_VERSION {
        return Err(DecodeError::NewerVersion);
    }
    if kind != N::KIND.as_str() && N::KIND != ClaimKind::Generic {
        return Err(DecodeError::WrongKind {
            expected: N::KIND.as_str(),
            actual: kind.to_owned(),
        });
    }
    let mut claims: Claims<N> =
        serde_json::from_slice(&payload).map_err(|e| DecodeError::Payload(e.to_string()))?;
    if version <= 1 {
        // v1: `type` and `tags` are top-level; move them where v2 keeps them.
        let generic = claims.nats.generic_mut();
        generic.kind = ident.kind.clone();
        if generic.tags.is_empty() {
            generic.tags = ident.tags.clone();
        }
    }
    let sig = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| DecodeError::Signature)?;
    let signed: &[u8] = if version <= 1 {
        payload_b64.as_bytes()
    } else {
        &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()]
    };
    let issuer = match nkey::parse_public_key(&claims.issuer) {
        Some(Some(kp)) => kp,
        _ => return Err(DecodeError::NotVerified { version }),
    };
    issuer
        .verify(signed, &sig)
        .map_err(|_| DecodeError::NotVerified { version })?;
    if !N::issuer_allowed(&claims.issuer) {
        return Err(DecodeError::Issuer(claims.issuer.clone()));
    }
    Ok(claims)
}

impl fmt::Display for ClaimKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    typ: String,
    #[serde(default)]
    alg: String,
}

/// Just enough of a payload to tell version and kind (`jwt v2/decoder.go:identifier`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    tags: Vec<String>,
    nats: GenericFields,
}

/// `src` is a list of CIDRs or one comma-separated string (spec 5.1).
fn de_cidr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
        Null(()),
    }
    Ok(match Either::deserialize(d)? {
        Either::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Either::Many(v) => v.into_iter().map(|s| s.trim().to_owned()).collect(),
        Either::Null(()) => Vec::new(),
    })
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

// === constants ===

/// `jwt v2/decoder.go:MaxTokenSize`.
pub const MAX_TOKEN_SIZE: usize = 1024 * 1024;
/// The claim version nats-io/jwt v2 writes and the newest it reads.
pub const LIBRARY_VERSION: i64 = 2;
pub const TOKEN_TYPE: &str = "JWT";
pub const ALGORITHM: &str = "ed25519-nkey";
const ALGORITHM_V1: &str = "ed25519";
pub const USER_SCOPE: &str = "user_scope";
