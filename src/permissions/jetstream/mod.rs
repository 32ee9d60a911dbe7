//! The JetStream guard's decisions (issue 14): whether a JetStream API
//! request that passed the ordinary publish check would let the user read a
//! message on a subject they could not subscribe to, or aim the server's
//! answer at a subject they could not subscribe to.
//!
//! Owns: recognising the API subjects that matter (also under a JetStream
//! domain, `$JS.<domain>.API.`), reading their bodies as nats-server reads
//! them, and the rules. Pure: no I/O, no logging. The session decides when
//! to ask ([`inspect`] only for `$JS.` subjects and only with the guard on),
//! fetches a stream's subjects when a rule needs them
//! ([`Verdict::NeedStream`], then [`answer_stream`]), and sends, counts and
//! logs the refusal.
//!
//! # Rules
//!
//! - **Every request** under `$JS.API.`: a reply subject must be one the user
//!   may subscribe to (nats-server's token-wise check), so no answer (a
//!   consumer's pull batch included) is aimed at another user's inbox.
//! - **Consumer create** (`CONSUMER.CREATE.<stream>[.<name>[.<filter>]]`,
//!   `CONSUMER.DURABLE.CREATE.<stream>.<name>`): every `filter_subject`,
//!   `filter_subjects` entry and subject-appended filter must be readable
//!   ([`Permissions::may_read_all`]: covered by the subscribe allow list as
//!   a set, overlapping no subscribe deny entry). No filter means the whole
//!   stream. A `deliver_subject` must be subscribable (with its
//!   `deliver_group`, if any).
//! - **Message get** (`STREAM.MSG.GET.<stream>`, `DIRECT.GET.<stream>` and
//!   `DIRECT.GET.<stream>.<subject>`): the subject the server will read by
//!   (`last_by_subj`, `next_by_subj`, each `multi_last` entry, or the
//!   appended subject) must be readable. A get by sequence or by time
//!   without `next_by_subj` reads any message of the stream, so it needs
//!   the whole stream. The route is worked out as nats-server works it out
//!   (`jsMsgGetRequest`, `getDirectRequest`): `{"seq":5,"last_by_subj":..}`
//!   counts as a get by sequence.
//!
//!   Get by sequence is *refused* when the whole stream is not readable,
//!   rather than passed with its reply checked afterwards (the `Nats-Subject`
//!   header or the JSON `message.subject`): refusing decides before anything
//!   is read, needs no state per outstanding request and no parsing on the
//!   delivery path, and tells the client why instead of letting it time
//!   out. It costs one stream-info lookup (cached) for users who may not read
//!   everything; KV and object-store reads are by subject and do not need it.
//! - **Stream create and update** (`STREAM.CREATE.<stream>`,
//!   `STREAM.UPDATE.<stream>`): the stream's `subjects` (by default its name)
//!   must be readable, since the stream's owner decides where they go next;
//!   a `republish` destination must be publishable; a stream that mirrors or
//!   sources other streams may not also republish or transform subjects
//!   unless the user may read everything (that would move messages of
//!   other streams onto subjects the user reads).
//! - **The whole stream** ([`answer_stream`]): every subject of the stream's
//!   config must be readable; a stream that mirrors, sources or transforms
//!   holds messages on subjects its config does not list, so it needs `>`.
//!
//! # Reading bodies as nats-server does
//!
//! Go's `encoding/json` matches keys case-insensitively (with Unicode
//! simple folding: `ſ` is `s`, `K` (Kelvin) is `k`), lets a later duplicate
//! key override or merge into an earlier one, and nats-server decodes a
//! stream of several JSON values into one request. A body natsgate cannot
//! read exactly the same way is refused: bodies over [`MAX_BODY`], anything
//! but one JSON object, keys that are equal after folding, values of the
//! wrong type. No legitimate client sends those.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::Permissions;
use crate::protocol::quote::go_quote;

pub mod listing;

use crate::protocol::subject;
pub use listing::Listing;

/// The largest request body the guard reads; a larger one on an API subject
/// the guard checks is refused. nats-server's own requests are far smaller.
pub const MAX_BODY: usize = 64 * 1024;

/// The `err_code` of natsgate's refusals. nats-server's JetStream codes are
/// 10002 to 10227 (2.15.1); clients treat an unknown code as a generic API
/// error with the given `code` (403) and description.
pub const REFUSAL_ERR_CODE: u32 = 10403;

/// How the guard judged one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Do not forward it; answer the client with the refusal.
    Refuse(Refusal),
    /// Allowed only if the user may read the whole stream: learn the
    /// stream's subjects (`$JS.API.STREAM.INFO.<stream>`), then call
    /// [`answer_stream`].
    NeedStream(StreamQuestion),
    /// A stream listing the user may see only part of: read it
    /// ([`Listing::page_request`], [`Listing::add_page`]) and answer with
    /// the visible streams ([`Listing::answer`]).
    NeedListing(Box<Listing>),
}

/// A decision that waits for a stream's subjects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamQuestion {
    /// The stream's name, as in the request subject.
    pub stream: String,
    /// Where to ask for its subjects: `STREAM.INFO.<stream>` under the
    /// request's own API prefix (and so its JetStream domain).
    pub info_subject: String,
    form: Form,
    response_type: String,
    /// What the request does, for the refusal text.
    what: &'static str,
    /// The request subject, for the refusal text.
    subject: String,
}

/// A refused request: what natsgate answers on its reply subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    form: Form,
    /// `io.nats.jetstream.api.v1.<kind>_response`.
    response_type: String,
    /// Names natsgate and the subject.
    pub description: String,
}

