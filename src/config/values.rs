//! Checks of single values from the config file: `host:port`, upstream
//! server URLs, user public keys, permission subjects, and the default
//! server name.

use std::net::{Ipv6Addr, SocketAddr};

use nkeys::KeyPair;

use super::*;

/// A socket address, or `host:port` with a non-empty host (`[::1]:4222`
/// for IPv6). Port 0 ("any free port") is accepted only where `any_port`.
pub(super) fn check_host_port(value: &str, any_port: bool) -> Result<(), String> {
    let port = if let Ok(addr) = value.parse::<SocketAddr>() {
        addr.port()
    } else {
        let Some((host, port)) = value.rsplit_once(':') else {
            return Err(format!("{value:?} is not host:port"));
        };
        if host.is_empty()
            || host.contains(':')
            || host.contains('/')
            || host.chars().any(char::is_whitespace)
        {
            return Err(format!("{value:?} is not host:port"));
        }
        port.parse::<u16>()
            .map_err(|_| format!("{value:?}: the port is not a number from 0 to 65535"))?
    };
    if port == 0 && !any_port {
        return Err(format!("{value:?}: port 0 is not a real port"));
    }
    Ok(())
}

/// `nats://h:p`, `tls://h:p`, `h:p` or `h` (port 4222); IPv6 in brackets.
pub(super) fn parse_server(value: &str) -> Result<ServerAddr, String> {
    let (tls, rest) = match value.split_once("://") {
        None => (false, value),
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "nats" => (false, rest),
            "tls" => (true, rest),
            other => {
                return Err(format!(
                    "{value:?}: unsupported scheme {other}://, use nats:// or tls://"
                ));
            }
        },
    };
    if let Some((_, after)) = rest.split_once('@') {
        // Do not echo the value: the part before '@' is a secret.
        return Err(format!(
            "\"{}://...@{after}\": credentials in the URL are not accepted; use the user/password, token, nkey_seed_file or creds_file keys",
            if tls { "tls" } else { "nats" }
        ));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) || rest.chars().any(char::is_whitespace) {
        return Err(format!(
            "{value:?} is not a server address like nats://host:4222"
        ));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(format!("{value:?}: missing ] after an IPv6 address"));
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{value:?} is not host:port")),
            },
        }
    } else if rest.parse::<Ipv6Addr>().is_ok() {
        (rest, None)
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.contains(':') && host.parse::<Ipv6Addr>().is_err() {
        return Err(format!("{value:?}: missing or bad host"));
    }
    let port = match port {
        None => DEFAULT_NATS_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "{value:?}: the port is not a number from 1 to 65535"
                ));
            }
            Ok(port) => port,
        },
    };
    let scheme = if tls { "tls" } else { "nats" };
    let url = if host.contains(':') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    };
    Ok(ServerAddr {
        host: host.to_owned(),
        port,
        tls,
        url,
    })
}

/// A user public key: 56 characters, `U...`, valid checksum.
pub(super) fn check_user_public_key(nkey: &str) -> Result<(), String> {
    if nkey.starts_with('S') {
        return Err(
            "this is a seed (a secret), not a public key: use the public key (U...) here".into(),
        );
    }
    if !nkey.starts_with('U') {
        return Err(format!(
            "{nkey:?} is not a user public key (56 characters starting with U)"
        ));
    }
    KeyPair::from_public_key(nkey)
        .map(|_| ())
        .map_err(|e| format!("{nkey:?} is not a valid user public key: {e}"))?;
    if nkey.len() != 56 {
        return Err(format!(
            "{nkey:?} is not a valid user public key: it has {} characters, not 56",
            nkey.len()
        ));
    }
    Ok(())
}

