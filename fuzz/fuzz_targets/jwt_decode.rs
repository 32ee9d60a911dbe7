//! JWT claims decoding of arbitrary strings: never panics. Besides the raw
//! string, the input is also used as `<header>.<payload>.<sig>` parts (split
//! at 0xFF bytes, base64url-encoded) so the JSON decoding is reached.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use natsgate::auth::jwt::claims::{self, Account, Operator, User};

fn decode_all(token: &str) {
    let _ = claims::decode::<User>(token);
    let _ = claims::decode::<Account>(token);
    let _ = claims::decode::<Operator>(token);
}

fuzz_target!(|data: &[u8]| {
    decode_all(&String::from_utf8_lossy(data));
    let mut parts = data.splitn(3, |b| *b == 0xff);
    let header = parts.next().unwrap_or_default();
    let payload = parts.next().unwrap_or_default();
    let sig = parts.next().unwrap_or_default();
    let header = if header.is_empty() {
        br#"{"typ":"JWT","alg":"ed25519-nkey"}"#.as_slice()
    } else {
        header
    };
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(sig)
    );
    decode_all(&token);
});
