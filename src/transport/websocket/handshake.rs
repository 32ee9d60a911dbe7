//! The HTTP/1.1 upgrade (RFC 6455 4.2), answered as nats-server's
//! `wsUpgrade` answers it: the checks in its order, its status codes and
//! bodies, its 101 headers. No I/O: [`parse`] reads a request from bytes,
//! [`decide`] turns it into the answer.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;

/// The most header bytes read before the request is refused.
pub const MAX_REQUEST: usize = 16 * 1024;
/// The most headers in one request.
const MAX_HEADERS: usize = 64;

/// An upgrade request, its headers as sent.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub headers: Vec<(String, String)>,
}

/// What [`parse`] found.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// Not HTTP, or too large: answer 400 and close.
    Bad,
    /// A whole request, and how many bytes it took.
    Request(Request, usize),
}

/// Parses the request at the front of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let headers = request
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Parsed::Request(
                Request {
                    method: request.method.unwrap_or_default().to_string(),
                    headers,
                },
                len,
            )
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => Parsed::Partial,
        _ => Parsed::Bad,
    }
}

impl Request {
    /// The first value of a header (names compare without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether any `name` header holds `token` in its comma-separated list
    /// (nats-server's `wsHeaderContains`).
    fn contains(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token))
    }

    /// The value of cookie `name` in the `Cookie` headers (the last one
    /// when sent more than once, as nats-server's loop over them keeps).
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.trim_matches('"').to_string())
            .next_back()
    }

    /// Whether `permessage-deflate` is among the offered extensions.
    fn offers_deflate(&self) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
            .flat_map(|(_, v)| v.split(','))
            .flat_map(|e| e.split(';'))
            .any(|p| {
                p.trim_matches([' ', '\t'])
                    .eq_ignore_ascii_case("permessage-deflate")
            })
    }
}

/// The listener's upgrade settings.
#[derive(Debug, Clone, Default)]
pub struct UpgradeOptions {
    pub allowed_origins: Vec<Origin>,
    pub same_origin: bool,
    pub compression: bool,
    /// The listener runs TLS (`wss://`): scheme and default port for
    /// `same_origin`.
    pub tls: bool,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `jwt_cookie`: the cookie read as the user JWT.
    pub jwt_cookie: Option<String>,
}

/// An accepted upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The 101 to send.
    pub response: Vec<u8>,
    pub compression: bool,
    /// `Nats-No-Masking: true` was asked (and echoed).
    pub no_masking: bool,
    /// The User-Agent looks like a browser's (small frames).
    pub browser: bool,
    /// The client's address: the forwarded one when the peer is a trusted
    /// proxy, else the peer's.
    pub client: SocketAddr,
    /// The `jwt_cookie` cookie's value, when configured and sent.
    pub cookie_jwt: Option<String>,
}

/// A refused upgrade: the HTTP answer, then close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    /// Why, for the log.
    pub reason: String,
    pub response: Vec<u8>,
}

