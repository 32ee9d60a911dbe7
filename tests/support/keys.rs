//! NKey helpers: user key pairs, seed files, nonce signatures.

use std::path::{Path, PathBuf};

/// A fresh user key pair (public key starts with `U`).
pub fn new_user() -> nkeys::KeyPair {
    nkeys::KeyPair::new_user()
}

/// Writes `kp`'s seed (`SU...`) to `dir/<name>.nk` (mode 0600 on Unix) and returns the path.
pub fn write_seed(dir: &Path, name: &str, kp: &nkeys::KeyPair) -> PathBuf {
    let path = dir.join(format!("{name}.nk"));
    let seed = kp.seed().expect("key pair has a seed");
    std::fs::write(&path, format!("{seed}\n")).expect("write seed file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod seed file");
    }
    path
}

/// The CONNECT `sig` for `nonce`: Ed25519 over the nonce's ASCII bytes,
/// base64 URL alphabet without padding (what nats-server and async-nats use).
pub fn sign_nonce(kp: &nkeys::KeyPair, nonce: &str) -> String {
    let sig = kp.sign(nonce.as_bytes()).expect("sign nonce");
    base64_url_nopad(&sig)
}

/// Base64, URL-safe alphabet, no padding.
pub fn base64_url_nopad(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_known_vectors() {
        use super::base64_url_nopad as b;
        assert_eq!(b(b""), "");
        assert_eq!(b(b"f"), "Zg");
        assert_eq!(b(b"fo"), "Zm8");
        assert_eq!(b(b"foo"), "Zm9v");
        assert_eq!(b(&[0xfb, 0xff]), "-_8");
    }
}