/// How a client expects errors of an API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// nats-server's JSON error object.
    Json,
    /// A header-only status message: direct get answers errors this way,
    /// and nats-py raises its error only from a status header there (it
    /// fails on a JSON body).
    Status,
}

/// What a stream's info said about the subjects its messages are on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamSubjects {
    /// The stream does not exist: the request fails upstream anyway.
    Missing,
    /// Its messages are on these subjects (its config's `subjects`).
    Listed(Vec<String>),
    /// It mirrors, sources or transforms: its messages may be on any
    /// subject.
    Unbounded,
    /// The answer was an error other than "not found", or unreadable.
    Unknown,
}

/// Judges one request the user may publish. `subject` is the PUB subject,
/// `reply` its reply subject, `body` the payload (without headers).
/// Subjects that are not JetStream API subjects are allowed at once.
pub fn inspect(
    permissions: &Permissions,
    subject: &[u8],
    reply: Option<&[u8]>,
    body: &[u8],
) -> Verdict {
    let Some(path) = api_path(subject) else {
        return Verdict::Allow;
    };
    let api = Api::of(path);
    let response_type = response_type(path);
    let refuse = |description: String| {
        Verdict::Refuse(Refusal {
            form: api.form(),
            response_type: response_type.clone(),
            description,
        })
    };
    if let Some(reply) = reply.filter(|r| !r.is_empty())
        && !permissions.subscribe_allowed(reply, None)
    {
        return refuse(format!(
            "natsgate: the reply subject {} of {} is one the user may not subscribe to",
            go_quote(reply),
            go_quote(subject)
        ));
    }
    if matches!(api, Api::Other) {
        return Verdict::Allow;
    }
    if std::str::from_utf8(subject).is_err() {
        // Names are compared as text below; keep it exact.
        return refuse(format!(
            "natsgate: request subject {} is not UTF-8",
            go_quote(subject)
        ));
    }
    if body.len() > MAX_BODY {
        return refuse(format!(
            "natsgate: request to {} larger than the {MAX_BODY} bytes the guard reads",
            go_quote(subject)
        ));
    }
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        match serde_json::from_slice::<Json>(body) {
            Ok(Json::Object(fields)) => fields,
            Ok(_) | Err(_) => {
                return refuse(format!(
                    "natsgate: request to {} is not one JSON object with distinct keys",
                    go_quote(subject)
                ));
            }
        }
    };
    if api == Api::Listing {
        if permissions.may_read_all(b">") {
            return Verdict::Allow;
        }
        let prefix = &subject[..subject.len() - path.len()];
        return match Listing::of(path, prefix, subject, &request) {
            Some(Ok(listing)) => Verdict::NeedListing(Box::new(listing)),
            Some(Err(reason)) => refuse(format!("natsgate: {reason} ({})", go_quote(subject))),
            None => Verdict::Allow,
        };
    }
    let judged = match &api {
        Api::ConsumerCreate { stream, filter } => {
            consumer_create(permissions, stream, filter.as_deref(), &request)
        }
        Api::MessageGet { stream, direct } => message_get(permissions, stream, *direct, &request),
        Api::DirectGetSubject { subject: key, .. } => {
            if permissions.may_read_all(key.as_bytes()) {
                Ok(Judged::Allow)
            } else {
                Err(format!(
                    "direct get of {} reads a subject the user may not subscribe to",
                    go_quote(key.as_bytes())
                ))
            }
        }
        Api::StreamConfig { stream } => stream_config(permissions, stream, &request),
        Api::Listing | Api::Other => Ok(Judged::Allow),
    };
    match judged {
        Ok(Judged::Allow) => Verdict::Allow,
        Ok(Judged::WholeStream(_)) if permissions.may_read_all(b">") => Verdict::Allow,
        Ok(Judged::WholeStream(what)) => {
            let stream = api.stream().unwrap_or_default().to_string();
            let prefix = &subject[..subject.len() - path.len()];
            let info_subject = format!("{}STREAM.INFO.{stream}", String::from_utf8_lossy(prefix));
            Verdict::NeedStream(StreamQuestion {
                stream,
                info_subject,
                form: api.form(),
                response_type,
                what,
                subject: String::from_utf8_lossy(subject).into_owned(),
            })
        }
        Err(reason) => refuse(format!("natsgate: {reason} ({})", go_quote(subject))),
    }
}

/// Finishes a [`Verdict::NeedStream`] once the stream's subjects are known:
/// allowed, or the refusal.
pub fn answer_stream(
    permissions: &Permissions,
    question: &StreamQuestion,
    subjects: &StreamSubjects,
) -> Result<(), Refusal> {
    let readable = match subjects {
        StreamSubjects::Missing => true,
        StreamSubjects::Listed(list) => list.iter().all(|s| permissions.may_read_all(s.as_bytes())),
        StreamSubjects::Unbounded => permissions.may_read_all(b">"),
        StreamSubjects::Unknown => false,
    };
    if readable {
        return Ok(());
    }
    let why = if matches!(subjects, StreamSubjects::Unknown) {
        "natsgate could not learn its subjects"
    } else {
        "the user may not subscribe to all of its subjects"
    };
    Err(Refusal {
        form: question.form,
        response_type: question.response_type.clone(),
        description: format!(
            "natsgate: {} reads all of stream {}, and {why} ({})",
            question.what,
            go_quote(question.stream.as_bytes()),
            go_quote(question.subject.as_bytes())
        ),
    })
}

