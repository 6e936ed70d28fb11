//! In-process entitlement checks: a 100,000-user snapshot answering a granted feature, a
//! lacking feature, a limit and a permission (half the users given the admin role), for users
//! named by id and userName. Run with `cargo bench -p seatkeeper --bench check`.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use licensing::entitlements::Question;
use licensing::model::{Key, Plan, Product, Role};
use seatkeeper::testing::Snapshot;
use seatkeeper::testing::{SnapLicense, SnapRole, SnapUser};

const USERS: usize = 100_000;

fn key(s: &str) -> Key {
    Key::new("key", s).expect("a valid key")
}

fn snapshot() -> Snapshot {
    let plan = |k: &str, rank, features: &[&str], projects| Plan {
        key: key(k),
        rank,
        features: features.iter().map(|f| key(f)).collect(),
        limits: [(key("projects"), projects)].into_iter().collect(),
        seated: true,
    };
    let product = Product::new(
        key("workspace"),
        "Workspace".into(),
        vec![
            plan("free", 0, &["docs.read"], 3),
            plan("pro", 1, &["docs.read", "docs.write", "export"], 100),
        ],
    )
    .and_then(|p| {
        p.with_roles(vec![Role {
            key: key("admin"),
            permissions: [key("billing.manage"), key("users.invite")].into(),
            requires_license: true,
        }])
    })
    .expect("a valid product");
    let mut snap = Snapshot::new(vec![product], Vec::new());
    let users: Vec<SnapUser> = (0..USERS)
        .map(|i| SnapUser {
            id: format!("0190aaaa-0000-7000-8000-{i:012}"),
            user_name: format!("user{i}@example.com"),
            external_id: Some(format!("emp-{i}")),
            active: true,
        })
        .collect();
    let licenses: Vec<SnapLicense> = users
        .iter()
        .enumerate()
        .map(|(i, u)| SnapLicense {
            user_id: u.id.clone(),
            product: "workspace".into(),
            plan: if i % 2 == 0 { "pro" } else { "free" }.into(),
            state: "active".into(),
        })
        .collect();
    let roles: Vec<SnapRole> = users
        .iter()
        .step_by(2)
        .map(|u| SnapRole {
            user_id: u.id.clone(),
            product: "workspace".into(),
            role: "admin".into(),
            source: "it-admins".into(),
        })
        .collect();
    snap.put_users(&[], users, &licenses, &roles);
    snap
}

fn bench(c: &mut Criterion) {
    let snap = snapshot();
    let now = time::macros::datetime!(2026-11-25 12:00 UTC);
    let ids: Vec<String> = (0..1024)
        .map(|n| format!("0190aaaa-0000-7000-8000-{:012}", n * 97))
        .collect();
    let names: Vec<String> = (0..1024)
        .map(|n| format!("user{}@example.com", n * 97))
        .collect();
    let mut j = 0usize;
    c.bench_function("check feature (granted or lacking), by id", |b| {
        b.iter(|| {
            j = (j + 1) & 1023;
            black_box(snap.answer(black_box(&ids[j]), Question::Feature("export"), now))
        })
    });
    c.bench_function("check permission (granted or lacking), by id", |b| {
        b.iter(|| {
            j = (j + 1) & 1023;
            black_box(snap.permit(black_box(&ids[j]), "billing.manage", now))
        })
    });
    c.bench_function("check limit, by userName", |b| {
        b.iter(|| {
            j = (j + 1) & 1023;
            black_box(snap.answer(black_box(&names[j]), Question::Limit("projects"), now))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
