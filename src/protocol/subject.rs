//! Subject syntax over raw bytes, exactly as nats-server judges it.
//!
//! Owns: validity of SUB subjects (`server/sublist.go:Insert`), the pedantic
//! publish check (`IsValidLiteralSubject`), `SubjectsCollide` and
//! `subjectIsSubsetMatch`. Does not own matching against permission entries
//! (that is `permissions::matcher`, which implements the sublist `Match` rule).
//!
//! Subjects come straight from the wire, so everything works on `&[u8]`, never
//! allocates, and treats bytes that are not UTF-8 as ordinary token bytes, as
//! nats-server does. Tokens are separated by `.`; a token is a wildcard only
//! if it is exactly `*` or `>` (`foo.a*` is a literal token).

/// Whether `s` is accepted as a SUB subject (and as a permission entry).
///
/// Mirrors `Sublist.Insert`: the subject is non-empty, no token is empty
/// (`foo..b`, `.foo`, `foo.` are invalid) and `>` only appears as the last
/// token. Nothing else is rejected: a real nats-server 2.15.1 accepts
/// `SUB a<0x0c>b`, `SUB a<0x01>b`, `SUB a<0x0b>b` and non-UTF-8 bytes
/// (checked over loopback). Spaces, TABs, CR and LF cannot reach this
/// function from the wire because the parser splits arguments on them.
pub fn is_valid_subject(s: &[u8]) -> bool {
    let mut after_full_wildcard = false;
    for token in tokens(s) {
        if token.is_empty() || after_full_wildcard {
            return false;
        }
        if token == b">" {
            after_full_wildcard = true;
        }
    }
    true
}

/// The pedantic publish check (spec 1.11, `IsValidLiteralSubject`): every
/// token non-empty and no token exactly `*` or `>`.
pub fn is_valid_literal_subject(s: &[u8]) -> bool {
    tokens(s).all(|token| !token.is_empty() && !is_wildcard_token(token))
}

/// Whether some literal subject could match both `a` and `b`
/// (`server/sublist.go:SubjectsCollide`), including its quirks: only a
/// one-byte `*`/`>` token makes a subject "wild", but once both are wild a
/// token merely *starting* with `*` or `>` is treated as compatible with
/// anything (`tokensCanMatch` looks at the first byte only).
pub fn subjects_collide(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    let (partial_a, full_a) = analyze_tokens(a);
    let (partial_b, full_b) = analyze_tokens(b);
    let literal_a = !(partial_a || full_a);
    let literal_b = !(partial_b || full_b);
    match (literal_a, literal_b) {
        // Both literal and not equal.
        (true, true) => return false,
        (true, false) => return is_subset(a, b),
        (false, true) => return is_subset(b, a),
        (false, false) => {}
    }
    let count_a = tokens(a).count();
    let count_b = tokens(b).count();
    if !full_a && !full_b && count_a != count_b {
        return false;
    }
    if (count_a < count_b && !full_a) || (count_b < count_a && !full_b) {
        return false;
    }
    tokens(a)
        .zip(tokens(b))
        .all(|(x, y)| tokens_can_match(x, y))
}

/// Whether every subject matched by `subject` is also matched by `pattern`
/// (`server/sublist.go:subjectIsSubsetMatch`, used for queue-name matching in
/// 4.4). Both may contain wildcards. Mirrors the original token walk exactly,
/// including that a `pattern` token whose first byte is `*` accepts any
/// literal token of `subject`.
pub fn is_subset(subject: &[u8], pattern: &[u8]) -> bool {
    let mut subject_tokens = tokens(subject);
    let mut subject_count = 0usize;
    let mut pattern_count = 0usize;
    for test in tokens(pattern) {
        pattern_count += 1;
        let Some(token) = subject_tokens.next() else {
            return false;
        };
        subject_count += 1;
        if test.is_empty() {
            return false;
        }
        if test == b">" {
            return true;
        }
        if token.is_empty() || token == b">" {
            return false;
        }
        if token == b"*" {
            if test != b"*" {
                return false;
            }
            continue;
        }
        if test[0] != b'*' && token != test {
            return false;
        }
    }
    subject_count += subject_tokens.count();
    subject_count == pattern_count
}

/// Whether the subject contains a `*` or `>` token
/// (`subjectHasWildcard`, i.e. not `subjectIsLiteral`).
pub fn has_wildcard(s: &[u8]) -> bool {
    tokens(s).any(is_wildcard_token)
}

/// Splits a subject into its `.`-separated tokens. Like Go's
/// `strings.Split`, the empty subject yields one empty token.
pub fn tokens(s: &[u8]) -> std::slice::Split<'_, u8, impl FnMut(&u8) -> bool> {
    s.split(|b| *b == b'.')
}

