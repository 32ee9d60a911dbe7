//! INFO in both directions: the facts natsgate reads from the upstream's INFO,
//! and the INFO natsgate sends its own clients, laid out like nats-server's
//! (spec 1.2: Go field order, `omitempty`, `<>&` escaped, a blank before CRLF).

use serde::{Deserialize, Serialize};

/// What natsgate learns from an upstream INFO and passes on to clients.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct UpstreamInfo {
    #[serde(default)]
    pub server_id: String,
    #[serde(default)]
    pub version: String,
    #[serde(default = "default_proto")]
    pub proto: i64,
    #[serde(default)]
    pub git_commit: Option<String>,
    #[serde(default)]
    pub go: String,
    #[serde(default)]
    pub headers: bool,
    #[serde(default)]
    pub max_payload: i64,
    #[serde(default)]
    pub jetstream: bool,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub ldm: bool,
    #[serde(default)]
    pub api_lvl: Option<i64>,
    #[serde(default)]
    pub tls_required: bool,
}

fn default_proto() -> i64 {
    1
}

impl UpstreamInfo {
    /// Parses the JSON argument of an upstream `INFO` line.
    pub fn parse(json: &[u8]) -> Result<UpstreamInfo, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// Used until an upstream server has been seen: what a current
    /// nats-server with default settings announces.
    pub fn assumed(max_payload: usize) -> UpstreamInfo {
        UpstreamInfo {
            server_id: String::new(),
            version: "2.15.1".to_string(),
            proto: 1,
            git_commit: None,
            go: String::new(),
            headers: true,
            max_payload: i64::try_from(max_payload).unwrap_or(i64::MAX),
            jetstream: false,
            nonce: None,
            cluster: None,
            domain: None,
            ldm: false,
            api_lvl: None,
            tls_required: false,
        }
    }
}

/// The INFO natsgate sends a client, in nats-server's field order.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClientInfo {
    pub server_id: String,
    pub server_name: String,
    pub version: String,
    pub proto: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    pub go: String,
    pub host: String,
    pub port: u16,
    pub headers: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub auth_required: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub tls_required: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub tls_verify: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub tls_available: bool,
    pub max_payload: i64,
    #[serde(skip_serializing_if = "is_false")]
    pub jetstream: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub client_id: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_ip: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub nonce: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub ldm: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub connect_info: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_account: String,
    #[serde(skip_serializing_if = "is_false")]
    pub acc_is_sys: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_lvl: Option<i64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ClientInfo {
    /// The whole `INFO {...} \r\n` frame.
    pub fn to_frame(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and bools cannot fail.
        let json = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string());
        super::encode::info(json.as_bytes())
    }
}

/// Appends compact JSON with `<`, `>` and `&` escaped as Go's
/// `encoding/json` does (they can only occur inside strings).
pub fn write_go_json(out: &mut Vec<u8>, json: &[u8]) {
    for &c in json {
        match c {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_info_looks_like_nats_servers() {
        let info = ClientInfo {
            server_id: "NABC".into(),
            server_name: "gate<1>".into(),
            version: "2.15.1".into(),
            proto: 1,
            go: "go1.27.2".into(),
            host: "0.0.0.0".into(),
            port: 4222,
            headers: true,
            auth_required: true,
            max_payload: 1048576,
            client_id: 7,
            client_ip: "127.0.0.1".into(),
            nonce: "abc".into(),
            ..ClientInfo::default()
        };
        let frame = String::from_utf8(info.to_frame()).unwrap();
        assert_eq!(
            frame,
            "INFO {\"server_id\":\"NABC\",\"server_name\":\"gate\\u003c1\\u003e\",\"version\":\"2.15.1\",\"proto\":1,\
             \"go\":\"go1.27.2\",\"host\":\"0.0.0.0\",\"port\":4222,\"headers\":true,\"auth_required\":true,\
             \"max_payload\":1048576,\"client_id\":7,\"client_ip\":\"127.0.0.1\",\"nonce\":\"abc\"} \r\n"
        );
    }

    #[test]
    fn upstream_info_tolerates_unknown_and_missing_fields() {
        let info = UpstreamInfo::parse(br#"{"server_id":"N1","version":"2.15.1","headers":true,"max_payload":1024,"connect_urls":["x:1"],"ldm":true}"#).unwrap();
        assert_eq!(info.max_payload, 1024);
        assert!(info.ldm && info.headers);
        assert!(UpstreamInfo::parse(b"{").is_err());
    }
}
