//! The checks of one user JWT against its account: scoped signing keys,
//! effective limits, permissions, revocation, connection type, source
//! address (spec 3.6-3.11, 5.1-5.4). Pure functions; the trust store calls
//! them in nats-server's order.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use super::claims::{Permission, Permissions, SigningKey, UserClaims, UserPermissionLimits};
use super::template::{self, TemplateContext};
use super::{AccountInfo, JwtAuthError, JwtRefusal, times};
use crate::auth::nkey;
use crate::permissions::{PermissionSpec, ResponseSpec, SubjectRules};

/// The account a user belongs to: `issuer_account`, else `iss` (step 4).
pub(super) fn account_key_of(user: &UserClaims) -> &str {
    if user.nats.issuer_account.is_empty() {
        &user.issuer
    } else {
        &user.nats.issuer_account
    }
}

pub(super) fn has_scope(account: &AccountInfo, issuer: &str) -> bool {
    account
        .signing_keys
        .iter()
        .any(|k| k.key == issuer && k.scoped)
}

/// Steps 8 and 9: the issuer must be a signing key of the account (or its
/// identity key unless strict); for a scoped key the user must be empty and
/// gets the template. Returns the effective permissions and limits.
pub(super) fn effective_limits(
    user: &UserClaims,
    account: &AccountInfo,
) -> Result<UserPermissionLimits, JwtAuthError> {
    let scope = account
        .claims
        .nats
        .signing_keys
        .iter()
        .find(|k| k.key() == user.issuer);
    let scope = match scope {
        Some(SigningKey::Scoped(scope)) => scope,
        Some(SigningKey::Plain(_)) => return Ok(user.nats.limits.clone()),
        None if user.issuer == account.key && !account.strict => {
            return Ok(user.nats.limits.clone());
        }
        None => return Err(JwtAuthError::new(JwtRefusal::IssuerUnknown, "")),
    };
    if !user.nats.limits.is_empty() {
        return Err(JwtAuthError::new(JwtRefusal::ScopedUserNotEmpty, ""));
    }
    let mut limits = scope.template.clone();
    let ctx = TemplateContext {
        user_name: &user.name,
        user_key: &user.subject,
        user_tags: &user.nats.generic.tags,
        issuer_account: &user.nats.issuer_account,
        account_name: &account.name,
        account_tags: &account.tags,
    };
    template::apply(&mut limits, &ctx)
        .map_err(|e| JwtAuthError::new(JwtRefusal::TemplateInvalid, format!("{e:?}")))?;
    Ok(limits)
}

/// `UserClaims.Validate`: time checks and blocking errors (spec 3.6, 3.9).
pub(super) fn validate_user(user: &UserClaims, now: i64) -> Result<(), String> {
    if user.expires > 0 && now > user.expires {
        return Err("claim is expired".into());
    }
    if user.not_before > 0 && user.not_before > now {
        return Err("claim is not yet valid".into());
    }
    if !user.nats.issuer_account.is_empty()
        && !nkey::is_account_public_key(&user.nats.issuer_account)
    {
        return Err("issuer_account is not an account public key".into());
    }
    validate_limits(&user.nats.limits)
}

/// Blocking validation of permissions and limits (also scope templates).
pub(super) fn validate_limits(limits: &UserPermissionLimits) -> Result<(), String> {
    validate_permission(&limits.publish, false)?;
    validate_permission(&limits.subscribe, true)?;
    for cidr in &limits.source {
        if parse_cidr(cidr).is_none() {
            return Err(format!("invalid CIDR {cidr:?}"));
        }
    }
    for range in &limits.times {
        if times::parse_clock(&range.start).is_none() || times::parse_clock(&range.end).is_none() {
            return Err(format!("invalid time range {}-{}", range.start, range.end));
        }
    }
    if !limits.times_location.is_empty() {
        times::load_zone(&limits.times_location)?;
    }
    Ok(())
}

/// Subjects must be non-empty, have at most one blank (only in sub entries,
/// separating the queue), not start or end with `.`, and have no `..`.
fn validate_permission(perm: &Permission, queue_allowed: bool) -> Result<(), String> {
    for subject in perm.allow.iter().chain(&perm.deny) {
        // Blanks inside a template placeholder (`{{ name() }}`) are trimmed
        // at substitution; nats-server 2.15.1 accepts them in scopes.
        let blanks = outside_placeholders(subject).filter(|c| *c == ' ').count();
        let ok = !subject.is_empty()
            && blanks <= usize::from(queue_allowed)
            && !subject.starts_with('.')
            && !subject.ends_with('.')
            && !subject.contains("..");
        if !ok {
            return Err(format!("invalid subject {subject:?}"));
        }
    }
    Ok(())
}