/// Checks `request` in nats-server's order: method, Host, Upgrade,
/// Connection, key, version, Origin; then takes compression and no-masking.
pub fn decide(
    request: &Request,
    options: &UpgradeOptions,
    peer: SocketAddr,
) -> Result<Accepted, Refused> {
    if request.method != "GET" {
        return Err(refuse(405, "request method must be GET"));
    }
    let Some(host) = request.header("Host").filter(|h| !h.is_empty()) else {
        return Err(refuse(400, "'Host' missing in request"));
    };
    if !request.contains("Upgrade", "websocket") {
        return Err(refuse(400, "invalid value for header 'Upgrade'"));
    }
    if !request.contains("Connection", "Upgrade") {
        return Err(refuse(400, "invalid value for header 'Connection'"));
    }
    let Some(key) = request
        .header("Sec-WebSocket-Key")
        .filter(|k| !k.is_empty())
    else {
        return Err(refuse(400, "key missing"));
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if decoded.map_or(true, |k| k.len() != 16) {
        return Err(refuse(400, "invalid websocket key"));
    }
    if !request.contains("Sec-WebSocket-Version", "13") {
        return Err(refuse(400, "invalid version"));
    }
    if let Err(why) = check_origin(request, options, host) {
        return Err(refuse(403, &format!("origin not allowed: {why}")));
    }
    let compression = options.compression && request.offers_deflate();
    let no_masking = request.header("Nats-No-Masking") == Some("true");
    let browser = request
        .header("User-Agent")
        .is_some_and(|ua| ua.starts_with("Mozilla/"));
    let mut response = Vec::with_capacity(256);
    response.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    response
        .extend_from_slice(tungstenite::handshake::derive_accept_key(key.as_bytes()).as_bytes());
    response.extend_from_slice(b"\r\n");
    if compression {
        response.extend_from_slice(
            b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n",
        );
    }
    if no_masking {
        response.extend_from_slice(b"Nats-No-Masking: true\r\n");
    }
    response.extend_from_slice(b"\r\n");
    Ok(Accepted {
        response,
        compression,
        no_masking,
        browser,
        client: client_address(request, &options.trusted_proxies, peer),
        cookie_jwt: options
            .jwt_cookie
            .as_deref()
            .and_then(|name| request.cookie(name)),
    })
}

/// An HTTP error answer as Go's `http.Error` writes it after nats-server's
/// `wsReturnHTTPError` set `Sec-Websocket-Version: 13`.
pub fn refuse(status: u16, reason: &str) -> Refused {
    let text = match status {
        403 => "Forbidden",
        405 => "Method Not Allowed",
        _ => "Bad Request",
    };
    let body = format!("{text}\n");
    let response = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nSec-Websocket-Version: 13\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    Refused {
        status,
        reason: reason.to_string(),
        response: response.into_bytes(),
    }
}

// === origins ===

/// An origin as nats-server compares it: scheme, lower-cased host, port
/// (the scheme's default when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: String,
}

impl Origin {
    /// Parses `scheme://host[:port][/...]` (what Go's `url.ParseRequestURI`
    /// accepts for an origin).
    pub fn parse(text: &str) -> Result<Origin, String> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!(
                "{text:?} is not a URL like \"https://app.example.com\""
            ));
        };
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(format!("{text:?} has no valid scheme"));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (host, port) = host_and_port(scheme == "https", authority)?;
        Ok(Origin {
            scheme: scheme.to_string(),
            host,
            port,
        })
    }
}

/// nats-server's `wsGetHostAndPort`: host lower-cased, default port by
/// scheme.
fn host_and_port(tls: bool, hostport: &str) -> Result<(String, String), String> {
    let default = if tls { "443" } else { "80" };
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("{hostport:?}: missing ']'"));
        };
        match after.strip_prefix(':') {
            Some(port) => (host, port),
            None if after.is_empty() => (host, default),
            None => return Err(format!("{hostport:?}: bad port")),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(format!("{hostport:?}: too many colons"));
            }
            Some((host, port)) => (host, port),
            None => (hostport, default),
        }
    };
    if host.is_empty() && port.is_empty() {
        return Err("empty host".to_string());
    }
    Ok((host.to_ascii_lowercase(), port.to_string()))
}

/// nats-server's `checkOrigin`: nothing to check without `same_origin` and
/// a list, or without an Origin header.
fn check_origin(request: &Request, options: &UpgradeOptions, host: &str) -> Result<(), String> {
    if !options.same_origin && options.allowed_origins.is_empty() {
        return Ok(());
    }
    let origin = request
        .header("Origin")
        .filter(|o| !o.is_empty())
        .or_else(|| request.header("Sec-WebSocket-Origin"))
        .unwrap_or_default();
    if origin.is_empty() {
        return Ok(());
    }
    let origin = Origin::parse(origin)?;
    if options.same_origin {
        let (rh, rp) = host_and_port(options.tls, host)?;
        let scheme = if options.tls { "https" } else { "http" };
        if origin.host != rh || origin.port != rp || !origin.scheme.eq_ignore_ascii_case(scheme) {
            return Err("not same origin".to_string());
        }
    }
    if !options.allowed_origins.is_empty()
        && !options
            .allowed_origins
            .iter()
            .any(|a| a.host == origin.host && a.scheme == origin.scheme && a.port == origin.port)
    {
        return Err("not in the allowed list".to_string());
    }
    Ok(())
}

