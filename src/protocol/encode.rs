//! Every frame natsgate writes itself, in both directions: nats-server's
//! fixed texts (spec 1.12, 4.7, 9.7), the permission errors with Go-style
//! quoting (spec 4.8), MSG (USER.INFO answers), UNSUB, CONNECT and INFO.
//! Frames natsgate forwards are never re-encoded: they go on verbatim.

use bytes::Bytes;

use super::quote;

pub const OK: &[u8] = b"+OK\r\n";
pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";
pub const ERR_AUTH_VIOLATION: &[u8] = b"-ERR 'Authorization Violation'\r\n";
pub const ERR_AUTH_TIMEOUT: &[u8] = b"-ERR 'Authentication Timeout'\r\n";
pub const ERR_UNKNOWN_OP: &[u8] = b"-ERR 'Unknown Protocol Operation'\r\n";
pub const ERR_MAX_CONTROL_LINE: &[u8] = b"-ERR 'maximum control line exceeded'\r\n";
pub const ERR_MAX_PAYLOAD: &[u8] = b"-ERR 'Maximum Payload Violation'\r\n";
pub const ERR_MAX_SUBS: &[u8] = b"-ERR 'maximum subscriptions exceeded'\r\n";
pub const ERR_MAX_CONNECTIONS: &[u8] = b"-ERR 'maximum connections exceeded'\r\n";
pub const ERR_MAX_ACCOUNT_CONNECTIONS: &[u8] =
    b"-ERR 'maximum account active connections exceeded'\r\n";
pub const ERR_INVALID_SUBJECT: &[u8] = b"-ERR 'Invalid Subject'\r\n";
pub const ERR_INVALID_PUBLISH_SUBJECT: &[u8] = b"-ERR 'Invalid Publish Subject'\r\n";
pub const ERR_INVALID_PROTOCOL: &[u8] = b"-ERR 'invalid client protocol'\r\n";
pub const ERR_NO_RESPONDERS_HEADERS: &[u8] = b"-ERR 'no responders requires headers support'\r\n";
pub const ERR_STALE: &[u8] = b"-ERR 'Stale Connection'\r\n";
/// Sent when no upstream server can be reached for a client that
/// authenticated (nats-server has no such case; a client retries as after
/// any connect error).
pub const ERR_UPSTREAM_UNAVAILABLE: &[u8] = b"-ERR 'Upstream Unavailable'\r\n";

/// `-ERR '<text>'\r\n` for one of nats-server's fixed texts.
pub fn err(text: &str) -> Bytes {
    let mut out = Vec::with_capacity(text.len() + 9);
    out.extend_from_slice(b"-ERR '");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"'\r\n");
    Bytes::from(out)
}

/// `-ERR 'Permissions Violation for Publish to "<subject>"'`.
pub fn publish_violation(subject: &[u8]) -> Bytes {
    violation(b"Publish to ", subject, None, None)
}

/// `-ERR 'Permissions Violation for Publish with Reply of "<reply>"'`.
pub fn reply_violation(reply: &[u8]) -> Bytes {
    violation(b"Publish with Reply of ", reply, None, None)
}

/// `-ERR 'Permissions Violation for Subscription to "<subject>"[ using queue "<queue>"]'`.
pub fn subscribe_violation(subject: &[u8], queue: Option<&[u8]>) -> Bytes {
    violation(b"Subscription to ", subject, queue, None)
}

/// `-ERR 'Permissions Violation for Subscription to "<subject>"[ using queue
/// "<queue>"] (sid "<sid>")'`: a subscription removed because the user's
/// permissions changed (spec 4.7).
pub fn subscription_removed(subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) -> Bytes {
    violation(b"Subscription to ", subject, queue, Some(sid))
}

fn violation(what: &[u8], subject: &[u8], queue: Option<&[u8]>, sid: Option<&[u8]>) -> Bytes {
    let mut out = Vec::with_capacity(64 + subject.len());
    out.extend_from_slice(b"-ERR 'Permissions Violation for ");
    out.extend_from_slice(what);
    quote::write_go_quoted(&mut out, subject);
    if let Some(queue) = queue {
        out.extend_from_slice(b" using queue ");
        quote::write_go_quoted(&mut out, queue);
    }
    if let Some(sid) = sid {
        out.extend_from_slice(b" (sid ");
        quote::write_go_quoted(&mut out, sid);
        out.extend_from_slice(b")");
    }
    out.extend_from_slice(b"'\r\n");
    Bytes::from(out)
}

