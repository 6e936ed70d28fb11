//! The store contract: one suite, run against SQLite and PostgreSQL.

mod common;

use common::Backend;
use scim::sql::SqlWhere;
use seatkeeper::store::directory::{Kind, Order, Page};
use seatkeeper::store::{NewAudit, StoreError, StoredResource};
use serde_json::json;

fn res(id: &str, doc: serde_json::Value) -> StoredResource {
    StoredResource {
        id: id.into(),
        doc,
        created: "2026-01-01T00:00:00.000000Z".into(),
        last_modified: "2026-01-01T00:00:00.000000Z".into(),
        version: 1,
    }
}

fn all() -> SqlWhere {
    SqlWhere {
        sql: "1=1".into(),
        params: vec![],
        exact: true,
    }
}

async fn tenant(store: &seatkeeper::store::Store, id: &str) {
    store
        .create_tenant(id, id, "2026-01-01T00:00:00.000000Z")
        .await
        .unwrap();
}

fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

async fn resources_round_trip_and_uniqueness(b: Backend) {
    let db = common::store(b).await;
    let s = &db.store;
    let (t1, t2) = (unique_id("t1"), unique_id("t2"));
    tenant(s, &t1).await;
    tenant(s, &t2).await;
    let mut tx = s.begin().await.unwrap();
    tx.insert_resource(
        Kind::User,
        &t1,
        &res(
            "u1",
            json!({"userName": "Alice", "emails": [{"value": "A@x.com"}]}),
        ),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let got = s
        .get_resource(Kind::User, &t1, "u1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.doc["userName"], "Alice");
    assert!(
        s.get_resource(Kind::User, &t2, "u1")
            .await
            .unwrap()
            .is_none(),
        "tenants never see each other"
    );
    let mut tx = s.begin().await.unwrap();
    let dup = tx
        .insert_resource(Kind::User, &t1, &res("u2", json!({"userName": "ALICE"})))
        .await;
    assert!(matches!(dup, Err(StoreError::Unique(_))), "{dup:?}");
    drop(tx);
    let mut tx = s.begin().await.unwrap();
    tx.insert_resource(Kind::User, &t2, &res("u1", json!({"userName": "alice"})))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Optimistic update: the expected version must match.
    let mut next = got.clone();
    next.doc["userName"] = json!("alice2");
    next.version = 2;
    let mut tx = s.begin().await.unwrap();
    assert!(!tx.update_resource(Kind::User, &t1, &next, 5).await.unwrap());
    assert!(tx.update_resource(Kind::User, &t1, &next, 1).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(
        s.get_resource(Kind::User, &t1, "u1")
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    let mut tx = s.begin().await.unwrap();
    assert!(tx.delete_resource(Kind::User, &t1, "u1").await.unwrap());
    assert!(!tx.delete_resource(Kind::User, &t1, "u1").await.unwrap());
    tx.commit().await.unwrap();
    assert!(
        s.get_resource(Kind::User, &t2, "u1")
            .await
            .unwrap()
            .is_some()
    );
}

async fn rollback_leaves_nothing(b: Backend) {
    let db = common::store(b).await;
    let s = &db.store;
    let t = unique_id("t");
    tenant(s, &t).await;
    let mut tx = s.begin().await.unwrap();
    tx.insert_resource(Kind::User, &t, &res("u1", json!({"userName": "x"})))
        .await
        .unwrap();
    tx.audit(NewAudit {
        tenant_id: &t,
        at: "now",
        actor: "a",
        action: "user.create",
        resource_type: "User",
        resource_id: "u1",
        request_id: "r",
        before: None,
        after: Some("{}".into()),
    })
    .await
    .unwrap();
    tx.outbox(&t, "user.created", "User", "u1", "{}", "now")
        .await
        .unwrap();
    drop(tx); // no commit
    assert!(
        s.get_resource(Kind::User, &t, "u1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.audit_rows(&t, 0, 10).await.unwrap().is_empty());
    assert!(s.outbox_after(&t, 0, 10).await.unwrap().is_empty());
    assert_eq!(s.audit_head(&t).await.unwrap().unwrap().0, 0);
}

async fn listing_pages(b: Backend) {
    let db = common::store(b).await;
    let s = &db.store;
    let t = unique_id("t");
    tenant(s, &t).await;
    let mut tx = s.begin().await.unwrap();
    for i in 0..10 {
        tx.insert_resource(
            Kind::User,
            &t,
            &res(&format!("u{i}"), json!({"userName": format!("n{}", 9 - i)})),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let by_id = Order {
        column: None,
        descending: false,
    };
    let (rows, total) = s
        .list_resources(
            Kind::User,
            &t,
            &all(),
            &by_id,
            &Page::Offset {
                offset: 2,
                limit: 3,
            },
            true,
        )
        .await
        .unwrap();
    assert_eq!(total, Some(10));
    assert_eq!(
        rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["u2", "u3", "u4"]
    );
    let by_name = Order {
        column: Some("r.user_name_lc".into()),
        descending: false,
    };
    let (rows, _) = s
        .list_resources(
            Kind::User,
            &t,
            &all(),
            &by_name,
            &Page::Offset {
                offset: 0,
                limit: 2,
            },
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["u9", "u8"]
    );
    let (rows, _) = s
        .list_resources(
            Kind::User,
            &t,
            &all(),
            &by_id,
            &Page::After {
                after: Some("u7".into()),
                limit: 5,
            },
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["u8", "u9"]
    );
    let f = SqlWhere {
        sql: "r.user_name_lc LIKE $2 ESCAPE '\\'".into(),
        params: vec![scim::sql::SqlParam::Text("n1%".into())],
        exact: true,
    };
    let (rows, total) = s
        .list_resources(Kind::User, &t, &f, &by_id, &Page::All, true)
        .await
        .unwrap();
    assert_eq!((rows.len(), total), (1, Some(1)));
}

async fn memberships_and_nesting(b: Backend) {
    let db = common::store(b).await;
    let s = &db.store;
    let t = unique_id("t");
    tenant(s, &t).await;
    let mut tx = s.begin().await.unwrap();
    tx.insert_resource(Kind::User, &t, &res("u1", json!({"userName": "u1"})))
        .await
        .unwrap();
    tx.insert_resource(Kind::Group, &t, &res("g1", json!({"displayName": "Inner"})))
        .await
        .unwrap();
    tx.insert_resource(Kind::Group, &t, &res("g2", json!({"displayName": "Outer"})))
        .await
        .unwrap();
    tx.add_members(&t, "g1", &[("u1".into(), "User".into())])
        .await
        .unwrap();
    tx.add_members(&t, "g2", &[("g1".into(), "Group".into())])
        .await
        .unwrap();
    tx.add_members(&t, "g2", &[("g1".into(), "Group".into())])
        .await
        .unwrap(); // idempotent
    let kinds = tx
        .classify_ids(&t, &["u1".into(), "g1".into(), "zz".into()])
        .await
        .unwrap();
    assert_eq!(kinds.get("u1"), Some(&"User"));
    assert_eq!(kinds.get("g1"), Some(&"Group"));
    assert!(!kinds.contains_key("zz"));
    let mut anc = tx.group_ancestors(&t, "g1").await.unwrap();
    anc.sort();
    assert_eq!(anc, ["g1", "g2"]);
    tx.commit().await.unwrap();
    let groups = s.groups_of_users(&t, &["u1".into()]).await.unwrap();
    let summary: Vec<(&str, bool)> = groups
        .iter()
        .map(|g| (g.display.as_str(), g.direct))
        .collect();
    assert_eq!(summary, [("Inner", true), ("Outer", false)]);
    let mut tx = s.begin().await.unwrap();
    tx.remove_members(&t, "g2", &["g1".into()]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        s.groups_of_users(&t, &["u1".into()]).await.unwrap().len(),
        1
    );
    assert_eq!(s.group_members(&t, "g1").await.unwrap().len(), 1);
}

async fn audit_chain_detects_tampering(b: Backend) {
    let db = common::store(b).await;
    let s = &db.store;
    let t = unique_id("t");
    tenant(s, &t).await;
    for i in 0..5 {
        let mut tx = s.begin().await.unwrap();
        let id = format!("u{i}");
        tx.audit(NewAudit {
            tenant_id: &t,
            at: "2026-01-01T00:00:00.000000Z",
            actor: "idp",
            action: "user.create",
            resource_type: "User",
            resource_id: &id,
            request_id: "r",
            before: None,
            after: Some(format!("{{\"i\":{i}}}")),
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let ok = seatkeeper::verify_audit(s, Some(&t)).await.unwrap();
    assert_eq!((ok[0].1, ok[0].2.is_ok()), (5, true));
    // Edit one stored row by hand, as an attacker with database access would.
    s.execute_unchecked(
        "UPDATE audit_log SET actor = 'mallory' WHERE tenant_id = $1 AND seq = 3",
        seatkeeper::params![&t],
    )
    .await
    .unwrap();
    let broken = seatkeeper::verify_audit(s, Some(&t)).await.unwrap();
    assert_eq!(broken[0].2.as_ref().unwrap_err().seq, 3);
    // Deleting the last row is caught by the chain's tip.
    s.execute_unchecked(
        "UPDATE audit_log SET actor = 'idp' WHERE tenant_id = $1 AND seq = 3",
        seatkeeper::params![&t],
    )
    .await
    .unwrap();
    s.execute_unchecked(
        "DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 5",
        seatkeeper::params![&t],
    )
    .await
    .unwrap();
    let truncated = seatkeeper::verify_audit(s, Some(&t)).await.unwrap();
    assert!(truncated[0].2.is_err());
}

async fn concurrent_audit_writers_keep_one_chain(b: Backend) {
    let db = common::store(b).await;
    let s = db.store.clone();
    let t = unique_id("t");
    tenant(&s, &t).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = s.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = s.begin().await.unwrap();
            let id = format!("u{i}");
            tx.audit(NewAudit {
                tenant_id: &t,
                at: "now",
                actor: "idp",
                action: "x",
                resource_type: "User",
                resource_id: &id,
                request_id: "r",
                before: None,
                after: None,
            })
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let v = seatkeeper::verify_audit(&s, Some(&t)).await.unwrap();
    assert_eq!(v[0].1, 40);
    assert!(v[0].2.is_ok());
}

async fn tokens_and_settings(b: Backend) {
    let db = common::store(b).await;
    let s = &db.store;
    let t = unique_id("t");
    tenant(s, &t).await;
    let hash = unique_id("hash");
    let tok_id = unique_id("tok");
    s.create_scim_token(&tok_id, &t, "okta", &format!("{hash}-2"), "now")
        .await
        .unwrap();
    let row = s
        .find_scim_token(&format!("{hash}-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.tenant_id.as_str(), row.name.as_str()),
        (t.as_str(), "okta")
    );
    assert!(s.revoke_scim_token(&t, &tok_id, "later").await.unwrap());
    assert!(
        s.find_scim_token(&format!("{hash}-2"))
            .await
            .unwrap()
            .is_none()
    );
    let key = unique_id("k");
    assert!(s.init_setting(&key, "a").await.unwrap());
    assert!(!s.init_setting(&key, "b").await.unwrap());
    assert_eq!(s.setting(&key).await.unwrap().as_deref(), Some("a"));
}

both_backends!(
    resources_round_trip_and_uniqueness,
    rollback_leaves_nothing,
    listing_pages,
    memberships_and_nesting,
    audit_chain_detects_tampering,
    concurrent_audit_writers_keep_one_chain,
    tokens_and_settings,
);