/// The characters of `subject` that are not inside a `{{ ... }}` placeholder.
fn outside_placeholders(subject: &str) -> impl Iterator<Item = char> + '_ {
    let mut depth = false;
    let mut chars = subject.chars().peekable();
    std::iter::from_fn(move || {
        loop {
            let c = chars.next()?;
            if !depth && c == '{' && chars.peek() == Some(&'{') {
                chars.next();
                depth = true;
            } else if depth && c == '}' && chars.peek() == Some(&'}') {
                chars.next();
                depth = false;
            } else if !depth {
                return Some(c);
            }
        }
    })
}

/// Spec 4.1: the permissions of a user; the account defaults when the user
/// has no pub, no sub and no resp.
pub(super) fn permissions_of(
    limits: &UserPermissionLimits,
    defaults: &PermissionSpec,
) -> PermissionSpec {
    let own = Permissions {
        publish: limits.publish.clone(),
        subscribe: limits.subscribe.clone(),
        response: limits.response,
    };
    if own.is_empty() {
        return defaults.clone();
    }
    permissions_spec(&own)
}

/// Convert a JWT `Permissions` object (`buildPermissionsFromJwt`, spec 4.1).
pub(super) fn permissions_spec(p: &Permissions) -> PermissionSpec {
    let rules = |perm: &Permission| {
        (!perm.is_empty()).then(|| SubjectRules {
            allow: (!perm.allow.is_empty()).then(|| perm.allow.clone()),
            deny: perm.deny.clone(),
        })
    };
    let mut spec = PermissionSpec {
        publish: rules(&p.publish),
        subscribe: rules(&p.subscribe),
        responses: p.response.map(|r| ResponseSpec {
            max: r.max,
            ttl_nanos: r.ttl,
        }),
    };
    if spec.responses.is_some() {
        // With `resp`, an absent publish allow list becomes an explicit
        // empty one: only tracked replies may be published.
        let publish = spec.publish.get_or_insert_with(SubjectRules::default);
        publish.allow.get_or_insert_with(Vec::new);
    }
    spec
}

/// `isRevoked`: an entry for the key or `*` at or after `iat`.
pub(super) fn is_revoked(
    revocations: &BTreeMap<String, i64>,
    user_key: &str,
    issued_at: i64,
) -> bool {
    [user_key, "*"]
        .iter()
        .any(|k| revocations.get(*k).is_some_and(|&t| t >= issued_at))
}

/// Spec 5.3: upper-cased; unknown values ignored unless all are unknown.
pub(super) fn connection_type_allowed(allowed: &[String], connection_type: &str) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let known: HashSet<String> = allowed
        .iter()
        .map(|t| t.to_ascii_uppercase())
        .filter(|t| CONNECTION_TYPES.contains(&t.as_str()))
        .collect();
    !known.is_empty() && known.contains(&connection_type.to_ascii_uppercase())
}

/// Spec 5.1: empty = anywhere; else the IP must be in one of the CIDRs.
pub(super) fn source_allowed(source: &[String], ip: IpAddr) -> bool {
    if source.is_empty() {
        return true;
    }
    source
        .iter()
        .filter_map(|c| parse_cidr(c))
        .any(|net| net.contains(&ip) || net.contains(&ip.to_canonical()))
}

/// Parses `addr/bits` as Go's `net.ParseCIDR` accepts it (host bits may
/// be set; the network is what counts).
fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    s.trim().parse().ok()
}

/// Spec 5.4: -1 (any negative) is unlimited, anything else a limit.
pub(super) fn min_limit(user: i64, account: i64) -> i64 {
    match (user < 0, account < 0) {
        (true, true) => -1,
        (true, false) => account,
        (false, true) => user,
        (false, false) => user.min(account),
    }
}

/// nats-server's connection type names (`jwt v2/user_claims.go`).
const CONNECTION_TYPES: [&str; 7] = [
    "STANDARD",
    "WEBSOCKET",
    "LEAFNODE",
    "LEAFNODE_WS",
    "MQTT",
    "MQTT_WS",
    "IN_PROCESS",
];