/// Reads `$JS.API.STREAM.INFO.<stream>`'s answer.
pub fn parse_stream_info(body: &[u8]) -> StreamSubjects {
    let Ok(info) = serde_json::from_slice::<serde_json::Value>(body) else {
        return StreamSubjects::Unknown;
    };
    if let Some(error) = info.get("error") {
        return if error.get("code").and_then(serde_json::Value::as_u64) == Some(404) {
            StreamSubjects::Missing
        } else {
            StreamSubjects::Unknown
        };
    }
    match info.get("config") {
        Some(config) => parse_stream_config(config),
        None => StreamSubjects::Unknown,
    }
}

/// What a stream's config (in a stream info) says about its subjects.
fn parse_stream_config(config: &serde_json::Value) -> StreamSubjects {
    let present = |key: &str| {
        config.get(key).is_some_and(|v| match v {
            serde_json::Value::Null => false,
            serde_json::Value::Array(a) => !a.is_empty(),
            _ => true,
        })
    };
    if present("mirror") || present("sources") || present("subject_transform") {
        return StreamSubjects::Unbounded;
    }
    let subjects: Option<Vec<String>> = config
        .get("subjects")
        .and_then(serde_json::Value::as_array)
        .map(|list| {
            list.iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .unwrap_or(None);
    match subjects {
        Some(list) if !list.is_empty() => StreamSubjects::Listed(list),
        // A stream without subjects holds what something else put there.
        _ => StreamSubjects::Unbounded,
    }
}

impl Refusal {
    /// Whether the answer is a header-only status message (direct get)
    /// rather than a JSON body.
    pub fn is_status(&self) -> bool {
        self.form == Form::Status
    }

    /// The JSON answer: nats-server's API error shape.
    pub fn json(&self) -> Vec<u8> {
        serde_json::json!({
            "type": self.response_type,
            "error": {
                "code": 403,
                "err_code": REFUSAL_ERR_CODE,
                "description": self.description,
            }
        })
        .to_string()
        .into_bytes()
    }

    /// The status header (`NATS/1.0 403 <description>` and an empty line),
    /// for the header-only answer. The description is one line: subjects in
    /// it are Go-quoted, so they carry no CR or LF.
    pub fn status_header(&self) -> Vec<u8> {
        let line: String = self
            .description
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!("NATS/1.0 403 {line}\r\n\r\n").into_bytes()
    }
}

// === the API subjects ===

/// The part of a JetStream API subject after `API.`: `$JS.API.<path>` or
/// `$JS.<domain>.API.<path>` (nats-server maps a domain's API onto its own).
fn api_path(subject: &[u8]) -> Option<&[u8]> {
    if let Some(path) = subject.strip_prefix(b"$JS.API.") {
        return Some(path);
    }
    let rest = subject.strip_prefix(b"$JS.")?;
    let dot = rest.iter().position(|b| *b == b'.')?;
    rest[dot + 1..].strip_prefix(b"API.")
}

/// The API requests the guard reads bodies of.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Api {
    ConsumerCreate {
        stream: String,
        /// The subject-appended filter of `CONSUMER.CREATE.<s>.<n>.<filter>`.
        filter: Option<String>,
    },
    MessageGet {
        stream: String,
        direct: bool,
    },
    DirectGetSubject {
        stream: String,
        subject: String,
    },
    StreamConfig {
        stream: String,
    },
    /// `STREAM.NAMES`, `STREAM.LIST`.
    Listing,
    Other,
}

impl Api {
    fn of(path: &[u8]) -> Api {
        let tokens: Vec<String> = subject::tokens(path)
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect();
        let t: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let join = |from: usize| (t.len() > from).then(|| t[from..].join("."));
        match t.as_slice() {
            ["CONSUMER", "CREATE", stream, ..] => Api::ConsumerCreate {
                stream: stream.to_string(),
                filter: join(4),
            },
            ["CONSUMER", "DURABLE", "CREATE", stream, ..] => Api::ConsumerCreate {
                stream: stream.to_string(),
                filter: None,
            },
            ["STREAM", "MSG", "GET", stream, ..] => Api::MessageGet {
                stream: stream.to_string(),
                direct: false,
            },
            ["DIRECT", "GET", stream] => Api::MessageGet {
                stream: stream.to_string(),
                direct: true,
            },
            ["DIRECT", "GET", stream, ..] => Api::DirectGetSubject {
                stream: stream.to_string(),
                subject: join(3).unwrap_or_default(),
            },
            ["STREAM", "CREATE" | "UPDATE", stream, ..] => Api::StreamConfig {
                stream: stream.to_string(),
            },
            ["STREAM", "NAMES" | "LIST"] => Api::Listing,
            _ => Api::Other,
        }
    }

    fn stream(&self) -> Option<&str> {
        match self {
            Api::ConsumerCreate { stream, .. }
            | Api::MessageGet { stream, .. }
            | Api::DirectGetSubject { stream, .. }
            | Api::StreamConfig { stream } => Some(stream),
            Api::Listing | Api::Other => None,
        }
    }

    fn form(&self) -> Form {
        match self {
            Api::MessageGet { direct: true, .. } | Api::DirectGetSubject { .. } => Form::Status,
            _ => Form::Json,
        }
    }
}

/// nats-server's response type for an API path: the known ones by name,
/// others from their first two tokens (`STREAM.DELETE` → `stream_delete`).
fn response_type(path: &[u8]) -> String {
    let tokens: Vec<String> = subject::tokens(path)
        .take(3)
        .map(|t| String::from_utf8_lossy(t).to_ascii_lowercase())
        .collect();
    let kind = match tokens
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["consumer", "create" | "durable", ..] => "consumer_create".to_string(),
        ["stream", "msg", "get"] => "stream_msg_get".to_string(),
        ["info", ..] => "account_info".to_string(),
        [a, b, ..] => format!("{a}_{b}"),
        [a] => a.to_string(),
        [] => "api".to_string(),
    };
    format!("io.nats.jetstream.api.v1.{kind}_response")
}