/// `MSG <subject> <sid> [reply] <size>\r\n<payload>\r\n`.
pub fn msg(subject: &[u8], sid: &[u8], reply: Option<&[u8]>, payload: &[u8]) -> Bytes {
    let reply_len = reply.map_or(0, |r| r.len() + 1);
    let mut out = Vec::with_capacity(subject.len() + sid.len() + reply_len + payload.len() + 24);
    out.extend_from_slice(b"MSG ");
    out.extend_from_slice(subject);
    out.push(b' ');
    out.extend_from_slice(sid);
    if let Some(reply) = reply {
        out.push(b' ');
        out.extend_from_slice(reply);
    }
    out.extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// `HMSG <subject> <sid> <header size> <total size>\r\n<header><payload>\r\n`
/// (no reply subject).
pub fn hmsg(subject: &[u8], sid: &[u8], header: &[u8], payload: &[u8]) -> Bytes {
    let total = header.len() + payload.len();
    let mut out = Vec::with_capacity(subject.len() + sid.len() + total + 32);
    out.extend_from_slice(b"HMSG ");
    out.extend_from_slice(subject);
    out.push(b' ');
    out.extend_from_slice(sid);
    out.extend_from_slice(format!(" {} {total}\r\n", header.len()).as_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// `UNSUB <sid>\r\n`.
pub fn unsub(sid: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(sid.len() + 8);
    out.extend_from_slice(b"UNSUB ");
    out.extend_from_slice(sid);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// `CONNECT <json>\r\n`, followed by `PING\r\n` when `ping` (a login that
/// waits for the server's `PONG`).
pub fn connect(json: &str, ping: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 16);
    out.extend_from_slice(b"CONNECT ");
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\r\n");
    if ping {
        out.extend_from_slice(PING);
    }
    out
}

/// `INFO <json> \r\n` with Go's escaping of `<`, `>` and `&` (nats-server
/// ends its INFO line with a blank).
pub fn info(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 16);
    out.extend_from_slice(b"INFO ");
    super::info::write_go_json(&mut out, json);
    out.extend_from_slice(b" \r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frames_quote_like_go() {
        assert_eq!(
            subscribe_violation(b"_INBOX.>", Some(b"q")),
            &b"-ERR 'Permissions Violation for Subscription to \"_INBOX.>\" using queue \"q\"'\r\n"
                [..]
        );
        assert_eq!(
            publish_violation(b"s'q"),
            &b"-ERR 'Permissions Violation for Publish to \"s'q\"'\r\n"[..]
        );
        assert_eq!(
            reply_violation(b"r"),
            &b"-ERR 'Permissions Violation for Publish with Reply of \"r\"'\r\n"[..]
        );
        assert_eq!(
            subscription_removed(b"a", None, b"7"),
            &b"-ERR 'Permissions Violation for Subscription to \"a\" (sid \"7\")'\r\n"[..]
        );
        assert_eq!(
            err("User Authentication Revoked"),
            &b"-ERR 'User Authentication Revoked'\r\n"[..]
        );
    }

    #[test]
    fn frames() {
        assert_eq!(
            msg(b"a.b", b"1", None, b"hi"),
            &b"MSG a.b 1 2\r\nhi\r\n"[..]
        );
        assert_eq!(
            msg(b"a", b"22", Some(b"r"), b""),
            &b"MSG a 22 r 0\r\n\r\n"[..]
        );
        assert_eq!(unsub(b"9"), &b"UNSUB 9\r\n"[..]);
        assert_eq!(connect("{}", true), b"CONNECT {}\r\nPING\r\n");
        assert_eq!(
            info(b"{\"a\":\"<&>\"}"),
            b"INFO {\"a\":\"\\u003c\\u0026\\u003e\"} \r\n"
        );
    }
}
