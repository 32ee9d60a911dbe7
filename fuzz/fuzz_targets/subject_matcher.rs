//! natsgate's permission decisions against a tiny reference implementation
//! of the matching rule (spec 4.2): the checked subject is literal tokens,
//! a stored `*` matches any one token (even a literal `*` or `>`), a stored
//! `>` matches one or more remaining tokens, and a checked subject with an
//! empty token matches nothing. Entries that are not valid subjects
//! (`Sublist.Insert`: an empty token, `>` not last) are skipped.
//!
//! Input: byte 0 is unused noise for the fuzzer, the rest is
//! `<entry>\0<entry>\0...\0<subject>` (the last part is the subject).
#![no_main]

use libfuzzer_sys::fuzz_target;
use natsgate::permissions::{PermissionSpec, Permissions, SubjectRules};

fn valid_entry(p: &[u8]) -> bool {
    let tokens: Vec<&[u8]> = p.split(|b| *b == b'.').collect();
    tokens.iter().all(|t| !t.is_empty())
        && tokens
            .iter()
            .position(|t| *t == b">")
            .is_none_or(|i| i == tokens.len() - 1)
}

fn reference_match(entry: &[u8], subject: &[u8]) -> bool {
    fn go(p: &[&[u8]], s: &[&[u8]]) -> bool {
        match (p.split_first(), s.split_first()) {
            (None, None) => true,
            (Some((&b">", _)), Some(_)) => true,
            (Some((pt, prest)), Some((st, srest))) => (*pt == b"*" || pt == st) && go(prest, srest),
            _ => false,
        }
    }
    let s: Vec<&[u8]> = subject.split(|b| *b == b'.').collect();
    if s.iter().any(|t| t.is_empty()) || !valid_entry(entry) {
        return false;
    }
    let p: Vec<&[u8]> = entry.split(|b| *b == b'.').collect();
    go(&p, &s)
}

fuzz_target!(|data: &[u8]| {
    let Some((_, rest)) = data.split_first() else {
        return;
    };
    let mut parts: Vec<&[u8]> = rest.split(|b| *b == 0).collect();
    let subject = parts.pop().unwrap_or_default();
    // Permission entries are strings; keep the valid UTF-8 ones.
    let entries: Vec<String> = parts
        .iter()
        .filter_map(|p| std::str::from_utf8(p).ok())
        .map(str::to_owned)
        .collect();
    let expected = entries
        .iter()
        .any(|e| reference_match(e.as_bytes(), subject));

    let allow = Permissions::compile(&PermissionSpec {
        publish: Some(SubjectRules {
            allow: Some(entries.clone()),
            deny: Vec::new(),
        }),
        ..PermissionSpec::default()
    });
    assert_eq!(
        allow.publish_allowed(subject),
        expected,
        "publish allow {entries:?} for {:?}",
        String::from_utf8_lossy(subject)
    );

    let deny = Permissions::compile(&PermissionSpec {
        publish: Some(SubjectRules {
            allow: None,
            deny: entries.clone(),
        }),
        ..PermissionSpec::default()
    });
    assert_eq!(
        deny.publish_allowed(subject),
        !expected,
        "publish deny {entries:?} for {:?}",
        String::from_utf8_lossy(subject)
    );

    // Subscribe entries are "<subject> [queue]": only whitespace-free ones
    // are plain subjects. A non-empty allow list, no queue.
    if !entries.is_empty()
        && entries
            .iter()
            .all(|e| !e.chars().any(char::is_whitespace) && !e.is_empty())
    {
        let sub = Permissions::compile(&PermissionSpec {
            subscribe: Some(SubjectRules {
                allow: Some(entries.clone()),
                deny: Vec::new(),
            }),
            ..PermissionSpec::default()
        });
        assert_eq!(
            sub.subscribe_allowed(subject, None),
            expected,
            "subscribe allow {entries:?} for {:?}",
            String::from_utf8_lossy(subject)
        );
    }
});