// === the rules ===

/// A rule's finding before the whole-stream question is asked.
enum Judged {
    Allow,
    /// Allowed if the user may read the whole stream; says what the request
    /// does.
    WholeStream(&'static str),
}

/// A refusal reason (without the `natsgate: ` prefix and the subject).
type Judgement = Result<Judged, String>;

/// Marker so that a malformed body reads as one kind of refusal.
struct Malformed;

impl From<Malformed> for String {
    fn from(_: Malformed) -> String {
        "request field of the wrong type".to_string()
    }
}

fn consumer_create(
    permissions: &Permissions,
    stream: &str,
    subject_filter: Option<&str>,
    request: &[(String, Json)],
) -> Judgement {
    let config = object_field(request, "config")?;
    let mut filters: Vec<&str> = subject_filter.into_iter().collect();
    let filter = string_field(config, "filter_subject")?;
    if !filter.is_empty() {
        filters.push(filter);
    }
    filters.extend(
        strings_field(config, "filter_subjects")?
            .into_iter()
            .filter(|f| !f.is_empty()),
    );
    for filter in &filters {
        if !permissions.may_read_all(filter.as_bytes()) {
            return Err(format!(
                "consumer filter {} on stream {} reads subjects the user may not subscribe to",
                go_quote(filter.as_bytes()),
                go_quote(stream.as_bytes())
            ));
        }
    }
    let deliver = string_field(config, "deliver_subject")?;
    let group = string_field(config, "deliver_group")?;
    if !deliver.is_empty() {
        let allowed = if subject::has_wildcard(deliver.as_bytes()) {
            permissions.may_read_all(deliver.as_bytes())
        } else {
            let group = (!group.is_empty()).then_some(group.as_bytes());
            permissions.subscribe_allowed(deliver.as_bytes(), group)
        };
        if !allowed {
            return Err(format!(
                "consumer deliver subject {} is one the user may not subscribe to",
                go_quote(deliver.as_bytes())
            ));
        }
    }
    if filters.is_empty() {
        return Ok(Judged::WholeStream("a consumer without a filter"));
    }
    Ok(Judged::Allow)
}

/// `STREAM.MSG.GET` and `DIRECT.GET` with a body: the subjects the server
/// reads by, found the way nats-server finds them.
fn message_get(
    permissions: &Permissions,
    stream: &str,
    direct: bool,
    request: &[(String, Json)],
) -> Judgement {
    let seq = uint_field(request, "seq")?;
    let by_time = field(request, "start_time").is_some_and(|v| !matches!(v, Json::Null));
    let last = string_field(request, "last_by_subj")?;
    let next = string_field(request, "next_by_subj")?;
    let multi = strings_field(request, "multi_last")?;
    let mut by: Vec<&str> = Vec::new();
    if direct && !multi.is_empty() {
        // getDirectMulti; nats-server refuses it with last or next, which
        // are checked anyway.
        by.extend(multi);
        by.extend([last, next].into_iter().filter(|s| !s.is_empty()));
    } else if !next.is_empty() {
        by.push(next);
    } else if seq > 0 || by_time {
        return Ok(Judged::WholeStream("a message get by sequence or time"));
    } else if !last.is_empty() {
        by.push(last);
    } else {
        // An empty request: nats-server refuses it.
        return Ok(Judged::Allow);
    }
    for subject in by {
        if !permissions.may_read_all(subject.as_bytes()) {
            return Err(format!(
                "message get of {} on stream {} reads a subject the user may not subscribe to",
                go_quote(subject.as_bytes()),
                go_quote(stream.as_bytes())
            ));
        }
    }
    Ok(Judged::Allow)
}

/// `STREAM.CREATE` / `STREAM.UPDATE`: the body is the stream config.
fn stream_config(permissions: &Permissions, stream: &str, config: &[(String, Json)]) -> Judgement {
    let mut subjects = strings_field(config, "subjects")?;
    let mirror = present(field(config, "mirror"));
    let sources = present(field(config, "sources"));
    if subjects.is_empty() && !mirror && !sources {
        // nats-server's default: the stream's name.
        subjects.push(stream);
    }
    for s in &subjects {
        if !permissions.may_read_all(s.as_bytes()) {
            return Err(format!(
                "stream subject {} is one the user may not subscribe to",
                go_quote(s.as_bytes())
            ));
        }
    }
    let republish = object_field(config, "republish")?;
    let republishes = present(field(config, "republish"));
    if republishes {
        let dest = string_field(republish, "dest")?;
        if !permissions.may_publish_all(&destination_pattern(dest)) {
            return Err(format!(
                "republish destination {} is one the user may not publish to",
                go_quote(dest.as_bytes())
            ));
        }
    }
    if mirror || sources {
        let transforms = present(field(config, "subject_transform"))
            || source_transforms(config, "mirror")?
            || source_transforms(config, "sources")?;
        if (republishes || transforms) && !permissions.may_read_all(b">") {
            return Err(
                "a stream that mirrors or sources others may not republish or transform subjects"
                    .to_string(),
            );
        }
    }
    Ok(Judged::Allow)
}

/// Whether the `mirror` object or any `sources` entry transforms subjects.
fn source_transforms(config: &[(String, Json)], key: &str) -> Result<bool, Malformed> {
    let entries: Vec<&Json> = match field(config, key) {
        None | Some(Json::Null) => return Ok(false),
        Some(Json::Array(items)) => items.iter().collect(),
        Some(other) => vec![other],
    };
    for entry in entries {
        let Json::Object(source) = entry else {
            if matches!(entry, Json::Null) {
                continue;
            }
            return Err(Malformed);
        };
        if present(field(source, "subject_transforms"))
            || !string_field(source, "subject_transform_dest")?.is_empty()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A subject-transform destination as a subscription pattern: a token that
/// is a mapping function (`{{wildcard(1)}}`) or a `$1` reference stands
/// for any one token.
fn destination_pattern(dest: &str) -> Vec<u8> {
    dest.split('.')
        .map(|t| {
            if t.contains("{{") || t.starts_with('$') {
                "*"
            } else {
                t
            }
        })
        .collect::<Vec<_>>()
        .join(".")
        .into_bytes()
}

// === Go's view of a JSON body ===

/// A JSON value whose objects keep every key, in order, and refuse keys
/// that Go's decoder would treat as the same field.
#[derive(Debug)]
enum Json {
    Null,
    Bool,
    /// `Some` for a non-negative integer that fits a `u64`.
    Number(Option<u64>),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Bool)
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(Some(n)))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(u64::try_from(n).ok()))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Number(None))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields: Vec<(String, Json)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            let folded = fold(&key);
            if fields.iter().any(|(k, _)| *k == folded) {
                return Err(de::Error::custom("keys equal under Go's case folding"));
            }
            fields.push((folded, value));
        }
        Ok(Json::Object(fields))
    }
}