// === client address ===

/// The client's address. natsgate believes `X-Forwarded-For` (or, without
/// it, `Forwarded: for=`) only when the TCP peer is in `trusted`: it then
/// walks the list from the right (the entry the nearest proxy added),
/// skipping trusted proxies, and takes the first other address. From any
/// other peer the headers are ignored. (nats-server takes the first
/// `X-Forwarded-For` entry from anyone, for its logs only.)
pub fn client_address(request: &Request, trusted: &[ipnet::IpNet], peer: SocketAddr) -> SocketAddr {
    let is_trusted = |ip: &IpAddr| {
        trusted
            .iter()
            .any(|net| net.contains(ip) || net.contains(&ip.to_canonical()))
    };
    if !is_trusted(&peer.ip()) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    let forwarded_for: Vec<&str> = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("X-Forwarded-For"))
        .flat_map(|(_, v)| v.split(','))
        .collect();
    if forwarded_for.is_empty() {
        for (_, value) in request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Forwarded"))
        {
            for element in value.split(',') {
                for pair in element.split(';') {
                    let Some((k, v)) = pair.trim().split_once('=') else {
                        continue;
                    };
                    if k.trim().eq_ignore_ascii_case("for") {
                        match forwarded_node(v) {
                            Some(ip) => hops.push(ip),
                            None => hops.clear(),
                        }
                    }
                }
            }
        }
    } else {
        for entry in forwarded_for {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                // An entry we cannot read: nothing left of it is believed.
                Err(_) => hops.clear(),
            }
        }
    }
    for ip in hops.iter().rev() {
        if !is_trusted(ip) {
            return SocketAddr::new(ip.to_canonical(), peer.port());
        }
    }
    peer
}