fn is_wildcard_token(token: &[u8]) -> bool {
    token == b"*" || token == b">"
}

/// `analyzeTokens`: (has a `*` token, has a `>` token).
fn analyze_tokens(s: &[u8]) -> (bool, bool) {
    let mut partial = false;
    let mut full = false;
    for token in tokens(s) {
        match token {
            b"*" => partial = true,
            b">" => full = true,
            _ => {}
        }
    }
    (partial, full)
}

/// `tokensCanMatch`: first-byte wildcard test, then equality.
fn tokens_can_match(a: &[u8], b: &[u8]) -> bool {
    let (Some(&first_a), Some(&first_b)) = (a.first(), b.first()) else {
        return false;
    };
    if matches!(first_a, b'*' | b'>') || matches!(first_b, b'*' | b'>') {
        return true;
    }
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_subjects_follow_sublist_insert() {
        for ok in [
            &b"foo"[..],
            b"foo.bar",
            b"foo.*",
            b"foo.>",
            b">",
            b"*",
            b"*.*.>",
            b"foo.a*",
            b"foo.>a",
            b"a\x0cb",
            b"a\x01b",
            b"a.\xff",
            b"> ",
        ] {
            assert!(is_valid_subject(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b""[..],
            b".",
            b"foo..b",
            b".foo",
            b"foo.",
            b"a.>.c",
            b">.a",
        ] {
            assert!(!is_valid_subject(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn literal_subjects_for_pedantic_mode() {
        assert!(is_valid_literal_subject(b"foo.bar"));
        assert!(is_valid_literal_subject(b"foo.a*"));
        assert!(is_valid_literal_subject(b"foo.>x"));
        assert!(!is_valid_literal_subject(b"foo.*"));
        assert!(!is_valid_literal_subject(b"foo.>"));
        assert!(!is_valid_literal_subject(b"*"));
        assert!(!is_valid_literal_subject(b""));
        assert!(!is_valid_literal_subject(b"foo..bar"));
        assert!(!is_valid_literal_subject(b"foo."));
    }

    #[test]
    fn has_wildcard_only_for_whole_tokens() {
        assert!(has_wildcard(b"foo.*"));
        assert!(has_wildcard(b">"));
        assert!(has_wildcard(b"*.x"));
        assert!(!has_wildcard(b"foo.a*"));
        assert!(!has_wildcard(b"foo.>x"));
        assert!(!has_wildcard(b"foo"));
    }

    #[test]
    fn subset_matching() {
        assert!(is_subset(b"foo.*", b">"));
        assert!(is_subset(b"foo.*", b"*.*"));
        assert!(is_subset(b"foo.*", b"foo.*"));
        assert!(!is_subset(b"foo.*", b"foo.bar"));
        assert!(is_subset(b"foo.bar", b"foo.*"));
        assert!(is_subset(b"foo.bar", b"foo.>"));
        assert!(!is_subset(b"foo", b"foo.>"));
        assert!(!is_subset(b"foo.>", b"foo.*"));
        assert!(is_subset(b"foo.>", b"foo.>"));
        // Queue examples from 4.4: `g.*` allows `g.1` and `g.*`, not `g.>` or `g`.
        assert!(is_subset(b"g.1", b"g.*"));
        assert!(is_subset(b"g.*", b"g.*"));
        assert!(!is_subset(b"g.>", b"g.*"));
        assert!(!is_subset(b"g", b"g.*"));
        // Quirk: a pattern token starting with '*' accepts any literal token.
        assert!(is_subset(b"a.b", b"a.*x"));
        // Length mismatch.
        assert!(!is_subset(b"a.b.c", b"a.b"));
        assert!(!is_subset(b"a..b", b"a.*.b"));
    }

    #[test]
    fn collisions() {
        assert!(subjects_collide(b"foo", b"foo"));
        assert!(!subjects_collide(b"foo", b"bar"));
        assert!(subjects_collide(b"foo.*", b"foo.bar"));
        assert!(subjects_collide(b"foo.bar", b"foo.*"));
        assert!(subjects_collide(b">", b"secret.>"));
        assert!(subjects_collide(b"*.x", b"secret.>"));
        assert!(subjects_collide(b"foo.*", b"*.bar"));
        assert!(!subjects_collide(b"foo.*", b"*.bar.baz"));
        assert!(subjects_collide(b"foo.>", b"*.bar.baz"));
        assert!(!subjects_collide(b"foo.*", b"bar.*"));
        assert!(!subjects_collide(b"a.*", b"a.*.*"));
        assert!(subjects_collide(b"a.>", b"a.*.*"));
        assert!(!subjects_collide(b"a.b.>", b"a.*"));
        assert!(!subjects_collide(b"foo.bar", b"foo.*.baz"));
    }
}
