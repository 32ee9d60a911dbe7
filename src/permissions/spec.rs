//! Plain, uncompiled permission data, as written in the config file or carried
//! in a user JWT. This is the hand-over point between the producers
//! (`config`, `auth::jwt`) and the compiler (`permissions::Permissions::compile`).
//! No logic lives here.

/// One user's permissions before compilation: nats-server's
/// `permissions { publish, subscribe, allow_responses }` block or a user JWT's
/// `pub` / `sub` / `resp`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PermissionSpec {
    /// `None`: no publish section at all (everything may be published).
    pub publish: Option<SubjectRules>,
    /// `None`: no subscribe section at all (everything may be subscribed).
    /// Entries may be `"<subject> <queue>"`.
    pub subscribe: Option<SubjectRules>,
    /// `allow_responses` / JWT `resp`.
    pub responses: Option<ResponseSpec>,
}

/// An allow list and a deny list of subject patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubjectRules {
    /// `None`: no allow list (everything not denied is allowed).
    /// `Some(vec![])`: an explicit, empty allow list (nothing is allowed).
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
}

/// The response permission, with nats-server's raw values: the defaults are
/// applied when compiling, exactly as nats-server applies them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResponseSpec {
    /// Replies allowed per received request. 0 means the default (1);
    /// negative means unlimited.
    pub max: i64,
    /// How long a reply stays allowed, in nanoseconds. 0 means the default
    /// (2 minutes); negative means no expiry.
    pub ttl_nanos: i64,
}

impl ResponseSpec {
    /// `allow_responses = true`: nats-server's defaults (1 reply, 2 minutes).
    pub const DEFAULT: ResponseSpec = ResponseSpec {
        max: 0,
        ttl_nanos: 0,
    };
}