/// A key as Go's `encoding/json` compares it: ASCII case folded, and the
/// two non-ASCII letters whose simple fold is an ASCII one (`ſ` → `s`,
/// Kelvin `K` → `k`). Other characters never equal an ASCII field name.
fn fold(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn field<'a>(object: &'a [(String, Json)], name: &str) -> Option<&'a Json> {
    object.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Whether a field is there and not empty (`null`, `[]`, `{}` and `""`
/// are Go's zero values for a pointer, a slice, a struct, a string).
fn present(value: Option<&Json>) -> bool {
    match value {
        None | Some(Json::Null) => false,
        Some(Json::Array(a)) => !a.is_empty(),
        Some(Json::Object(o)) => !o.is_empty(),
        Some(Json::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// A string field: absent or `null` is `""`.
fn string_field<'a>(object: &'a [(String, Json)], name: &str) -> Result<&'a str, Malformed> {
    match field(object, name) {
        None | Some(Json::Null) => Ok(""),
        Some(Json::String(s)) => Ok(s),
        Some(_) => Err(Malformed),
    }
}

/// A `[]string` field: absent or `null` is empty.
fn strings_field<'a>(object: &'a [(String, Json)], name: &str) -> Result<Vec<&'a str>, Malformed> {
    match field(object, name) {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| match item {
                Json::String(s) => Ok(s.as_str()),
                _ => Err(Malformed),
            })
            .collect(),
        Some(_) => Err(Malformed),
    }
}

/// A `uint64` field: absent or `null` is 0.
fn uint_field(object: &[(String, Json)], name: &str) -> Result<u64, Malformed> {
    match field(object, name) {
        None | Some(Json::Null) => Ok(0),
        Some(Json::Number(Some(n))) => Ok(*n),
        Some(_) => Err(Malformed),
    }
}

