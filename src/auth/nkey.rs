//! NKey public keys and the nonce signature check.
//!
//! Owns: turning the CONNECT `sig` field into bytes exactly as nats-server
//! does (base64 URL alphabet without padding first, then the standard
//! alphabet with padding; spec 1.5), and verifying it over the nonce with an
//! NKey public key. Does not own: choosing which key to use (the JWT `sub` or
//! the CONNECT `nkey`), nonce generation, logging or metrics.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use nkeys::KeyPair;

/// Why a nonce signature was refused. Every variant becomes
/// `-ERR 'Authorization Violation'` on the wire; the variant is for the debug
/// log ([`fmt::Display`] gives nats-server's debug text) and the metric label
/// ([`SignatureError::reason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// CONNECT had no `sig` (or an empty one).
    Missing,
    /// `sig` decodes neither as base64 URL-no-pad nor as standard padded base64.
    NotBase64,
    /// The public key is not a valid NKey public key (bad base32, CRC,
    /// prefix or length).
    BadPublicKey,
    /// The signature does not verify over the nonce with that key.
    NotVerified,
}

impl SignatureError {
    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::Missing => "signature_missing",
            SignatureError::NotBase64 => "signature_not_base64",
            SignatureError::BadPublicKey => "bad_public_key",
            SignatureError::NotVerified => "signature_not_verified",
        }
    }
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // nats-server's debug texts (`server/auth.go`).
        f.write_str(match self {
            SignatureError::Missing => "Signature missing",
            SignatureError::NotBase64 => "Signature not valid base64",
            SignatureError::BadPublicKey => "User nkey not valid",
            SignatureError::NotVerified => "Signature not verified",
        })
    }
}

impl std::error::Error for SignatureError {}

/// Verify `sig` (the CONNECT field) over the nonce string's ASCII bytes (the
/// 15 characters sent in INFO, not their base64-decoded value) with
/// `public_key`.
///
/// `public_key` may carry any public NKey prefix (U, A, O, N, C, X), as
/// nats `FromPublicKey` accepts them; the raw key must be 32 bytes. The
/// checks run in nats-server's order: missing, base64, key, signature.
pub fn verify_nonce_signature(
    public_key: &str,
    nonce: &[u8],
    sig: Option<&str>,
) -> Result<(), SignatureError> {
    let sig = match sig {
        Some(s) if !s.is_empty() => s,
        _ => return Err(SignatureError::Missing),
    };
    let sig = decode_signature(sig).ok_or(SignatureError::NotBase64)?;
    let key = parse_public_key(public_key).ok_or(SignatureError::BadPublicKey)?;
    // A key that is well formed as an NKey but is not a valid curve point
    // cannot verify anything: Go reports that as "Signature not verified".
    let key = key.ok_or(SignatureError::NotVerified)?;
    key.verify(nonce, &sig)
        .map_err(|_| SignatureError::NotVerified)
}

/// True if `s` is a well-formed user public key (`U...`, 56 characters,
/// valid base32 and CRC).
pub fn is_user_public_key(s: &str) -> bool {
    public_key_prefix(s) == Some(PREFIX_USER)
}

/// True if `s` is a well-formed account public key (`A...`).
pub fn is_account_public_key(s: &str) -> bool {
    public_key_prefix(s) == Some(PREFIX_ACCOUNT)
}

/// True if `s` is a well-formed operator public key (`O...`).
pub fn is_operator_public_key(s: &str) -> bool {
    public_key_prefix(s) == Some(PREFIX_OPERATOR)
}

/// Decode a `sig` value the way nats-server does: base64 URL alphabet without
/// padding, else standard alphabet with padding. Like Go's decoder, CR and LF
/// are skipped and non-zero trailing bits are tolerated.
pub fn decode_signature(sig: &str) -> Option<Vec<u8>> {
    let cleaned: String;
    let sig = if sig.contains(['\r', '\n']) {
        cleaned = sig.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        cleaned.as_str()
    } else {
        sig
    };
    URL_NO_PAD
        .decode(sig)
        .or_else(|_| STANDARD_PADDED.decode(sig))
        .ok()
}

/// The prefix byte of a valid public NKey, or `None`.
pub(crate) fn public_key_prefix(s: &str) -> Option<u8> {
    let (prefix, _) = nkeys::from_public_key(s).ok()?;
    PUBLIC_PREFIXES.contains(&prefix).then_some(prefix)
}

/// Parse a public key: `None` if it is not a valid public NKey,
/// `Some(None)` if it is well formed but not a usable Ed25519 point.
pub(crate) fn parse_public_key(s: &str) -> Option<Option<KeyPair>> {
    public_key_prefix(s)?;
    Some(KeyPair::from_public_key(s).ok())
}

// === constants ===

const PREFIX_ACCOUNT: u8 = 0;
const PREFIX_CLUSTER: u8 = 2 << 3;
const PREFIX_SERVER: u8 = 13 << 3;
const PREFIX_OPERATOR: u8 = 14 << 3;
const PREFIX_USER: u8 = 20 << 3;
const PREFIX_CURVE: u8 = 23 << 3;

/// The prefixes Go's `nkeys.FromPublicKey` accepts (the Rust crate also
/// accepts module and service keys, which Go does not).
const PUBLIC_PREFIXES: [u8; 6] = [
    PREFIX_ACCOUNT,
    PREFIX_CLUSTER,
    PREFIX_SERVER,
    PREFIX_OPERATOR,
    PREFIX_USER,
    PREFIX_CURVE,
];

const URL_NO_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

