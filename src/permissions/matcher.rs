//! Compiled permission pattern sets and the bounded per-connection decision
//! cache.
//!
//! Owns nats-server's matching rule (spec 4.2, `server/sublist.go:Match` and
//! `matchLevel`): the *checked* subject is a sequence of literal tokens and
//! only the *stored* entries act as patterns. A stored `*` matches any one
//! token, including a literal `*` or `>` token of the checked subject; a
//! stored `>` matches one or more remaining tokens; a checked subject with an
//! empty token matches nothing. Does not own decisions (see `super`).
//!
//! Entries live in a token trie, like the server's sublist, so a match visits
//! each trie node at most once: the cost is bounded by the size of the
//! pattern set, never exponential in the subject, and usually proportional
//! to the number of tokens.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use crate::protocol::subject;

/// A compiled set of permission entries, each a subject pattern with an
/// optional queue group (queue entries only come from subscribe lists).
#[derive(Debug, Default)]
pub struct Matcher {
    root: Level,
    entries: usize,
}

/// What a subject matched in a [`Matcher`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Matched {
    /// At least one entry without a queue matched (nats-server `psubs`).
    pub plain: bool,
    /// At least one entry with a queue matched (nats-server `qsubs`).
    pub queue_entries: bool,
    /// At least one matching queue entry's queue matches the queried queue
    /// (`queueMatches`). Always false when no queue was queried.
    pub queue_matched: bool,
}

impl Matcher {
    /// An empty set: matches nothing.
    pub fn new() -> Matcher {
        Matcher::default()
    }

    /// Adds an entry. Returns false, adding nothing, when `pattern` is not a
    /// valid subject (`Sublist.Insert` rules, see
    /// [`subject::is_valid_subject`]). Queue names are not validated, as in
    /// nats-server.
    pub fn insert(&mut self, pattern: &[u8], queue: Option<&[u8]>) -> bool {
        if !subject::is_valid_subject(pattern) {
            return false;
        }
        let mut level = &mut self.root;
        let mut tokens = subject::tokens(pattern).peekable();
        let node = loop {
            let token = tokens
                .next()
                .expect("a valid subject has at least one token");
            let node = match token {
                b"*" => level.partial.get_or_insert_with(Box::default),
                b">" => level.full.get_or_insert_with(Box::default),
                literal => level.literals.entry(literal.into()).or_default(),
            };
            if tokens.peek().is_none() {
                break node;
            }
            level = node.next.get_or_insert_with(Box::default);
        };
        match queue {
            None => node.plain = true,
            Some(queue) => {
                if !node.queues.iter().any(|q| **q == *queue) {
                    node.queues.push(queue.into());
                }
            }
        }
        self.entries += 1;
        true
    }

    /// Number of entries inserted.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether no entry was inserted.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Whether any entry without a queue matches `subject`. Stops at the
    /// first match.
    pub fn matches(&self, subject: &[u8]) -> bool {
        if !is_matchable(subject) {
            return false;
        }
        let mut plain = false;
        match_level(&self.root, subject, &mut |node| {
            plain |= node.plain;
            plain
        });
        plain
    }

    /// Full match: plain entries, queue entries, and whether `queue` matches
    /// one of the matching queue entries (spec 4.4 `queueMatches`: equal, or
    /// the entry's queue has a wildcard token and `queue` is a subset of it).
    pub fn match_with_queue(&self, subject: &[u8], queue: Option<&[u8]>) -> Matched {
        let mut matched = Matched::default();
        if !is_matchable(subject) {
            return matched;
        }
        match_level(&self.root, subject, &mut |node| {
            matched.plain |= node.plain;
            if !node.queues.is_empty() {
                matched.queue_entries = true;
                if let Some(queue) = queue
                    && !matched.queue_matched
                {
                    matched.queue_matched = node.queues.iter().any(|q| queue_matches(queue, q));
                }
            }
            false
        });
        matched
    }

    /// Whether every literal subject that the subscription-style `pattern`
    /// matches (`*` one token, `>` one or more) is matched by an entry
    /// without a queue. Exact set inclusion, unlike [`Matcher::matches`]
    /// (which reads the checked subject's tokens literally, spec 4.2): a
    /// union counts, so `a.*` and `a.*.>` together cover `a.>`. False for
    /// an invalid `pattern`.
    ///
    /// Cost: each trie node is visited at most once per pattern token.
    pub fn covers(&self, pattern: &[u8]) -> bool {
        if !subject::is_valid_subject(pattern) {
            return false;
        }
        let tokens: Vec<&[u8]> = subject::tokens(pattern).collect();
        covers_at(&[&self.root], &tokens)
    }