/// A struct field: absent or `null` is an empty object.
fn object_field<'a>(
    object: &'a [(String, Json)],
    name: &str,
) -> Result<&'a [(String, Json)], Malformed> {
    match field(object, name) {
        None | Some(Json::Null) => Ok(&[]),
        Some(Json::Object(fields)) => Ok(fields),
        Some(_) => Err(Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::{PermissionSpec, SubjectRules};

    /// Subscribe allow/deny lists (publish unrestricted unless given).
    fn perms(sub_allow: &[&str], sub_deny: &[&str], pub_allow: Option<&[&str]>) -> Permissions {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Permissions::compile(&PermissionSpec {
            publish: pub_allow.map(|a| SubjectRules {
                allow: Some(list(a)),
                deny: vec![],
            }),
            subscribe: Some(SubjectRules {
                allow: Some(list(sub_allow)),
                deny: list(sub_deny),
            }),
            responses: None,
        })
    }

    /// The user of the issue: reads `orders.public.>` and its inbox, and the
    /// public half of the KV bucket `cfg`.
    fn reader() -> Permissions {
        perms(
            &[
                "orders.public.>",
                "_INBOX.>",
                "$KV.cfg.public.>",
                "deliver.me",
            ],
            &["_INBOX.other"],
            Some(&["$JS.API.>", "republish.>"]),
        )
    }

    #[derive(Clone, Copy)]
    enum Want {
        Allow,
        Refuse(&'static str),
        Stream,
    }

    fn check(p: &Permissions, subject: &str, reply: Option<&str>, body: &str, want: Want) {
        let verdict = inspect(
            p,
            subject.as_bytes(),
            reply.map(str::as_bytes),
            body.as_bytes(),
        );
        match (want, &verdict) {
            (Want::Allow, Verdict::Allow) | (Want::Stream, Verdict::NeedStream(_)) => {}
            (Want::Refuse(text), Verdict::Refuse(r)) => {
                assert!(
                    r.description.starts_with("natsgate: ") && r.description.contains(text),
                    "{subject} {body}: {:?} lacks {text:?}",
                    r.description
                );
            }
            (_, other) => panic!("{subject} {reply:?} {body}: got {other:?}"),
        }
    }

    #[test]
    fn consumer_create_table() {
        let p = reader();
        let inbox = Some("_INBOX.abc.1");
        let rows: &[(&str, &str, Want)] = &[
            (
                "$JS.API.CONSUMER.CREATE.ORDERS",
                r#"{"stream_name":"ORDERS","config":{"filter_subject":"orders.public.>"}}"#,
                Want::Allow,
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORDERS",
                r#"{"stream_name":"ORDERS","config":{"filter_subject":"orders.secret.x"}}"#,
                Want::Refuse("consumer filter \"orders.secret.x\""),
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORDERS",
                r#"{"stream_name":"ORDERS","config":{"filter_subject":"orders.>"}}"#,
                Want::Refuse("orders.>"),
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORDERS.c1",
                r#"{"config":{"filter_subjects":["orders.public.a","orders.secret.b"]}}"#,
                Want::Refuse("orders.secret.b"),
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORDERS.c1",
                r#"{"config":{"filter_subjects":["orders.public.a","orders.public.b"]}}"#,
                Want::Allow,
            ),
            // The subject-appended filter counts like the body's.
            (
                "$JS.API.CONSUMER.CREATE.ORDERS.c1.orders.secret.>",
                r#"{"config":{"filter_subject":"orders.secret.>"}}"#,
                Want::Refuse("orders.secret.>"),
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORDERS.c1.orders.public.>",
                r#"{"config":{"filter_subject":"orders.public.>"}}"#,
                Want::Allow,
            ),
            // No filter: the whole stream decides.
            (
                "$JS.API.CONSUMER.CREATE.ORDERS",
                r#"{"stream_name":"ORDERS","config":{}}"#,
                Want::Stream,
            ),
            (
                "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.d1",
                r#"{"config":{"durable_name":"d1","filter_subject":""}}"#,
                Want::Stream,
            ),
            (
                "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.d1",
                r#"{"config":{"durable_name":"d1","filter_subject":"orders.secret.1"}}"#,
                Want::Refuse("orders.secret.1"),
            ),
            // Deliver subjects.
            (
                "$JS.API.CONSUMER.CREATE.ORDERS",
                r#"{"config":{"filter_subject":"orders.public.a","deliver_subject":"deliver.me"}}"#,
                Want::Allow,
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORDERS",
                r#"{"config":{"filter_subject":"orders.public.a","deliver_subject":"_INBOX.other"}}"#,
                Want::Refuse("deliver subject \"_INBOX.other\""),
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORDERS",
                r#"{"config":{"filter_subject":"orders.public.a","deliver_subject":"victim.inbox"}}"#,
                Want::Refuse("victim.inbox"),
            ),
            // Go reads keys case-insensitively, with Unicode folding.
            (
                "$JS.API.CONSUMER.CREATE.ORDERS",
                r#"{"Config":{"Filter_Subject":"orders.secret.x"}}"#,
                Want::Refuse("orders.secret.x"),
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORDERS",
                "{\"config\":{\"filter_subject\":\"orders.public.a\",\"deliver_\u{17F}ubject\":\"victim\"}}",
                Want::Refuse("victim"),
            ),
            // Ambiguous or malformed bodies are refused.
            (
                "$JS.API.CONSUMER.CREATE.ORDERS",
                r#"{"config":{"filter_subject":"orders.public.a","FILTER_SUBJECT":"orders.secret.a"}}"#,
                Want::Refuse("distinct keys"),
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORDERS",
                r#"{"config":{"filter_subject":"orders.public.a"}} {"config":{"deliver_subject":"victim"}}"#,
                Want::Refuse("one JSON object"),
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORDERS",
                r#"{"config":{"filter_subject":7}}"#,
                Want::Refuse("wrong type"),
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORDERS",
                r#"[1]"#,
                Want::Refuse("one JSON object"),
            ),
            // A JetStream domain is the same API.
            (
                "$JS.hub.API.CONSUMER.CREATE.ORDERS",
                r#"{"config":{"filter_subject":"orders.secret.x"}}"#,
                Want::Refuse("orders.secret.x"),
            ),
        ];
        for (subject, body, want) in rows {
            check(&p, subject, inbox, body, *want);
        }
        let big = format!(
            r#"{{"config":{{"description":"{}"}}}}"#,
            "x".repeat(MAX_BODY)
        );
        check(
            &p,
            "$JS.API.CONSUMER.CREATE.ORDERS",
            inbox,
            &big,
            Want::Refuse("larger than"),
        );
    }

    #[test]
    fn message_get_table() {
        let p = reader();
        let inbox = Some("_INBOX.abc.1");
        let rows: &[(&str, &str, Want)] = &[
            // nats-py's KV get without allow_direct.
            (
                "$JS.API.STREAM.MSG.GET.KV_cfg",
                r#"{"last_by_subj":"$KV.cfg.public.a"}"#,
                Want::Allow,
            ),
            (
                "$JS.API.STREAM.MSG.GET.KV_cfg",
                r#"{"last_by_subj":"$KV.cfg.secret.a"}"#,
                Want::Refuse("$KV.cfg.secret.a"),
            ),
            (
                "$JS.API.STREAM.MSG.GET.KV_cfg",
                r#"{"last_by_subj":"$KV.cfg.>"}"#,
                Want::Refuse("$KV.cfg.>"),
            ),
            (
                "$JS.API.STREAM.MSG.GET.KV_cfg",
                r#"{"seq":3}"#,
                Want::Stream,
            ),
            (
                "$JS.API.STREAM.MSG.GET.KV_cfg",
                r#"{"start_time":"2026-01-01T00:00:00Z"}"#,
                Want::Stream,
            ),
            // By sequence wins over last_by_subj in nats-server's order.
            (
                "$JS.API.STREAM.MSG.GET.KV_cfg",
                r#"{"seq":3,"last_by_subj":"$KV.cfg.public.a"}"#,
                Want::Stream,
            ),
            (
                "$JS.API.STREAM.MSG.GET.KV_cfg",
                r#"{"seq":3,"next_by_subj":"$KV.cfg.public.a"}"#,
                Want::Allow,
            ),
            (
                "$JS.API.STREAM.MSG.GET.KV_cfg",
                r#"{"seq":3,"next_by_subj":"$KV.cfg.secret.a"}"#,
                Want::Refuse("secret"),
            ),
            (
                "$JS.API.STREAM.MSG.GET.KV_cfg",
                r#"{"seq":-1}"#,
                Want::Refuse("wrong type"),
            ),
            ("$JS.API.STREAM.MSG.GET.KV_cfg", r#"{}"#, Want::Allow),
            // Direct get, with a body and subject-appended.
            (
                "$JS.API.DIRECT.GET.KV_cfg",
                r#"{"last_by_subj":"$KV.cfg.public.a"}"#,
                Want::Allow,
            ),
            (
                "$JS.API.DIRECT.GET.KV_cfg",
                r#"{"multi_last":["$KV.cfg.public.a","$KV.cfg.secret.b"]}"#,
                Want::Refuse("$KV.cfg.secret.b"),
            ),
            (
                "$JS.API.DIRECT.GET.KV_cfg",
                r#"{"multi_last":["$KV.cfg.public.>"]}"#,
                Want::Allow,
            ),
            ("$JS.API.DIRECT.GET.KV_cfg", r#"{"seq":1}"#, Want::Stream),
            (
                "$JS.API.DIRECT.GET.KV_cfg.$KV.cfg.public.a",
                "",
                Want::Allow,
            ),
            (
                "$JS.API.DIRECT.GET.KV_cfg.$KV.cfg.secret.a",
                "",
                Want::Refuse("direct get of \"$KV.cfg.secret.a\""),
            ),
        ];
        for (subject, body, want) in rows {
            check(&p, subject, inbox, body, *want);
        }
        // Direct get answers with a status header, the others with JSON.
        let Verdict::Refuse(direct) = inspect(
            &p,
            b"$JS.API.DIRECT.GET.KV_cfg.$KV.cfg.secret.a",
            inbox.map(str::as_bytes),
            b"",
        ) else {
            panic!("refused above");
        };
        assert!(direct.is_status());
        let header = String::from_utf8(direct.status_header()).unwrap();
        assert!(
            header.starts_with("NATS/1.0 403 natsgate: ") && header.ends_with("\r\n\r\n"),
            "{header}"
        );
        assert_eq!(
            header.matches("\r\n").count(),
            2,
            "one status line: {header}"
        );
        let Verdict::Refuse(json) = inspect(
            &p,
            b"$JS.API.STREAM.MSG.GET.KV_cfg",
            inbox.map(str::as_bytes),
            br#"{"last_by_subj":"$KV.cfg.secret.a"}"#,
        ) else {
            panic!("refused above");
        };
        assert!(!json.is_status());
        let answer: serde_json::Value = serde_json::from_slice(&json.json()).unwrap();
        assert_eq!(
            answer["type"],
            "io.nats.jetstream.api.v1.stream_msg_get_response"
        );
        assert_eq!(answer["error"]["code"], 403);
        assert_eq!(answer["error"]["err_code"], REFUSAL_ERR_CODE);
        assert!(
            answer["error"]["description"]
                .as_str()
                .unwrap()
                .contains("$KV.cfg.secret.a")
        );
    }

    #[test]
    fn reply_subjects_must_be_subscribable() {
        let p = reader();
        check(
            &p,
            "$JS.API.STREAM.INFO.ORDERS",
            Some("_INBOX.abc"),
            "",
            Want::Allow,
        );
        check(
            &p,
            "$JS.API.STREAM.INFO.ORDERS",
            Some("_INBOX.other"),
            "",
            Want::Refuse("reply subject \"_INBOX.other\""),
        );
        check(
            &p,
            "$JS.API.CONSUMER.MSG.NEXT.ORDERS.c1",
            Some("victim.inbox"),
            r#"{"batch":10}"#,
            Want::Refuse("victim.inbox"),
        );
        check(&p, "$JS.API.STREAM.INFO.ORDERS", None, "", Want::Allow);
        // Not the API: never looked at.
        check(
            &p,
            "orders.public.a",
            Some("victim.inbox"),
            "{",
            Want::Allow,
        );
        check(
            &p,
            "$JS.ACK.ORDERS.c1.1.1.1.1.1",
            Some("victim.inbox"),
            "",
            Want::Allow,
        );
        let Verdict::Refuse(r) = inspect(
            &p,
            b"$JS.API.STREAM.INFO.ORDERS",
            Some(b"_INBOX.other"),
            b"",
        ) else {
            panic!("refused above");
        };
        let answer: serde_json::Value = serde_json::from_slice(&r.json()).unwrap();
        assert_eq!(
            answer["type"],
            "io.nats.jetstream.api.v1.stream_info_response"
        );
    }

    #[test]
    fn stream_config_table() {
        let p = reader();
        let inbox = Some("_INBOX.abc.1");
        check(
            &p,
            "$JS.API.STREAM.CREATE.PUB",
            inbox,
            r#"{"name":"PUB","subjects":["orders.public.>"]}"#,
            Want::Allow,
        );
        check(
            &p,
            "$JS.API.STREAM.CREATE.ALL",
            inbox,
            r#"{"name":"ALL","subjects":["orders.>"]}"#,
            Want::Refuse("stream subject \"orders.>\""),
        );
        check(
            &p,
            "$JS.API.STREAM.UPDATE.PUB",
            inbox,
            r#"{"name":"PUB","subjects":["orders.public.>"],"republish":{"src":">","dest":"republish.{{wildcard(1)}}"}}"#,
            Want::Allow,
        );
        check(
            &p,
            "$JS.API.STREAM.UPDATE.PUB",
            inbox,
            r#"{"name":"PUB","subjects":["orders.public.>"],"republish":{"src":">","dest":"elsewhere.>"}}"#,
            Want::Refuse("republish destination"),
        );
        // The default subject is the stream's name.
        check(
            &p,
            "$JS.API.STREAM.CREATE.orders",
            inbox,
            r#"{"name":"orders"}"#,
            Want::Refuse("\"orders\""),
        );
        check(
            &p,
            "$JS.API.STREAM.CREATE.M",
            inbox,
            r#"{"name":"M","mirror":{"name":"ORDERS"}}"#,
            Want::Allow,
        );
        check(
            &p,
            "$JS.API.STREAM.CREATE.M",
            inbox,
            r#"{"name":"M","sources":[{"name":"ORDERS","subject_transforms":[{"src":"orders.secret.>","dest":"orders.public.>"}]}]}"#,
            Want::Refuse("mirrors or sources"),
        );
    }

    #[test]
    fn whole_stream_answers() {
        let p = reader();
        let Verdict::NeedStream(q) = inspect(
            &p,
            b"$JS.API.STREAM.MSG.GET.ORDERS",
            Some(b"_INBOX.a"),
            br#"{"seq":1}"#,
        ) else {
            panic!("a get by sequence needs the stream");
        };
        assert_eq!(q.stream, "ORDERS");
        assert_eq!(q.info_subject, "$JS.API.STREAM.INFO.ORDERS");
        let Verdict::NeedStream(q2) = inspect(&p, b"$JS.hub.API.CONSUMER.CREATE.O", None, b"{}")
        else {
            panic!("no filter needs the stream");
        };
        assert_eq!(
            q2.info_subject, "$JS.hub.API.STREAM.INFO.O",
            "the same domain"
        );
        let listed = |l: &[&str]| StreamSubjects::Listed(l.iter().map(|s| s.to_string()).collect());
        assert_eq!(answer_stream(&p, &q, &listed(&["orders.public.>"])), Ok(()));
        assert_eq!(answer_stream(&p, &q, &StreamSubjects::Missing), Ok(()));
        for refused in [
            listed(&["orders.public.>", "orders.secret.>"]),
            StreamSubjects::Unbounded,
            StreamSubjects::Unknown,
        ] {
            let Err(r) = answer_stream(&p, &q, &refused) else {
                panic!("{refused:?} refused");
            };
            assert!(
                r.description.contains("stream \"ORDERS\""),
                "{}",
                r.description
            );
        }
        // Someone who may read everything never needs to ask.
        let all = perms(&[], &[], None);
        assert_eq!(
            inspect(
                &all,
                b"$JS.API.STREAM.MSG.GET.ORDERS",
                Some(b"x"),
                br#"{"seq":1}"#
            ),
            Verdict::Allow
        );
    }

    #[test]
    fn stream_info_is_read_for_its_subjects() {
        let info = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","config":{"name":"O","subjects":["a.>","b"],"mirror":null,"sources":[]}}"#;
        assert_eq!(
            parse_stream_info(info),
            StreamSubjects::Listed(vec!["a.>".into(), "b".into()])
        );
        let mirror = br#"{"config":{"name":"M","mirror":{"name":"O"}}}"#;
        assert_eq!(parse_stream_info(mirror), StreamSubjects::Unbounded);
        let transform = br#"{"config":{"name":"T","subjects":["a"],"subject_transform":{"src":"a","dest":"b"}}}"#;
        assert_eq!(parse_stream_info(transform), StreamSubjects::Unbounded);
        let missing = br#"{"type":"x","error":{"code":404,"err_code":10059,"description":"stream not found"}}"#;
        assert_eq!(parse_stream_info(missing), StreamSubjects::Missing);
        let other = br#"{"error":{"code":503,"description":"no"}}"#;
        assert_eq!(parse_stream_info(other), StreamSubjects::Unknown);
        assert_eq!(parse_stream_info(b"not json"), StreamSubjects::Unknown);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let p = reader();
        let subjects: &[&[u8]] = &[
            b"$JS.API.",
            b"$JS.API",
            b"$JS.",
            b"$JS.x.API.",
            b"$JS.API.CONSUMER.CREATE.",
            b"$JS.API.DIRECT.GET.s.",
            b"$JS.API.DIRECT.GET",
            b"$JS.\xff.API.STREAM.MSG.GET.\xfe",
        ];
        let bodies: &[&[u8]] = &[
            b"",
            b"{",
            b"\xff",
            b"null",
            b"{\"config\":[]}",
            b"{\"seq\":1e99}",
            &[b'['; 300],
        ];
        for s in subjects {
            for b in bodies {
                let _ = inspect(&p, s, Some(b"_INBOX.a"), b);
            }
        }
    }
}