/// A `Forwarded` node: `1.2.3.4`, `"1.2.3.4:80"`, `"[2001:db8::1]:80"`.
fn forwarded_node(value: &str) -> Option<IpAddr> {
    let v = value.trim().trim_matches('"');
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    v.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &str) -> Request {
        let text = format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        match parse(text.as_bytes()) {
            Parsed::Request(r, len) => {
                assert_eq!(len, text.len());
                r
            }
            other => panic!("{other:?}"),
        }
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 5555)
    }

    #[test]
    fn accepts_with_the_rfc_key_and_only_the_three_headers() {
        let ok = decide(&request(""), &UpgradeOptions::default(), peer("127.0.0.1")).unwrap();
        assert_eq!(
            String::from_utf8(ok.response).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn compression_and_no_masking() {
        let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nNats-No-Masking: true\r\n";
        let off = decide(
            &request(offer),
            &UpgradeOptions::default(),
            peer("127.0.0.1"),
        )
        .unwrap();
        assert!(!off.compression && off.no_masking);
        let on = UpgradeOptions {
            compression: true,
            ..Default::default()
        };
        let ok = decide(&request(offer), &on, peer("127.0.0.1")).unwrap();
        let text = String::from_utf8(ok.response).unwrap();
        assert!(text.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"));
        assert!(text.contains("Nats-No-Masking: true\r\n"));
    }

    #[test]
    fn refusals_as_nats_server() {
        let mut r = request("");
        r.headers.retain(|(n, _)| n != "Upgrade");
        let e = decide(&r, &UpgradeOptions::default(), peer("127.0.0.1")).unwrap_err();
        assert_eq!(e.status, 400);
        let text = String::from_utf8(e.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(text.contains("Sec-Websocket-Version: 13\r\n"));
        assert!(text.ends_with("\r\n\r\nBad Request\n"));
        let mut r = request("");
        r.headers.iter_mut().for_each(|(n, v)| {
            if n == "Sec-WebSocket-Version" {
                *v = "12".into();
            }
        });
        assert_eq!(
            decide(&r, &UpgradeOptions::default(), peer("127.0.0.1"))
                .unwrap_err()
                .status,
            400
        );
        let mut r = request("");
        r.method = "POST".into();
        assert_eq!(
            decide(&r, &UpgradeOptions::default(), peer("127.0.0.1"))
                .unwrap_err()
                .status,
            405
        );
        assert!(matches!(
            parse(b"\x16\x03\x01 garbage\r\n\r\n"),
            Parsed::Bad
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        ));
    }

    #[test]
    fn origins() {
        let list = UpgradeOptions {
            allowed_origins: vec![Origin::parse("https://app.example.com").unwrap()],
            ..Default::default()
        };
        let check = |o: &UpgradeOptions, origin: &str| {
            decide(
                &request(&format!("Origin: {origin}\r\n")),
                o,
                peer("127.0.0.1"),
            )
            .map(|_| ())
        };
        assert!(check(&list, "https://APP.example.com:443").is_ok());
        assert_eq!(
            check(&list, "http://app.example.com").unwrap_err().status,
            403
        );
        assert_eq!(
            check(&list, "https://evil.example.com").unwrap_err().status,
            403
        );
        assert!(
            decide(&request(""), &list, peer("127.0.0.1")).is_ok(),
            "no Origin: accepted"
        );
        let same = UpgradeOptions {
            same_origin: true,
            ..Default::default()
        };
        assert!(check(&same, "http://127.0.0.1:8080").is_ok());
        assert_eq!(
            check(&same, "http://127.0.0.1:8081").unwrap_err().status,
            403
        );
        assert_eq!(
            check(&same, "https://127.0.0.1:8080").unwrap_err().status,
            403
        );
        assert_eq!(check(&same, "null").unwrap_err().status, 403);
    }

    #[test]
    fn jwt_cookie_is_read_when_configured() {
        let r = request("Cookie: theme=dark; jwt=eyJhbGc.abc.def\r\nCookie: other=1\r\n");
        let with = UpgradeOptions {
            jwt_cookie: Some("jwt".into()),
            ..Default::default()
        };
        let ok = decide(&r, &with, peer("127.0.0.1")).unwrap();
        assert_eq!(ok.cookie_jwt.as_deref(), Some("eyJhbGc.abc.def"));
        let ok = decide(&r, &UpgradeOptions::default(), peer("127.0.0.1")).unwrap();
        assert_eq!(ok.cookie_jwt, None, "not configured: not read");
    }

    #[test]
    fn forwarded_addresses_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let r = request("X-Forwarded-For: 203.0.113.7, 10.1.1.1\r\n");
        assert_eq!(
            client_address(&r, &trusted, peer("10.0.0.1")).ip(),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_address(&r, &trusted, peer("192.0.2.1")),
            peer("192.0.2.1")
        );
        let r = request("X-Forwarded-For: 198.51.100.1, 203.0.113.7\r\n");
        assert_eq!(
            client_address(&r, &trusted, peer("10.0.0.1")).ip(),
            "203.0.113.7".parse::<IpAddr>().unwrap(),
            "rightmost untrusted"
        );
        let r = request("Forwarded: for=\"[2001:db8::1]:4711\";proto=https\r\n");
        assert_eq!(
            client_address(&r, &trusted, peer("10.0.0.1")).ip(),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        let r = request("X-Forwarded-For: nonsense\r\n");
        assert_eq!(
            client_address(&r, &trusted, peer("10.0.0.1")),
            peer("10.0.0.1")
        );
    }
}
