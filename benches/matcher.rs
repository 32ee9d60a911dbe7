//! Cost of the permission checks natsgate runs per frame
//! (`natsgate::permissions`): the publish check with its per-connection
//! cache (hits, misses, denials, tracked replies), the subscribe check, the
//! delivery filter, and the bare pattern matcher.
//!
//! `cargo bench --bench matcher`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use natsgate::permissions::{
    Authorizer, Matcher, PermissionSpec, Permissions, ResponseSpec, SubjectRules,
};

fn list(entries: &[&str]) -> Vec<String> {
    entries.iter().map(|e| (*e).to_owned()).collect()
}

/// A typical service user: a few allow patterns, a deny list overlapping
/// them, and `allow_responses`.
fn spec() -> PermissionSpec {
    PermissionSpec {
        publish: Some(SubjectRules {
            allow: Some(list(&[
                "orders.>",
                "metrics.*.up",
                "audit.*.*.event",
                "svc.a.>",
            ])),
            deny: list(&["orders.secret", "orders.*.admin", "svc.a.internal.>"]),
        }),
        subscribe: Some(SubjectRules {
            allow: Some(list(&["orders.>", "_INBOX.>", "svc.a.>", "jobs.* workers"])),
            deny: list(&["orders.secret", "orders.*.admin"]),
        }),
        responses: Some(ResponseSpec {
            max: 1,
            ttl_nanos: 60_000_000_000,
        }),
    }
}

fn authorizer() -> Authorizer {
    Authorizer::new(Arc::new(Permissions::compile(&spec())), false)
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("check_publish");
    let now = Instant::now();

    let mut a = authorizer();
    group.bench_function("allowed, cached", |b| {
        b.iter(|| a.check_publish(black_box(b"orders.eu.new"), None, now));
    });

    let mut a = authorizer();
    group.bench_function("denied, cached", |b| {
        b.iter(|| a.check_publish(black_box(b"orders.secret"), None, now));
    });

    // More distinct subjects than the decision cache holds: every check
    // walks the matchers.
    let subjects: Vec<Vec<u8>> = (0..8192)
        .map(|i| format!("orders.region{}.item{i}", i % 17).into_bytes())
        .collect();
    let mut a = authorizer();
    let mut i = 0;
    group.bench_function("allowed, cache miss", |b| {
        b.iter(|| {
            i = (i + 1) % subjects.len();
            a.check_publish(black_box(&subjects[i]), Some(b"_INBOX.x.1"), now)
        });
    });

    // A reply outside the allow list, permitted because a request carrying
    // it was delivered (allow_responses): record, then use.
    let replies: Vec<Vec<u8>> = (0..4096)
        .map(|i| format!("_INBOX.Hk3bD9xQ2.{i}").into_bytes())
        .collect();
    let mut a = authorizer();
    assert!(a.check_subscribe(b"svc.a.req", None));
    let mut i = 0;
    group.bench_function("tracked reply (deliver + publish)", |b| {
        b.iter(|| {
            i = (i + 1) % replies.len();
            let reply = &replies[i];
            a.filter_delivery(b"svc.a.req", None, Some(reply), now);
            a.check_publish(black_box(reply), None, now)
        });
    });
    group.finish();
}

fn subscribe_and_deliver(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscribe_and_deliver");
    let mut a = authorizer();
    group.bench_function("check_subscribe wildcard", |b| {
        b.iter(|| a.check_subscribe(black_box(b"orders.*.new"), None));
    });
    let mut a = authorizer();
    group.bench_function("check_subscribe queue", |b| {
        b.iter(|| a.check_subscribe(black_box(b"jobs.resize"), Some(b"workers")));
    });

    let now = Instant::now();
    let mut a = authorizer();
    assert!(a.check_subscribe(b"orders.>", None));
    assert!(a.delivery_filter_armed());
    group.bench_function("filter_delivery armed, no reply", |b| {
        b.iter(|| a.filter_delivery(black_box(b"orders.eu.new"), None, None, now));
    });
    let mut plain = authorizer();
    assert!(plain.check_subscribe(b"orders.eu.new", None));
    group.bench_function("filter_delivery not armed, no reply", |b| {
        b.iter(|| plain.filter_delivery(black_box(b"orders.eu.new"), None, None, now));
    });
    group.finish();
}

fn matcher(c: &mut Criterion) {
    let mut group = c.benchmark_group("matcher");
    let mut m = Matcher::new();
    for i in 0..100 {
        m.insert(format!("svc{i}.*.events.>").as_bytes(), None);
        m.insert(format!("svc{i}.status").as_bytes(), None);
    }
    m.insert(b"orders.>", None);
    group.bench_function("200 patterns, hit", |b| {
        b.iter(|| m.matches(black_box(b"svc57.eu.events.created.v2")));
    });
    group.bench_function("200 patterns, miss", |b| {
        b.iter(|| m.matches(black_box(b"billing.eu.events.created")));
    });
    let p = Permissions::compile(&spec());
    group.bench_function("publish_allowed uncached", |b| {
        b.iter(|| p.publish_allowed(black_box(b"orders.eu.new")));
    });
    group.bench_function("compile user permissions", |b| {
        let s = spec();
        b.iter(|| Permissions::compile(black_box(&s)));
    });
    group.finish();
}

criterion_group!(benches, publish, subscribe_and_deliver, matcher);
criterion_main!(benches);
