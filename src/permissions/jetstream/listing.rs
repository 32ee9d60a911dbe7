//! Filtered stream listings (issue 14): `STREAM.NAMES` and `STREAM.LIST`
//! answered with only the streams the user may read from.
//!
//! Owns: which streams a user sees, the upstream pages natsgate asks for,
//! and the answer in nats-server's shape. Pure: the session sends the page
//! requests ([`Listing::page_request`]) over the client's upstream
//! connection, feeds the answers back ([`Listing::add_page`]) and delivers
//! [`Listing::answer`] on the client's reply subject.
//!
//! Filtering one upstream page in flight would leave the client's paging
//! wrong (`total` counts streams it never sees, and a `STREAM.NAMES` page has
//! no subjects to filter by). So natsgate reads the whole listing with
//! `STREAM.LIST` (which carries each stream's config), keeps the visible
//! streams, and cuts the client's page out of those: `total`, `offset` and
//! `limit` are consistent with what the client sees, and paging works as
//! against nats-server.
//!
//! A stream is visible when one of its subjects is one the user may read
//! some message on ([`Permissions::may_read_some`]). A stream that mirrors,
//! sources or transforms subjects (its messages may be on any subject) is
//! visible only to a user who may read everything, and such a user's
//! listing is not filtered at all.

use serde_json::Value;

use super::{Form, Json, Refusal, StreamSubjects, field, parse_stream_config, string_field};
use crate::permissions::Permissions;
use crate::protocol::quote::go_quote;

/// nats-server's page size for `STREAM.NAMES` (`JSApiNamesLimit`).
const NAMES_LIMIT: usize = 1024;
/// nats-server's page size for `STREAM.LIST` (`JSApiListLimit`): also the
/// size of the pages natsgate reads.
const LIST_LIMIT: usize = 256;
/// The most streams natsgate reads for one listing; a larger account's
/// listing is refused rather than held in memory.
pub const MAX_STREAMS: usize = 10_000;

/// Which listing the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// `STREAM.NAMES`: names only.
    Names,
    /// `STREAM.LIST`: each stream's info.
    List,
}

/// A listing being read for one client request.
#[derive(Clone, Debug, PartialEq)]
pub struct Listing {
    kind: ListKind,
    /// The request's API prefix (`$JS.API.` or `$JS.<domain>.API.`).
    prefix: String,
    /// The client's `offset`.
    offset: usize,
    /// The client's `subject` filter, passed on to each page.
    subject: String,
    /// The client's request subject, for refusal texts.
    request: String,
    /// Upstream entries read so far (the next page's offset).
    read: usize,
    /// The visible streams: names, or whole stream infos.
    visible: Vec<Value>,
}

/// What to do after a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ask for the next page.
    More,
    /// The listing is complete: answer the client.
    Done,
    /// The upstream's answer could not be used: refuse.
    Failed(String),
}

impl Listing {
    /// A listing for the request `path` (`STREAM.NAMES` or `STREAM.LIST`
    /// after the API prefix) with the body's fields; `None` when the path
    /// is not a listing.
    pub(super) fn of(
        path: &[u8],
        prefix: &[u8],
        request: &[u8],
        body: &[(String, Json)],
    ) -> Option<Result<Listing, String>> {
        let kind = match path {
            b"STREAM.NAMES" => ListKind::Names,
            b"STREAM.LIST" => ListKind::List,
            _ => return None,
        };
        let offset = match field(body, "offset") {
            None | Some(Json::Null) => 0,
            Some(Json::Number(Some(n))) => usize::try_from(*n).unwrap_or(usize::MAX),
            Some(_) => return Some(Err("a listing's offset is not a whole number".to_string())),
        };
        let Ok(subject) = string_field(body, "subject") else {
            return Some(Err("a listing's subject is not a string".to_string()));
        };
        Some(Ok(Listing {
            kind,
            prefix: String::from_utf8_lossy(prefix).into_owned(),
            offset,
            subject: subject.to_string(),
            request: String::from_utf8_lossy(request).into_owned(),
            read: 0,
            visible: Vec::new(),
        }))
    }