/// A permission entry: a subject pattern (`*` and `>` wildcards, `>` last),
/// and for subscribe entries an optional queue group after a space.
///
/// nats-server logs and skips invalid entries; natsgate refuses the config
/// instead, so a typo never changes what a user may do unnoticed.
pub(super) fn check_permission_subject(entry: &str, with_queue: bool) -> Result<(), String> {
    let mut parts = entry.split_whitespace();
    let subject = parts.next().unwrap_or("");
    let queue = parts.next();
    if parts.next().is_some() || (queue.is_some() && !with_queue) {
        let what = if with_queue {
            "a subject and at most one queue group"
        } else {
            "a subject without spaces"
        };
        return Err(format!("{entry:?}: expected {what}"));
    }
    if subject.is_empty() {
        return Err("empty subject".into());
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    if tokens.iter().any(|t| t.is_empty()) {
        return Err(format!(
            "{entry:?}: a subject has no empty tokens (check the dots)"
        ));
    }
    if tokens[..tokens.len() - 1].contains(&">") {
        return Err(format!("{entry:?}: '>' may only be the last token"));
    }
    Ok(())
}

/// The host name, from the system or `HOSTNAME`, else [`FALLBACK_SERVER_NAME`].
pub(super) fn default_server_name() -> String {
    let from_kernel = gethostname::gethostname().into_string().ok();
    let from_env = std::env::var("HOSTNAME").ok();
    [from_kernel, from_env]
        .into_iter()
        .flatten()
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty() && !name.chars().any(char::is_whitespace))
        .unwrap_or_else(|| FALLBACK_SERVER_NAME.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        let cases = [
            (
                "nats://127.0.0.1:4223",
                "127.0.0.1",
                4223,
                false,
                "nats://127.0.0.1:4223",
            ),
            (
                "tls://nats.internal:4443",
                "nats.internal",
                4443,
                true,
                "tls://nats.internal:4443",
            ),
            ("NATS://h:1", "h", 1, false, "nats://h:1"),
            ("h:5000", "h", 5000, false, "nats://h:5000"),
            (
                "nats.internal",
                "nats.internal",
                4222,
                false,
                "nats://nats.internal:4222",
            ),
            ("nats://h:4222/", "h", 4222, false, "nats://h:4222"),
            ("[::1]:4223", "::1", 4223, false, "nats://[::1]:4223"),
            ("tls://[::1]", "::1", 4222, true, "tls://[::1]:4222"),
            ("::1", "::1", 4222, false, "nats://[::1]:4222"),
        ];
        for (input, host, port, tls, url) in cases {
            let server = parse_server(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                server,
                ServerAddr {
                    host: host.into(),
                    port,
                    tls,
                    url: url.into()
                },
                "{input}"
            );
        }
        for bad in [
            "ws://h:1",
            "nats://u:p@h:1",
            "h:0",
            "h:70000",
            "h:x",
            "nats://:4222",
            "nats://h:1/path",
            "[::1",
            "",
        ] {
            assert!(parse_server(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn host_ports() {
        for good in ["0.0.0.0:4222", "127.0.0.1:0", "[::]:4222", "localhost:4222"] {
            check_host_port(good, true).unwrap();
        }
        for bad in ["4222", "localhost", ":4222", "a b:1", "h:99999", "::1"] {
            assert!(check_host_port(bad, true).is_err(), "{bad:?}");
        }
        assert!(check_host_port("gate:0", false).is_err());
    }

    #[test]
    fn permission_subjects() {
        for good in ["a", "a.*.c", "a.>", ">", "*", "foo*.bar"] {
            check_permission_subject(good, false).unwrap();
        }
        check_permission_subject("a.> workers", true).unwrap();
        for bad in ["", "a..b", ".a", "a.", "a.>.b", "a b"] {
            assert!(check_permission_subject(bad, false).is_err(), "{bad:?}");
        }
        assert!(check_permission_subject("a q extra", true).is_err());
    }

    #[test]
    fn user_public_keys() {
        let user = KeyPair::new_user();
        check_user_public_key(&user.public_key()).unwrap();
        let seed = user.seed().unwrap();
        assert!(check_user_public_key(&seed).unwrap_err().contains("seed"));
        let account = KeyPair::new_account().public_key();
        assert!(check_user_public_key(&account).is_err());
        let mut broken = user.public_key();
        broken.replace_range(10..11, if &broken[10..11] == "A" { "B" } else { "A" });
        assert!(check_user_public_key(&broken).is_err());
    }

    #[test]
    fn default_server_name_is_never_empty() {
        let name = default_server_name();
        assert!(!name.is_empty() && !name.contains(char::is_whitespace));
    }
}
