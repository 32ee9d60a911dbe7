//! Scoped signing key templates (spec 3.11,
//! `server/auth.go:processUserPermissionsTemplate`).
//!
//! `{{ op }}` placeholders in pub/sub allow/deny entries are replaced by
//! values from the user and account JWTs. Multi-valued tags expand to the
//! cartesian product. Generated entries that are not valid subjects are
//! dropped from allow lists and fail the login in deny lists; an allow list
//! that becomes empty adds `>` to the matching deny list.

use super::claims::{Permission, UserPermissionLimits};

/// The values a template may refer to.
pub(crate) struct TemplateContext<'a> {
    pub user_name: &'a str,
    pub user_key: &'a str,
    pub user_tags: &'a [String],
    pub issuer_account: &'a str,
    pub account_name: &'a str,
    pub account_tags: &'a [String],
}

/// Why a template could not be applied ("User JWT generated invalid
/// permissions").
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TemplateError {
    UnknownOperation(String),
    InvalidSubject(String),
    TooMany,
}

/// Apply the template substitution to the pub/sub lists of `limits`.
pub(crate) fn apply(
    limits: &mut UserPermissionLimits,
    ctx: &TemplateContext<'_>,
) -> Result<(), TemplateError> {
    apply_permission(&mut limits.subscribe, ctx)?;
    apply_permission(&mut limits.publish, ctx)
}

fn apply_permission(perm: &mut Permission, ctx: &TemplateContext<'_>) -> Result<(), TemplateError> {
    let allow_was_set = !perm.allow.is_empty();
    perm.allow = apply_list(&perm.allow, ctx, false)?;
    perm.deny = apply_list(&perm.deny, ctx, true)?;
    if allow_was_set && perm.allow.is_empty() {
        perm.deny.push(">".to_owned());
    }
    Ok(())
}

fn apply_list(
    list: &[String],
    ctx: &TemplateContext<'_>,
    fail_on_bad_subject: bool,
) -> Result<Vec<String>, TemplateError> {
    if !list.iter().any(|e| !placeholders(e).is_empty()) {
        return Ok(list.to_vec());
    }
    let mut out = Vec::with_capacity(list.len());
    for entry in list {
        let spots = placeholders(entry);
        let mut values: Vec<Vec<&str>> = Vec::with_capacity(spots.len());
        for &(start, end) in &spots {
            values.push(resolve(&entry[start + 2..end - 2], ctx)?);
        }
        let count = values.iter().map(Vec::len).product::<usize>();
        if count == 0 {
            // A tag without a value: nothing to emit.
            if fail_on_bad_subject {
                return Err(TemplateError::InvalidSubject(entry.clone()));
            }
            continue;
        }
        if out.len() + count > MAX_GENERATED {
            return Err(TemplateError::TooMany);
        }
        let mut index = vec![0usize; values.len()];
        for _ in 0..count {
            let mut subject = String::with_capacity(entry.len() + 32);
            let mut last = 0;
            for (i, &(start, end)) in spots.iter().enumerate() {
                subject.push_str(&entry[last..start]);
                subject.push_str(values[i][index[i]]);
                last = end;
            }
            subject.push_str(&entry[last..]);
            if is_valid_subject(&subject) {
                out.push(subject);
            } else if fail_on_bad_subject {
                return Err(TemplateError::InvalidSubject(subject));
            }
            // Odometer over the value lists, last one fastest.
            for j in (0..index.len()).rev() {
                index[j] += 1;
                if index[j] < values[j].len() {
                    break;
                }
                index[j] = 0;
            }
        }
    }
    Ok(out)
}

/// The values of one operation (the text between `{{` and `}}`).
fn resolve<'a>(op: &str, ctx: &TemplateContext<'a>) -> Result<Vec<&'a str>, TemplateError> {
    let op = op.trim().to_ascii_lowercase();
    Ok(match op.as_str() {
        "name()" => vec![ctx.user_name],
        "subject()" => vec![ctx.user_key],
        "account-name()" => vec![ctx.account_name],
        "account-subject()" => vec![ctx.issuer_account],
        _ => {
            let (tags, name) = if let Some(rest) = op.strip_prefix("account-tag(") {
                (ctx.account_tags, rest)
            } else if let Some(rest) = op.strip_prefix("tag(") {
                (ctx.user_tags, rest)
            } else {
                return Err(TemplateError::UnknownOperation(op));
            };
            let Some(name) = name.strip_suffix(')') else {
                return Err(TemplateError::UnknownOperation(op));
            };
            let prefix = format!("{name}:");
            tags.iter()
                .filter_map(|t| t.strip_prefix(prefix.as_str()))
                .collect()
        }
    })
}