    /// The next upstream page: the subject and body of a `STREAM.LIST`.
    pub fn page_request(&self) -> (String, Vec<u8>) {
        let mut body = serde_json::Map::new();
        body.insert("offset".to_string(), Value::from(self.read));
        if !self.subject.is_empty() {
            body.insert("subject".to_string(), Value::from(self.subject.clone()));
        }
        (
            format!("{}STREAM.LIST", self.prefix),
            Value::Object(body).to_string().into_bytes(),
        )
    }

    /// Reads one upstream `STREAM.LIST` answer and keeps its visible
    /// streams.
    pub fn add_page(&mut self, permissions: &Permissions, page: &[u8]) -> Step {
        let Ok(Value::Object(page)) = serde_json::from_slice::<Value>(page) else {
            return Step::Failed("natsgate could not read the stream list".to_string());
        };
        if let Some(error) = page.get("error") {
            let description = error
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            return Step::Failed(format!(
                "natsgate could not list the streams: {description}"
            ));
        }
        let total = page.get("total").and_then(Value::as_u64);
        let streams = match page.get("streams") {
            Some(Value::Array(streams)) => streams.as_slice(),
            Some(Value::Null) | None => &[],
            Some(_) => return Step::Failed("natsgate could not read the stream list".to_string()),
        };
        let Some(total) = total.and_then(|t| usize::try_from(t).ok()) else {
            return Step::Failed("natsgate could not read the stream list".to_string());
        };
        if total > MAX_STREAMS {
            return Step::Failed(format!(
                "natsgate lists at most {MAX_STREAMS} streams, the account has {total}"
            ));
        }
        for info in streams {
            let Some(config) = info.get("config") else {
                return Step::Failed("natsgate could not read the stream list".to_string());
            };
            if !visible(permissions, &parse_stream_config(config)) {
                continue;
            }
            match self.kind {
                ListKind::List => self.visible.push(info.clone()),
                ListKind::Names => match config.get("name") {
                    Some(Value::String(name)) => self.visible.push(Value::from(name.clone())),
                    _ => {
                        return Step::Failed("natsgate could not read the stream list".to_string());
                    }
                },
            }
        }
        self.read += streams.len();
        // An empty page ends it too: the account changed while paging.
        if self.read >= total || streams.is_empty() {
            Step::Done
        } else {
            Step::More
        }
    }

    /// The client's page, in nats-server's shape: `total` visible streams,
    /// the client's `offset` (at most `total`), nats-server's `limit`.
    pub fn answer(&self) -> Vec<u8> {
        let total = self.visible.len();
        let offset = self.offset.min(total);
        let (kind, limit) = match self.kind {
            ListKind::Names => ("stream_names", NAMES_LIMIT),
            ListKind::List => ("stream_list", LIST_LIMIT),
        };
        let page: Vec<Value> = self.visible[offset..].iter().take(limit).cloned().collect();
        // nats-server sends `null` for no names, and `[]` for no infos.
        let streams = if page.is_empty() && self.kind == ListKind::Names {
            Value::Null
        } else {
            Value::Array(page)
        };
        let mut answer = serde_json::Map::new();
        answer.insert(
            "type".to_string(),
            Value::from(format!("io.nats.jetstream.api.v1.{kind}_response")),
        );
        answer.insert("total".to_string(), Value::from(total));
        answer.insert("offset".to_string(), Value::from(offset));
        answer.insert("limit".to_string(), Value::from(limit));
        answer.insert("streams".to_string(), streams);
        Value::Object(answer).to_string().into_bytes()
    }