    /// Whether some literal subject matches both `pattern` and an entry
    /// without a queue (true overlap, as for [`Matcher::covers`]). True for
    /// an invalid `pattern`, so that a caller asking "no overlap?" refuses.
    pub fn overlaps(&self, pattern: &[u8]) -> bool {
        if !subject::is_valid_subject(pattern) {
            return true;
        }
        let tokens: Vec<&[u8]> = subject::tokens(pattern).collect();
        overlaps_at(&self.root, &tokens)
    }
}

/// nats-server `queueMatches` for one entry: the names are equal, or the
/// entry's queue contains a wildcard token and `queue` is a subset of it.
pub fn queue_matches(queue: &[u8], entry_queue: &[u8]) -> bool {
    queue == entry_queue
        || (subject::has_wildcard(entry_queue) && subject::is_subset(queue, entry_queue))
}

// === BoundedCache ===

/// A per-connection decision cache keyed by subject bytes, holding at most
/// `capacity` entries. Lookups never allocate; an insert allocates the key.
///
/// Eviction: when an insert finds the cache full, about half of the entries
/// are dropped in one pass (every other entry in hash order, so effectively
/// random, like nats-server's random `prunePubPermsCache`). That keeps the
/// amortized cost O(1) and, unlike clearing, keeps a hot working set half
/// warm.
#[derive(Debug)]
pub struct BoundedCache<V> {
    map: HashMap<Box<[u8]>, V, RandomState>,
    capacity: usize,
}