const STANDARD_PADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose;

    use super::*;

    const NONCE: &[u8] = b"abcdefghijklmno";

    fn signed(kp: &KeyPair, data: &[u8]) -> Vec<u8> {
        kp.sign(data).unwrap()
    }

    /// A signature whose std encoding contains `+` or `/` (so the
    /// unpadded std form is not valid URL base64).
    fn user_with_plus_slash_sig() -> (KeyPair, Vec<u8>) {
        loop {
            let kp = KeyPair::new_user();
            let sig = signed(&kp, NONCE);
            let std = general_purpose::STANDARD.encode(&sig);
            if std.contains('+') || std.contains('/') {
                return (kp, sig);
            }
        }
    }

    #[test]
    fn url_no_pad_accepted() {
        let kp = KeyPair::new_user();
        let sig = general_purpose::URL_SAFE_NO_PAD.encode(signed(&kp, NONCE));
        assert_eq!(
            verify_nonce_signature(&kp.public_key(), NONCE, Some(&sig)),
            Ok(())
        );
    }

    #[test]
    fn std_padded_accepted() {
        let (kp, sig) = user_with_plus_slash_sig();
        let sig = general_purpose::STANDARD.encode(sig);
        assert!(sig.ends_with("=="));
        assert_eq!(
            verify_nonce_signature(&kp.public_key(), NONCE, Some(&sig)),
            Ok(())
        );
    }

    #[test]
    fn url_padded_rejected() {
        // Only when it differs from the std form (contains `-` or `_`);
        // otherwise it *is* std padded base64 and is accepted, as in Go.
        let (kp, sig) = user_with_plus_slash_sig();
        let sig = general_purpose::URL_SAFE.encode(sig);
        assert_eq!(
            verify_nonce_signature(&kp.public_key(), NONCE, Some(&sig)),
            Err(SignatureError::NotBase64)
        );
    }

    #[test]
    fn std_unpadded_only_without_plus_or_slash() {
        let (kp, sig) = user_with_plus_slash_sig();
        let sig = general_purpose::STANDARD_NO_PAD.encode(sig);
        assert_eq!(
            verify_nonce_signature(&kp.public_key(), NONCE, Some(&sig)),
            Err(SignatureError::NotBase64)
        );
        loop {
            let kp = KeyPair::new_user();
            let sig = general_purpose::STANDARD_NO_PAD.encode(signed(&kp, NONCE));
            if !sig.contains(['+', '/']) {
                assert_eq!(
                    verify_nonce_signature(&kp.public_key(), NONCE, Some(&sig)),
                    Ok(())
                );
                break;
            }
        }
    }

    #[test]
    fn missing_and_empty() {
        let kp = KeyPair::new_user();
        assert_eq!(
            verify_nonce_signature(&kp.public_key(), NONCE, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_nonce_signature(&kp.public_key(), NONCE, Some("")),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn wrong_bytes_or_key_not_verified() {
        let kp = KeyPair::new_user();
        let other = KeyPair::new_user();
        let sig = general_purpose::URL_SAFE_NO_PAD.encode(signed(&kp, b"other-nonce-val"));
        assert_eq!(
            verify_nonce_signature(&kp.public_key(), NONCE, Some(&sig)),
            Err(SignatureError::NotVerified)
        );
        let sig = general_purpose::URL_SAFE_NO_PAD.encode(signed(&kp, NONCE));
        assert_eq!(
            verify_nonce_signature(&other.public_key(), NONCE, Some(&sig)),
            Err(SignatureError::NotVerified)
        );
        // Right base64, wrong length.
        assert_eq!(
            verify_nonce_signature(&kp.public_key(), NONCE, Some("AAAA")),
            Err(SignatureError::NotVerified)
        );
    }

    #[test]
    fn any_public_prefix_but_not_module_or_seed() {
        let acc = KeyPair::new_account();
        let sig = general_purpose::URL_SAFE_NO_PAD.encode(signed(&acc, NONCE));
        assert_eq!(
            verify_nonce_signature(&acc.public_key(), NONCE, Some(&sig)),
            Ok(())
        );
        let module = KeyPair::new_module();
        let sig = general_purpose::URL_SAFE_NO_PAD.encode(signed(&module, NONCE));
        assert_eq!(
            verify_nonce_signature(&module.public_key(), NONCE, Some(&sig)),
            Err(SignatureError::BadPublicKey)
        );
        let seed = acc.seed().unwrap();
        assert_eq!(
            verify_nonce_signature(&seed, NONCE, Some(&sig)),
            Err(SignatureError::BadPublicKey)
        );
        assert_eq!(
            verify_nonce_signature("UBAD", NONCE, Some(&sig)),
            Err(SignatureError::BadPublicKey)
        );
    }

    #[test]
    fn user_key_predicate() {
        assert!(is_user_public_key(&KeyPair::new_user().public_key()));
        assert!(!is_user_public_key(&KeyPair::new_account().public_key()));
        assert!(is_account_public_key(&KeyPair::new_account().public_key()));
        assert!(is_operator_public_key(
            &KeyPair::new_operator().public_key()
        ));
        assert!(!is_user_public_key(""));
        let mut k = KeyPair::new_user().public_key();
        k.replace_range(10..11, if &k[10..11] == "A" { "B" } else { "A" });
        assert!(
            !is_user_public_key(&k),
            "CRC must catch a changed character"
        );
    }

    #[test]
    fn reasons_and_texts() {
        assert_eq!(SignatureError::Missing.to_string(), "Signature missing");
        assert_eq!(
            SignatureError::NotVerified.reason(),
            "signature_not_verified"
        );
    }
}