    /// The refusal sent when the listing could not be read.
    pub fn refusal(&self, why: &str) -> Refusal {
        let kind = match self.kind {
            ListKind::Names => "stream_names",
            ListKind::List => "stream_list",
        };
        Refusal {
            form: Form::Json,
            response_type: format!("io.nats.jetstream.api.v1.{kind}_response"),
            description: format!("{why} ({})", go_quote(self.request.as_bytes())),
        }
    }
}

/// Whether a stream with these subjects is listed for the user.
pub fn visible(permissions: &Permissions, subjects: &StreamSubjects) -> bool {
    match subjects {
        StreamSubjects::Listed(list) => {
            list.iter().any(|s| permissions.may_read_some(s.as_bytes()))
        }
        StreamSubjects::Unbounded => permissions.may_read_all(b">"),
        StreamSubjects::Missing | StreamSubjects::Unknown => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::{PermissionSpec, SubjectRules};

    fn reader(allow: &[&str], deny: &[&str]) -> Permissions {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Permissions::compile(&PermissionSpec {
            publish: None,
            subscribe: Some(SubjectRules {
                allow: Some(list(allow)),
                deny: list(deny),
            }),
            responses: None,
        })
    }

    fn listing(kind: ListKind, offset: usize) -> Listing {
        Listing {
            kind,
            prefix: "$JS.API.".to_string(),
            offset,
            subject: String::new(),
            request: "$JS.API.STREAM.NAMES".to_string(),
            read: 0,
            visible: Vec::new(),
        }
    }

    fn info(name: &str, subjects: &[&str]) -> Value {
        serde_json::json!({"config": {"name": name, "subjects": subjects}, "state": {"messages": 0}})
    }

    fn page(total: usize, offset: usize, streams: Vec<Value>) -> Vec<u8> {
        serde_json::json!({
            "type": "io.nats.jetstream.api.v1.stream_list_response",
            "total": total, "offset": offset, "limit": 256, "streams": streams,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn which_streams_are_visible() {
        let kv_public = reader(&["$KV.cfg.public.>", "_INBOX.>"], &[]);
        let cases: &[(&[&str], bool)] = &[
            (&["$KV.cfg.>"], true),
            (&["$KV.other.>"], false),
            (&["orders.>", "_INBOX.x"], true),
            (&["orders.>"], false),
        ];
        for (subjects, want) in cases {
            let listed = StreamSubjects::Listed(subjects.iter().map(|s| s.to_string()).collect());
            assert_eq!(visible(&kv_public, &listed), *want, "{subjects:?}");
        }
        assert!(!visible(&kv_public, &StreamSubjects::Unbounded));
        let denied = reader(&["orders.>"], &["orders.secret.>"]);
        let listed = |s: &str| StreamSubjects::Listed(vec![s.to_string()]);
        assert!(!visible(&denied, &listed("orders.secret.>")));
        assert!(!visible(&denied, &listed("orders.secret.a")));
        assert!(visible(&denied, &listed("orders.*")));
        assert!(visible(&denied, &listed(">")));
        let everything = reader(&[">"], &[]);
        assert!(visible(&everything, &StreamSubjects::Unbounded));
    }

    #[test]
    fn pages_are_read_until_the_total_and_the_clients_page_is_cut_from_the_visible() {
        let user = reader(&["a.>"], &[]);
        let mut names = listing(ListKind::Names, 1);
        let first: Vec<Value> = (0..256)
            .map(|i| {
                info(
                    &format!("S{i:03}"),
                    &[if i % 2 == 0 { "a.x" } else { "b.x" }],
                )
            })
            .collect();
        assert_eq!(names.page_request().1, br#"{"offset":0}"#.to_vec());
        assert_eq!(names.add_page(&user, &page(300, 0, first)), Step::More);
        assert_eq!(names.page_request().1, br#"{"offset":256}"#.to_vec());
        let second: Vec<Value> = (256..300)
            .map(|i| info(&format!("S{i:03}"), &["a.>"]))
            .collect();
        assert_eq!(names.add_page(&user, &page(300, 256, second)), Step::Done);
        let answer: Value = serde_json::from_slice(&names.answer()).unwrap();
        assert_eq!(
            answer["type"],
            "io.nats.jetstream.api.v1.stream_names_response"
        );
        assert_eq!(answer["total"], 128 + 44);
        assert_eq!(answer["offset"], 1);
        assert_eq!(answer["limit"], 1024);
        let streams = answer["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 171);
        assert_eq!(streams[0], "S002");
        assert_eq!(streams[170], "S299");
    }

    #[test]
    fn a_list_keeps_whole_infos_and_an_offset_past_the_end_is_the_total() {
        let user = reader(&["a.>"], &[]);
        let mut list = listing(ListKind::List, 7);
        let streams = vec![info("A", &["a.1"]), info("B", &["b.1"])];
        assert_eq!(list.add_page(&user, &page(2, 0, streams)), Step::Done);
        let answer: Value = serde_json::from_slice(&list.answer()).unwrap();
        assert_eq!(answer["total"], 1);
        assert_eq!(answer["offset"], 1);
        assert_eq!(answer["limit"], 256);
        assert_eq!(answer["streams"], serde_json::json!([]));
        let mut list = listing(ListKind::List, 0);
        list.add_page(
            &user,
            &page(2, 0, vec![info("A", &["a.1"]), info("B", &["b.1"])]),
        );
        let answer: Value = serde_json::from_slice(&list.answer()).unwrap();
        assert_eq!(answer["streams"], serde_json::json!([info("A", &["a.1"])]));
        let empty = listing(ListKind::Names, 0);
        let answer: Value = serde_json::from_slice(&empty.answer()).unwrap();
        assert_eq!(answer["streams"], Value::Null);
    }

    #[test]
    fn bad_pages_and_huge_accounts_fail() {
        let user = reader(&["a.>"], &[]);
        let mut list = listing(ListKind::List, 0);
        assert!(matches!(list.add_page(&user, b"not json"), Step::Failed(_)));
        let error = br#"{"type":"x","error":{"code":503,"description":"jetstream not enabled"}}"#;
        assert_eq!(
            list.add_page(&user, error),
            Step::Failed("natsgate could not list the streams: jetstream not enabled".to_string())
        );
        let huge = page(MAX_STREAMS + 1, 0, vec![info("A", &["a.1"])]);
        assert!(matches!(list.add_page(&user, &huge), Step::Failed(_)));
        let no_config = page(1, 0, vec![serde_json::json!({"state": {}})]);
        assert!(matches!(list.add_page(&user, &no_config), Step::Failed(_)));
        // A page shorter than promised, then an empty one: done, not a loop.
        let mut names = listing(ListKind::Names, 0);
        assert_eq!(
            names.add_page(&user, &page(5, 0, vec![info("A", &["a.1"])])),
            Step::More
        );
        assert_eq!(names.add_page(&user, &page(5, 1, vec![])), Step::Done);
    }

    #[test]
    fn the_clients_subject_filter_is_passed_on() {
        let body = vec![
            ("offset".to_string(), Json::Number(Some(3))),
            ("subject".to_string(), Json::String("a.b".to_string())),
        ];
        let listing = Listing::of(
            b"STREAM.NAMES",
            b"$JS.hub.API.",
            b"$JS.hub.API.STREAM.NAMES",
            &body,
        )
        .unwrap()
        .unwrap();
        assert_eq!(listing.offset, 3);
        let (subject, request) = listing.page_request();
        assert_eq!(subject, "$JS.hub.API.STREAM.LIST");
        assert_eq!(request, br#"{"offset":0,"subject":"a.b"}"#.to_vec());
        assert!(Listing::of(b"STREAM.INFO.X", b"$JS.API.", b"", &[]).is_none());
        let bad = vec![("offset".to_string(), Json::String("1".to_string()))];
        assert!(
            Listing::of(b"STREAM.LIST", b"$JS.API.", b"", &bad)
                .unwrap()
                .is_err()
        );
    }
}
