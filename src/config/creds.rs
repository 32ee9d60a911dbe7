//! NATS credential files: the `.creds` format (a user JWT and its NKey seed)
//! and plain NKey seed files.
//!
//! The `.creds` reader follows the regular expression nats.go and async-nats
//! use (spec 7.1):
//! `\s*(?:(?:[-]{3,}.*[-]{3,}\r?\n)([\w\-.=]+)(?:\r?\n[-]{3,}.*[-]{3,}(\r?\n|\z)))`,
//! written out by hand: a line ending in a `---...---` decoration, one line of
//! token characters, then a line starting with a `---...---` decoration. The
//! first such block is the JWT, the second the seed. Unlike the regex it
//! ignores whitespace around the token line.

use nkeys::{KeyPair, KeyPairType};

/// Why a `.creds` file or a seed file is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredsError {
    /// No `-----BEGIN ...-----` / token / `------END ...------` block at all.
    #[error("no JWT block (-----BEGIN NATS USER JWT----- ... ------END NATS USER JWT------) found")]
    MissingJwt,
    /// The JWT block is there but no second (seed) block follows it.
    #[error(
        "no seed block (-----BEGIN USER NKEY SEED----- ... ------END USER NKEY SEED------) found"
    )]
    MissingSeed,
    /// The first block is not three dot-separated base64url parts.
    #[error("the JWT block does not hold a JWT (header.payload.signature)")]
    MalformedJwt,
    /// The seed does not decode (bad base32, bad checksum, not a seed).
    #[error("the seed is not a valid NKey seed: {0}")]
    InvalidSeed(String),
    /// A valid seed of another kind (account, operator, ...).
    #[error("the seed is of kind {0}, not a user seed (user seeds start with SU)")]
    NotUserSeed(&'static str),
}

/// Splits a `.creds` file into its user JWT and user seed, both checked for
/// shape: the JWT has three base64url parts and the seed decodes as a user
/// NKey seed. The JWT's claims and signature are not checked here.
pub fn parse_creds(text: &str) -> Result<(String, String), CredsError> {
    let mut blocks = decorated_blocks(text);
    let jwt = blocks.next().ok_or(CredsError::MissingJwt)?;
    let seed = blocks.next().ok_or(CredsError::MissingSeed)?;
    if !looks_like_jwt(jwt) {
        return Err(CredsError::MalformedJwt);
    }
    user_key_pair(seed)?;
    Ok((jwt.to_owned(), seed.to_owned()))
}

/// Reads a user seed from the contents of an NKey seed file (`.nk`).
///
/// Accepts what nats.go's `ParseDecoratedNKey` accepts: a decorated block as
/// in a `.creds` file, or else the first line that starts with `S` (so a bare
/// seed, with or without a trailing newline, works).
pub fn parse_seed_file(text: &str) -> Result<String, CredsError> {
    let mut blocks = decorated_blocks(text);
    let candidate = match (blocks.next(), blocks.next()) {
        // A .creds file: the seed is the second block.
        (Some(_), Some(seed)) => Some(seed),
        (Some(only), None) if only.starts_with('S') => Some(only),
        _ => text
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with('S')),
    };
    let seed =
        candidate.ok_or_else(|| CredsError::InvalidSeed("no line starting with S".into()))?;
    user_key_pair(seed)?;
    Ok(seed.to_owned())
}

/// Decodes `seed` and checks that it is a user seed.
pub(super) fn user_key_pair(seed: &str) -> Result<KeyPair, CredsError> {
    let key_pair = KeyPair::from_seed(seed).map_err(|e| CredsError::InvalidSeed(e.to_string()))?;
    match key_pair.key_pair_type() {
        KeyPairType::User => Ok(key_pair),
        other => Err(CredsError::NotUserSeed(kind_name(&other))),
    }
}

/// The token lines of every decorated block, in order.
fn decorated_blocks(text: &str) -> impl Iterator<Item = &str> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 2 < lines.len() {
        let token = lines[i + 1].trim();
        if is_begin_line(lines[i]) && is_token(token) && is_end_line(lines[i + 2]) {
            found.push(token);
            i += 3;
        } else {
            i += 1;
        }
    }
    found.into_iter()
}

/// `[-]{3,}.*[-]{3,}` ending the line (the regex may start mid-line).
fn is_begin_line(line: &str) -> bool {
    let line = line.trim_end();
    line.ends_with("---") && line[..line.len() - 3].contains("---")
}

/// `[-]{3,}.*[-]{3,}` starting right after the newline and ending the line.
fn is_end_line(line: &str) -> bool {
    let line = line.trim_end();
    line.starts_with("---") && line.len() >= 6 && line.ends_with("---")
}

/// `[\w\-.=]+`
fn is_token(line: &str) -> bool {
    !line.is_empty()
        && line
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '='))
}

fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
        })
}

fn kind_name(kind: &KeyPairType) -> &'static str {
    match kind {
        KeyPairType::Server => "server",
        KeyPairType::Cluster => "cluster",
        KeyPairType::Operator => "operator",
        KeyPairType::Account => "account",
        KeyPairType::User => "user",
        KeyPairType::Module => "module",
        KeyPairType::Service => "service",
        KeyPairType::Curve => "curve",
    }
}
