//! Minting of operator, account and user JWTs and `.creds` files.
//!
//! **For tests, examples and benchmarks only**: natsgate itself never issues
//! tokens. The output is byte-for-byte what nats-io/jwt v2 writes: header
//! `{"typ":"JWT","alg":"ed25519-nkey"}`, base64 URL without padding, the
//! signature over `header.payload`, `jti` = base32 (no padding) of the
//! SHA-512/256 of the claims JSON with an empty `jti`, and Go's JSON
//! escaping of `<`, `>` and `&`.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use sha2::{Digest, Sha512_256};

use super::claims::{ALGORITHM, ClaimBody, Claims, LIBRARY_VERSION, TOKEN_TYPE};

/// Why minting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("signing key has no seed")]
    NoSeed,
    #[error("the signing key's prefix may not issue {0} claims")]
    IssuerPrefix(&'static str),
    #[error("claims do not serialize: {0}")]
    Json(#[from] serde_json::Error),
}

/// Sign `claims` with `signer` as nats-io/jwt's `Encode` does: sets `iss`
/// to the signer's public key, `nats.type` and `nats.version: 2`, `iat` to
/// now (only if it is 0, so tests can pin it), and `jti`. Refuses a signer
/// whose prefix may not issue this kind of claim.
pub fn encode<N: ClaimBody>(claims: &Claims<N>, signer: &KeyPair) -> Result<String, EncodeError> {
    let mut claims = claims.clone();
    claims.issuer = signer.public_key();
    if !N::issuer_allowed(&claims.issuer) {
        return Err(EncodeError::IssuerPrefix(N::KIND.as_str()));
    }
    let generic = claims.nats.generic_mut();
    generic.kind = N::KIND.as_str().to_owned();
    generic.version = LIBRARY_VERSION;
    if claims.issued_at == 0 {
        claims.issued_at = unix_now();
    }
    encode_as_is(&claims, signer)
}

/// Sign `claims` exactly as given (only `jti` is computed): for tests that
/// need odd tokens (no `iat`, a wrong `iss`, an old version, ...).
pub fn encode_as_is<N: ClaimBody>(
    claims: &Claims<N>,
    signer: &KeyPair,
) -> Result<String, EncodeError> {
    let mut claims = claims.clone();
    claims.id = String::new();
    claims.id = data_encoding::BASE32_NOPAD.encode(&Sha512_256::digest(to_go_json(&claims)?));
    let header = format!(r#"{{"typ":"{TOKEN_TYPE}","alg":"{ALGORITHM}"}}"#);
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(to_go_json(&claims)?));
    let sig = signer
        .sign(token.as_bytes())
        .map_err(|_| EncodeError::NoSeed)?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(token)
}

/// A `.creds` file for `jwt` and `seed`, in the exact layout of
/// `jwt v2/creds_utils.go:FormatUserConfig` (spec 7.1): 5 dashes on BEGIN
/// lines, 6 on END lines. The seed decoration names the seed's kind
/// (`USER`, `ACCOUNT`, `OPERATOR`).
pub fn format_creds(jwt: &str, seed: &str) -> String {
    let kind = match seed.as_bytes().get(1) {
        Some(b'A') => "ACCOUNT",
        Some(b'O') => "OPERATOR",
        _ => "USER",
    };
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN {kind} NKEY SEED-----\n{seed}\n------END {kind} NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// The current time in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// JSON as Go's `encoding/json` writes it: compact, with `<`, `>`, `&`,
/// U+2028 and U+2029 escaped. Those characters only occur inside strings,
/// so replacing them in the output is safe.
fn to_go_json<T: serde::Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let json = serde_json::to_string(value)?;
    if !json.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return Ok(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::claims::{self, Account, Operator, User, UserClaims};
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let op = KeyPair::new_operator();
        let acc = KeyPair::new_account();
        let user = KeyPair::new_user();
        let mut uc = UserClaims {
            subject: user.public_key(),
            name: "u".into(),
            ..Default::default()
        };
        uc.nats.limits.publish.allow = vec![">".into()];
        let token = encode(&uc, &acc).unwrap();
        let header = token.split('.').next().unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(header).unwrap(),
            br#"{"typ":"JWT","alg":"ed25519-nkey"}"#
        );
        let payload = URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap();
        let payload = String::from_utf8(payload).unwrap();
        assert!(payload.contains(r#""allow":["\u003e"]"#), "{payload}");
        assert!(
            payload.contains(r#""type":"user","version":2"#),
            "{payload}"
        );
        let back = claims::decode::<User>(&token).unwrap();
        assert_eq!(back.subject, user.public_key());
        assert_eq!(back.issuer, acc.public_key());
        assert!(back.issued_at > 0);
        assert_eq!(back.id.len(), 52);
        // jti = base32(SHA-512/256(claims with empty jti))
        let mut no_id = back.clone();
        no_id.id.clear();
        let hash = Sha512_256::digest(to_go_json(&no_id).unwrap());
        assert_eq!(back.id, data_encoding::BASE32_NOPAD.encode(&hash));
        // Wrong signer kinds are refused.
        assert!(encode(&uc, &op).is_err());
        assert!(encode(&Claims::<Operator>::default(), &acc).is_err());
        assert!(encode(&Claims::<Account>::default(), &op).is_ok());
    }

    #[test]
    fn creds_layout() {
        let user = KeyPair::new_user();
        let seed = user.seed().unwrap();
        let creds = format_creds("JWT", &seed);
        let expected = format!(
            "-----BEGIN NATS USER JWT-----\nJWT\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\nNKEYs are sensitive and should be treated as secrets.\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n*************************************************************\n"
        );
        assert_eq!(creds, expected);
    }
}