/// Byte ranges of `{{...}}` placeholders, as the regex `{{2}([^}]+)}{2}`
/// finds them (leftmost, non-overlapping).
fn placeholders(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'{' && b[i + 1] == b'{' {
            let inner = i + 2;
            let close = b[inner..]
                .iter()
                .position(|&c| c == b'}')
                .map(|p| inner + p);
            if let Some(j) = close
                && j > inner
                && b.get(j + 1) == Some(&b'}')
            {
                found.push((i, j + 2));
                i = j + 2;
                continue;
            }
        }
        i += 1;
    }
    found
}

/// nats-server `IsValidSubject`: non-empty tokens, no white space, `>` only
/// as the last token.
pub(crate) fn is_valid_subject(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    let mut full_wildcard_seen = false;
    for token in s.split('.') {
        if token.is_empty() || full_wildcard_seen {
            return false;
        }
        if token
            .bytes()
            .any(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c'))
        {
            return false;
        }
        if token == ">" {
            full_wildcard_seen = true;
        }
    }
    true
}

// === constants ===

/// Most subjects one list may expand to.
const MAX_GENERATED: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(user_tags: &'a [String], account_tags: &'a [String]) -> TemplateContext<'a> {
        TemplateContext {
            user_name: "alice",
            user_key: "UKEY",
            user_tags,
            issuer_account: "AKEY",
            account_name: "acme",
            account_tags,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn simple_operations() {
        let mut l = UserPermissionLimits::default();
        l.publish.allow = strings(&[
            "a.{{name()}}",
            "b.{{ Subject() }}",
            "c.{{account-name()}}.{{account-subject()}}",
            "plain",
        ]);
        apply(&mut l, &ctx(&[], &[])).unwrap();
        assert_eq!(
            l.publish.allow,
            strings(&["a.alice", "b.UKEY", "c.acme.AKEY", "plain"])
        );
        assert!(l.publish.deny.is_empty());
    }

    #[test]
    fn tags_cartesian() {
        let ut = strings(&["dept:eng", "dept:ops", "x:1"]);
        let at = strings(&["region:eu", "region:us"]);
        let mut l = UserPermissionLimits::default();
        l.subscribe.allow = strings(&["{{tag(dept)}}.{{account-tag(REGION)}}"]);
        apply(&mut l, &ctx(&ut, &at)).unwrap();
        assert_eq!(
            l.subscribe.allow,
            strings(&["eng.eu", "eng.us", "ops.eu", "ops.us"])
        );
    }

    #[test]
    fn invalid_dropped_in_allow_fails_in_deny() {
        let mut l = UserPermissionLimits::default();
        l.publish.allow = strings(&["x.{{tag(missing)}}", "y.{{name()}}"]);
        let c = TemplateContext {
            user_name: "has blank",
            ..ctx(&[], &[])
        };
        apply(&mut l, &c).unwrap();
        assert!(l.publish.allow.is_empty());
        assert_eq!(l.publish.deny, strings(&[">"]), "allow emptied -> deny >");

        let mut l = UserPermissionLimits::default();
        l.publish.deny = strings(&["y.{{name()}}"]);
        assert!(apply(&mut l, &c).is_err());
        let mut l = UserPermissionLimits::default();
        l.subscribe.deny = strings(&["x.{{tag(missing)}}"]);
        assert!(apply(&mut l, &ctx(&[], &[])).is_err());
    }

    #[test]
    fn unknown_operation_fails() {
        let mut l = UserPermissionLimits::default();
        l.publish.allow = strings(&["x.{{bogus()}}"]);
        assert_eq!(
            apply(&mut l, &ctx(&[], &[])),
            Err(TemplateError::UnknownOperation("bogus()".into()))
        );
    }

    #[test]
    fn too_many() {
        let ut: Vec<String> = (0..65).map(|i| format!("t:{i}")).collect();
        let mut l = UserPermissionLimits::default();
        l.publish.allow = strings(&["{{tag(t)}}.{{tag(t)}}"]);
        assert_eq!(apply(&mut l, &ctx(&ut, &[])), Err(TemplateError::TooMany));
    }

    #[test]
    fn subject_validity() {
        assert!(is_valid_subject("a.*.>"));
        assert!(!is_valid_subject("a.>.b"));
        assert!(!is_valid_subject("a..b"));
        assert!(!is_valid_subject(".a"));
        assert!(!is_valid_subject("a b"));
        assert_eq!(placeholders("{{{x}}"), vec![(0, 6)]);
        assert_eq!(placeholders("{{}}"), vec![]);
    }
}