impl<V: Copy> BoundedCache<V> {
    pub fn new(capacity: usize) -> BoundedCache<V> {
        BoundedCache {
            map: HashMap::with_hasher(RandomState::default()),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<V> {
        self.map.get(key).copied()
    }

    pub fn insert(&mut self, key: &[u8], value: V) {
        if self.map.len() >= self.capacity {
            let mut keep = false;
            self.map.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
        self.map.insert(key.into(), value);
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

// === trie ===

#[derive(Debug, Default)]
struct Level {
    literals: HashMap<Box<[u8]>, Node, RandomState>,
    /// The `*` child.
    partial: Option<Box<Node>>,
    /// The `>` child.
    full: Option<Box<Node>>,
}

#[derive(Debug, Default)]
struct Node {
    next: Option<Box<Level>>,
    /// An entry without a queue ends here.
    plain: bool,
    /// Queues of the entries with a queue that end here.
    queues: Vec<Box<[u8]>>,
}

/// [`Matcher::covers`] at one depth: `levels` are the trie levels the
/// pattern's tokens so far led to (each a distinct node, so the set never
/// grows beyond the trie), `pattern` the tokens left (at least one).
fn covers_at(levels: &[&Level], pattern: &[&[u8]]) -> bool {
    let Some((&token, rest)) = pattern.split_first() else {
        return false;
    };
    // A `>` entry here takes whatever one or more tokens are left.
    if levels
        .iter()
        .any(|l| l.full.as_ref().is_some_and(|n| n.plain))
    {
        return true;
    }
    // A token the entries do not name (there are always such tokens) is
    // matched only by `*` entries: so a pattern `*` or `>` needs them.
    let partials = levels.iter().filter_map(|l| l.partial.as_deref());
    if token == b">" {
        // One token (a `*` entry ending here) and more (`*` entries going
        // on, covering `>` below).
        let partials: Vec<&Node> = partials.collect();
        if !partials.iter().any(|n| n.plain) {
            return false;
        }
        let next: Vec<&Level> = partials.iter().filter_map(|n| n.next.as_deref()).collect();
        return covers_at(&next, pattern);
    }
    let mut nodes: Vec<&Node> = partials.collect();
    if token != b"*" {
        nodes.extend(levels.iter().filter_map(|l| l.literals.get(token)));
    }
    if rest.is_empty() {
        return nodes.iter().any(|n| n.plain);
    }
    let next: Vec<&Level> = nodes.iter().filter_map(|n| n.next.as_deref()).collect();
    !next.is_empty() && covers_at(&next, rest)
}

/// [`Matcher::overlaps`] below `level`; `pattern` has at least one token.
fn overlaps_at(level: &Level, pattern: &[&[u8]]) -> bool {
    let Some((&token, rest)) = pattern.split_first() else {
        return false;
    };
    if level.full.as_ref().is_some_and(|n| n.plain) {
        return true;
    }
    if token == b">" {
        return has_plain_entry(level);
    }
    let literals: Box<dyn Iterator<Item = &Node>> = if token == b"*" {
        Box::new(level.literals.values())
    } else {
        Box::new(level.literals.get(token).into_iter())
    };
    literals
        .chain(level.partial.as_deref())
        .any(|node| match rest {
            [] => node.plain,
            _ => node
                .next
                .as_deref()
                .is_some_and(|next| overlaps_at(next, rest)),
        })
}

/// Whether any entry without a queue lies at or below `level`.
fn has_plain_entry(level: &Level) -> bool {
    level
        .literals
        .values()
        .chain(level.partial.as_deref())
        .chain(level.full.as_deref())
        .any(|node| node.plain || node.next.as_deref().is_some_and(has_plain_entry))
}

/// The sublist refuses to match subjects with an empty token (including the
/// empty subject and a trailing `.`).
fn is_matchable(subject: &[u8]) -> bool {
    subject::tokens(subject).all(|token| !token.is_empty())
}

/// Visits every node whose pattern matches `rest` (one or more non-empty
/// tokens). `visit` returns true to stop early; the return value says
/// whether it did.
fn match_level<'a, F>(mut level: &'a Level, mut rest: &[u8], visit: &mut F) -> bool
where
    F: FnMut(&'a Node) -> bool,
{
    loop {
        let (token, remaining) = match rest.iter().position(|b| *b == b'.') {
            Some(dot) => (&rest[..dot], Some(&rest[dot + 1..])),
            None => (rest, None),
        };
        if let Some(full) = &level.full
            && visit(full)
        {
            return true;
        }
        if let Some(partial) = &level.partial {
            let stopped = match remaining {
                None => visit(partial),
                Some(remaining) => match &partial.next {
                    Some(next) => match_level(next, remaining, visit),
                    None => false,
                },
            };
            if stopped {
                return true;
            }
        }
        let Some(node) = level.literals.get(token) else {
            return false;
        };
        match remaining {
            None => return visit(node),
            Some(remaining) => match &node.next {
                Some(next) => {
                    level = next;
                    rest = remaining;
                }
                None => return false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn matcher(entries: &[&str]) -> Matcher {
        let mut m = Matcher::new();
        for e in entries {
            let mut parts = e.split_whitespace();
            let subject = parts.next().unwrap();
            assert!(
                m.insert(subject.as_bytes(), parts.next().map(str::as_bytes)),
                "{e}"
            );
        }
        m
    }

    /// Every row of the spec 4.2 table, as a pure matching question.
    #[test]
    fn spec_table_4_2() {
        let rows: &[(&str, &str, bool)] = &[
            ("foo.*", "foo.>", true),
            ("c.*", "c.>", true),
            ("a.*.c", "a.>", false),
            ("a.*.c", "a.*.>", false),
            ("a.*.c", "a.b.>", false),
            ("b.>", "b.*", true),
            ("b.>", "b.>", true),
            ("foo.bar", "foo.*", false),
            ("a.*", "a.*", true),
            ("a.*", "a.>", true),
            ("c", "c.>", false),
            ("secret.>", "secret.*", true),
            ("secret.>", "secret.>", true),
            ("secret.>", ">", false),
            ("secret.>", "*.x", false),
            ("foo.*", "foo.>", true),
            ("*", ">", true),
            ("foo.*", "foo.*", true),
            ("foo.*", "foo.a.b", false),
        ];
        for &(entry, checked, expected) in rows {
            assert_eq!(
                matcher(&[entry]).matches(checked.as_bytes()),
                expected,
                "{entry} vs {checked}"
            );
        }
    }

    #[test]
    fn empty_tokens_never_match() {
        let m = matcher(&[">", "*", "foo.>", "*.*"]);
        for s in ["", ".", "foo.", ".foo", "foo..bar"] {
            assert!(!m.matches(s.as_bytes()), "{s:?}");
        }
        assert!(m.matches(b"foo"));
    }

    #[test]
    fn literal_tokens_with_wildcard_bytes() {
        let m = matcher(&["foo.a*"]);
        assert!(m.matches(b"foo.a*"));
        assert!(!m.matches(b"foo.ab"));
        // A stored `*` matches a literal token containing `*`.
        assert!(matcher(&["foo.*"]).matches(b"foo.a*"));
    }

    #[test]
    fn invalid_entries_are_refused() {
        let mut m = Matcher::new();
        assert!(!m.insert(b"foo..bar", None));
        assert!(!m.insert(b"a.>.b", None));
        assert!(!m.insert(b"", None));
        assert!(m.is_empty());
        assert!(m.insert(b"ok", None));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn queue_entries() {
        let m = matcher(&["foo", "foo v1", "bar.* g.*"]);
        let r = m.match_with_queue(b"foo", Some(b"v1"));
        assert_eq!(
            r,
            Matched {
                plain: true,
                queue_entries: true,
                queue_matched: true
            }
        );
        let r = m.match_with_queue(b"foo", Some(b"v2"));
        assert_eq!(
            r,
            Matched {
                plain: true,
                queue_entries: true,
                queue_matched: false
            }
        );
        let r = m.match_with_queue(b"bar.x", Some(b"g.1"));
        assert_eq!(
            r,
            Matched {
                plain: false,
                queue_entries: true,
                queue_matched: true
            }
        );
        assert!(m.match_with_queue(b"bar.x", Some(b"g.*")).queue_matched);
        assert!(!m.match_with_queue(b"bar.x", Some(b"g.>")).queue_matched);
        assert!(!m.match_with_queue(b"bar.x", Some(b"g")).queue_matched);
        assert!(!m.matches(b"bar.x"));
        let r = m.match_with_queue(b"bar.x", None);
        assert_eq!(
            r,
            Matched {
                plain: false,
                queue_entries: true,
                queue_matched: false
            }
        );
    }

    #[test]
    fn queue_names_match_literally_first() {
        assert!(queue_matches(b"v1.*", b"v1.*"));
        assert!(queue_matches(b"v1.x", b"v1.*"));
        assert!(!queue_matches(b"v1.x", b"v1.y"));
        // Entry queue without a wildcard token: exact only.
        assert!(!queue_matches(b"v1.x", b"v1.x*"));
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        // 2^20 paths would be explored by a naive backtracking matcher.
        let pattern = vec!["*"; 20].join(".");
        let mut entries = vec![pattern.clone()];
        for i in 0..20 {
            let mut tokens = vec!["*"; 20];
            tokens[i] = "x";
            entries.push(tokens.join("."));
        }
        let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
        let m = matcher(&refs);
        let subject = vec!["x"; 21].join(".");
        let start = std::time::Instant::now();
        for _ in 0..1000 {
            assert!(!m.matches(subject.as_bytes()));
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        assert!(m.matches(vec!["x"; 20].join(".").as_bytes()));
    }

    #[test]
    fn bounded_cache_never_exceeds_capacity() {
        let mut cache = BoundedCache::new(8);
        for i in 0..100u32 {
            cache.insert(&i.to_be_bytes(), i);
            assert!(cache.len() <= 8);
            assert_eq!(cache.get(&i.to_be_bytes()), Some(i));
        }
        cache.clear();
        assert!(cache.is_empty());
    }

    /// The obviously-correct reference: split both, walk the pattern.
    fn reference_match(pattern: &str, subject: &str) -> bool {
        let s: Vec<&str> = subject.split('.').collect();
        if s.iter().any(|t| t.is_empty()) {
            return false;
        }
        let p: Vec<&str> = pattern.split('.').collect();
        for (i, pt) in p.iter().enumerate() {
            match *pt {
                ">" => return s.len() > i,
                "*" => {
                    if i >= s.len() {
                        return false;
                    }
                }
                literal => {
                    if i >= s.len() || s[i] != literal {
                        return false;
                    }
                }
            }
        }
        p.len() == s.len()
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("*".to_string()),
            Just(">".to_string()),
            Just("a*".to_string()),
            Just(String::new()),
        ]
    }

    fn subject_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(token(), 1..5).prop_map(|t| t.join("."))
    }

    #[test]
    fn covers_is_set_inclusion_and_overlaps_is_intersection() {
        // (entries, pattern, covered, overlapping)
        let rows: &[(&[&str], &str, bool, bool)] = &[
            (&["a.>"], "a.b", true, true),
            (&["a.>"], "a.>", true, true),
            (&["a.>"], "a", false, false),
            (&["a.>"], ">", false, true),
            (&["a.*"], "a.>", false, true),
            (&["a.*", "a.*.>"], "a.>", true, true),
            (&["a.*", "a.b.>"], "a.>", false, true),
            (&["a.b"], "a.*", false, true),
            (&["a.b", "a.*"], "a.*", true, true),
            (&["*.b"], "a.b", true, true),
            (&["*.b"], "a.c", false, false),
            (&["$KV.cfg.public.>"], "$KV.cfg.public.x", true, true),
            (&["$KV.cfg.public.>"], "$KV.cfg.>", false, true),
            (&["$KV.cfg.public.>"], "$KV.cfg.secret.x", false, false),
            (&["$KV.cfg.public.>"], "$KV.cfg.*.x", false, true),
            (&[">"], "anything.at.all", true, true),
            (&[], "a", false, false),
            // Queue entries do not count (a plain SUB needs a plain entry).
            (&["a.> q"], "a.b", false, false),
            // The checked pattern's `*` is a wildcard here (spec 4.2 reads
            // it literally; a consumer filter means it).
            (&["foo.*"], "foo.>", false, true),
        ];
        for (entries, pattern, covered, overlapping) in rows {
            let m = matcher(entries);
            assert_eq!(
                m.covers(pattern.as_bytes()),
                *covered,
                "{entries:?} covers {pattern}"
            );
            assert_eq!(
                m.overlaps(pattern.as_bytes()),
                *overlapping,
                "{entries:?} overlaps {pattern}"
            );
        }
        let m = matcher(&["a.>"]);
        assert!(!m.covers(b"a..b"), "an invalid pattern is never covered");
        assert!(m.overlaps(b"a..b"), "and always overlaps");
    }

    /// Every literal subject over `a`, `b` and `z` (a token no entry names,
    /// standing for all such tokens) of 1 to 6 tokens.
    fn literal_subjects() -> Vec<String> {
        let mut all = Vec::new();
        let mut level = vec![String::new()];
        for _ in 0..6 {
            let mut next = Vec::new();
            for prefix in &level {
                for t in ["a", "b", "z"] {
                    let s = if prefix.is_empty() {
                        t.to_string()
                    } else {
                        format!("{prefix}.{t}")
                    };
                    all.push(s.clone());
                    next.push(s);
                }
            }
            level = next;
        }
        all
    }

    fn set_token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("*".to_string()),
            Just(">".to_string()),
        ]
    }

    fn set_pattern() -> impl Strategy<Value = String> {
        proptest::collection::vec(set_token(), 1..5).prop_map(|t| t.join("."))
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_reference(
            patterns in proptest::collection::vec(subject_strategy(), 0..6),
            subject in subject_strategy(),
        ) {
            let mut m = Matcher::new();
            let mut valid = Vec::new();
            for p in &patterns {
                if m.insert(p.as_bytes(), None) {
                    valid.push(p.clone());
                }
            }
            let expected = valid.iter().any(|p| reference_match(p, &subject));
            prop_assert_eq!(m.matches(subject.as_bytes()), expected);
            prop_assert_eq!(m.match_with_queue(subject.as_bytes(), None).plain, expected);
        }

        #[test]
        fn covers_and_overlaps_agree_with_enumeration(
            entries in proptest::collection::vec(set_pattern(), 0..5),
            pattern in set_pattern(),
        ) {
            let mut m = Matcher::new();
            let mut valid = Vec::new();
            for e in &entries {
                if m.insert(e.as_bytes(), None) {
                    valid.push(e.clone());
                }
            }
            prop_assume!(subject::is_valid_subject(pattern.as_bytes()));
            let mut covered = true;
            let mut overlapping = false;
            for s in literal_subjects() {
                if !reference_match(&pattern, &s) {
                    continue;
                }
                let allowed = valid.iter().any(|e| reference_match(e, &s));
                covered &= allowed;
                overlapping |= allowed;
            }
            prop_assert_eq!(m.covers(pattern.as_bytes()), covered);
            prop_assert_eq!(m.overlaps(pattern.as_bytes()), overlapping);
        }
    }
}
