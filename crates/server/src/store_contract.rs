//! The store contract: one suite, run against SQLite and PostgreSQL.

use crate::directory::store::StoredResource;
use crate::directory::store::{Kind, Order, Page};
use crate::kernel::auth::Credential;
use crate::kernel::store::{NewAudit, StoreError};
use crate::testing::{self as common, Backend};
use scim::sql::SqlWhere;
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

async fn tenant(store: &crate::kernel::store::Store, id: &str) {
    let id = id.to_string();
    store
        .write(move |tx| tx.insert_tenant(&id, &id, "2026-01-01T00:00:00.000000Z"))
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
    let tt = t1.clone();
    s.write(move |tx| {
        tx.insert_resource(
            Kind::User,
            &tt,
            &res(
                "u1",
                json!({"userName": "Alice", "emails": [{"value": "A@x.com"}]}),
            ),
        )
    })
    .await
    .unwrap();
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
    let tt = t1.clone();
    let dup = s
        .write(move |tx| {
            tx.insert_resource(Kind::User, &tt, &res("u2", json!({"userName": "ALICE"})))
        })
        .await;
    assert!(matches!(dup, Err(StoreError::Unique(_))), "{dup:?}");
    let tt = t2.clone();
    s.write(move |tx| {
        tx.insert_resource(Kind::User, &tt, &res("u1", json!({"userName": "alice"})))
    })
    .await
    .unwrap();
    // Optimistic update: the expected version must match.
    let mut next = got.clone();
    next.doc["userName"] = json!("alice2");
    next.version = 2;
    let tt = t1.clone();
    let (stale, fresh) = s
        .write(move |tx| -> Result<(bool, bool), StoreError> {
            let before = json!({"userName": "alice"});
            let stale = tx.update_resource_from(Kind::User, &tt, &before, &next, 5)?;
            let fresh = tx.update_resource_from(Kind::User, &tt, &before, &next, 1)?;
            Ok((stale, fresh))
        })
        .await
        .unwrap();
    assert_eq!((stale, fresh), (false, true));
    assert_eq!(
        s.get_resource(Kind::User, &t1, "u1")
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    let tt = t1.clone();
    let deleted = s
        .write(move |tx| -> Result<(bool, bool), StoreError> {
            Ok((
                tx.delete_resource(Kind::User, &tt, "u1")?,
                tx.delete_resource(Kind::User, &tt, "u1")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(deleted, (true, false));
    assert!(
        s.get_resource(Kind::User, &t2, "u1")
            .await
            .unwrap()
            .is_some()
    );
}

async fn failed_work_leaves_nothing(b: Backend) {
    let db = common::store(b).await;
    let s = &db.store;
    let t = unique_id("t");
    tenant(s, &t).await;
    let tt = t.clone();
    let r: Result<(), StoreError> = s
        .write(move |tx| {
            tx.insert_resource(Kind::User, &tt, &res("u1", json!({"userName": "x"})))?;
            tx.audit(NewAudit {
                tenant_id: &tt,
                at: "now",
                actor: "a",
                action: "user.create",
                resource_type: "User",
                resource_id: "u1",
                request_id: "r",
                before: None,
                after: Some("{}".into()),
            })?;
            tx.outbox(
                &tt,
                crate::kernel::catalogue::EventType::UserProvisioned,
                "User",
                "u1",
                "{}",
                "now",
            )?;
            Err(StoreError::Corrupt("fail after writing".into()))
        })
        .await;
    assert!(r.is_err());
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

/// Every user of a tenant, and the total the listing gives.
async fn all_users(s: &crate::kernel::store::Store, t: &str) -> (Vec<StoredResource>, Option<i64>) {
    s.list_resources(
        Kind::User,
        t,
        &all(),
        &Order {
            column: None,
            descending: false,
        },
        &Page::All,
        true,
    )
    .await
    .unwrap()
}

/// Many concurrent writes, some failing: the failures change nothing, the rest all land
/// (on SQLite they share commits; a failing job must not take its batch down with it).
async fn concurrent_writes_fail_alone(b: Backend) {
    let db = common::store(b).await;
    let s = db.store.clone();
    let t = unique_id("t");
    tenant(&s, &t).await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (s, t) = (s.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            s.write(move |tx| -> Result<(), StoreError> {
                tx.insert_resource(
                    Kind::User,
                    &t,
                    &res(&format!("u{i}"), json!({"userName": format!("n{i}")})),
                )?;
                if i % 3 == 0 {
                    return Err(StoreError::Corrupt("planned failure".into()));
                }
                Ok(())
            })
            .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 40);
    let (rows, total) = all_users(&s, &t).await;
    assert_eq!((rows.len(), total), (40, Some(40)));
    assert!(
        rows.iter()
            .all(|r| r.id[1..].parse::<usize>().unwrap() % 3 != 0)
    );
}

/// Writes that may run again, many at once on one tenant (on PostgreSQL a lane's batch runs
/// them without savepoints, and again with a savepoint each when one fails). Each failing
/// write, by its own error or by a userName taken that only its end statement finds, changes
/// nothing and is answered with its own error; every other lands exactly once, with one
/// audit record each on one chain that verifies.
async fn writes_that_run_again_fail_alone(b: Backend) {
    let db = common::store(b).await;
    let s = db.store.clone();
    let t = unique_id("t");
    tenant(&s, &t).await;
    let tt = t.clone();
    s.write_for_again(&t, move |tx| {
        tx.insert_user_with_end(&tt, &res("taken", json!({"userName": "taken"})))
    })
    .await
    .unwrap();
    // The others queue behind it: on PostgreSQL they share one batch, which a failing
    // write makes run again.
    let blocker = hold_lane(&s, &t).await;
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..90 {
        let (s, t, runs) = (s.clone(), t.clone(), runs.clone());
        tasks.push(tokio::spawn(async move {
            let lane = t.clone();
            let out = s
                .write_for_again(&lane, move |tx| -> Result<(), StoreError> {
                    runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tx.lock_tenant(&t)?;
                    let name = if i % 5 == 0 {
                        "TAKEN".to_string()
                    } else {
                        format!("n{i}")
                    };
                    tx.insert_user_with_end(&t, &res(&format!("u{i}"), json!({"userName": name})))?;
                    audit_create(tx, &t, i)?;
                    if i % 3 == 0 && i % 5 != 0 {
                        return Err(StoreError::Corrupt("planned failure".into()));
                    }
                    Ok(())
                })
                .await;
            (i, out)
        }));
    }
    let mut ok = 0;
    for task in tasks {
        let (i, out) = task.await.unwrap();
        match out {
            Ok(()) => ok += 1,
            Err(StoreError::Unique(_)) => assert_eq!(i % 5, 0, "write {i} found its name taken"),
            Err(StoreError::Corrupt(_)) => assert_eq!(i % 3, 0, "write {i} failed as planned"),
            Err(e) => panic!("write {i}: {e}"),
        }
    }
    assert_eq!(ok, 48);
    blocker.await.unwrap().unwrap();
    let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
    match b {
        Backend::Sqlite => assert_eq!(runs, 90),
        // The batch ran without savepoints until the first failure, then again with them.
        Backend::Postgres => assert!(runs > 90, "{runs} runs"),
    }
    let (rows, total) = all_users(&s, &t).await;
    assert_eq!((rows.len(), total), (49, Some(49)));
    let v = verify_audit(&s, Some(&t), None).await.unwrap();
    assert_eq!(v[0].1, 48);
    assert!(v[0].2.is_ok());
}

/// Holds the tenant's write lane (a write that waits) until the returned task is awaited:
/// writes queued meanwhile share one batch on PostgreSQL.
async fn hold_lane(
    s: &crate::kernel::store::Store,
    t: &str,
) -> tokio::task::JoinHandle<Result<(), StoreError>> {
    let (s, t) = (s.clone(), t.to_string());
    let (held, hold) = tokio::sync::oneshot::channel();
    let blocker = tokio::spawn(async move {
        s.write_for(&t, move |_| -> Result<(), StoreError> {
            let _ = held.send(());
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(())
        })
        .await
    });
    hold.await.unwrap();
    blocker
}

/// Many writes that may run again, none failing, in one batch (on PostgreSQL their ends go
/// as one statement: users, emails, licenses-like rows, the summed count, every audit record
/// and event, the head row once): all land exactly once, the count is right, and the chain
/// verifies record by record.
async fn writes_that_run_again_share_one_end(b: Backend) {
    let db = common::store(b).await;
    let s = db.store.clone();
    let t = unique_id("t");
    tenant(&s, &t).await;
    let blocker = hold_lane(&s, &t).await;
    let mut tasks = Vec::new();
    for i in 0..70 {
        let (s, t) = (s.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let lane = t.clone();
            s.write_for_again(&lane, move |tx| -> Result<(), StoreError> {
                tx.lock_tenant(&t)?;
                let doc = json!({"userName": format!("n{i}"), "emails": [{"value": format!("n{i}@x.com")}]});
                tx.insert_user_with_end(&t, &res(&format!("u{i}"), doc))?;
                audit_create(tx, &t, i)?;
                Ok(())
            })
            .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    blocker.await.unwrap().unwrap();
    let (rows, total) = all_users(&s, &t).await;
    assert_eq!((rows.len(), total), (70, Some(70)));
    let by_email = s
        .list_resources(
            Kind::User,
            &t,
            &SqlWhere {
                sql: "r.id IN (SELECT e.user_id FROM scim_user_emails e WHERE e.tenant_id = r.tenant_id)"
                    .into(),
                params: vec![],
                exact: true,
            },
            &Order {
                column: None,
                descending: false,
            },
            &Page::All,
            false,
        )
        .await
        .unwrap();
    assert_eq!(by_email.0.len(), 70);
    let counted = s
        .pool()
        .fetch_opt(
            "SELECT n FROM resource_counts WHERE tenant_id = $1 AND kind = 'User'",
            &[crate::kernel::db::P::from(t.as_str())],
        )
        .await
        .unwrap()
        .map(|r| r.int(0));
    assert_eq!(counted, Some(70));
    let v = verify_audit(&s, Some(&t), None).await.unwrap();
    assert_eq!(v[0].1, 70);
    assert!(v[0].2.is_ok());
    assert_eq!(s.audit_head(&t).await.unwrap().unwrap().0, 70);
}

async fn listing_pages(b: Backend) {
    let db = common::store(b).await;
    let s = &db.store;
    let t = unique_id("t");
    tenant(s, &t).await;
    let tt = t.clone();
    s.write(move |tx| -> Result<(), StoreError> {
        for i in 0..10 {
            tx.insert_resource(
                Kind::User,
                &tt,
                &res(&format!("u{i}"), json!({"userName": format!("n{}", 9 - i)})),
            )?;
        }
        Ok(())
    })
    .await
    .unwrap();
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
    let tt = t.clone();
    let (kinds, mut anc) = s
        .write(move |tx| -> Result<_, StoreError> {
            let t = tt;
            tx.insert_resource(Kind::User, &t, &res("u1", json!({"userName": "u1"})))?;
            tx.insert_resource(Kind::Group, &t, &res("g1", json!({"displayName": "Inner"})))?;
            tx.insert_resource(Kind::Group, &t, &res("g2", json!({"displayName": "Outer"})))?;
            tx.add_members(&t, "g1", &[("u1".into(), "User".into())])?;
            tx.add_members(&t, "g2", &[("g1".into(), "Group".into())])?;
            tx.add_members(&t, "g2", &[("g1".into(), "Group".into())])?; // idempotent
            let kinds = tx.classify_ids(&t, &["u1".into(), "g1".into(), "zz".into()])?;
            let anc = tx.group_ancestors(&t, "g1")?;
            Ok((kinds, anc))
        })
        .await
        .unwrap();
    assert_eq!(kinds.get("u1"), Some(&"User"));
    assert_eq!(kinds.get("g1"), Some(&"Group"));
    assert!(!kinds.contains_key("zz"));
    anc.sort();
    assert_eq!(anc, ["g1", "g2"]);
    let groups = s.groups_of_users(&t, &["u1".into()]).await.unwrap();
    let summary: Vec<(&str, bool)> = groups
        .iter()
        .map(|g| (g.display.as_str(), g.direct))
        .collect();
    assert_eq!(summary, [("Inner", true), ("Outer", false)]);
    let tt = t.clone();
    s.write(move |tx| tx.remove_members(&tt, "g2", &["g1".into()]))
        .await
        .unwrap();
    assert_eq!(
        s.groups_of_users(&t, &["u1".into()]).await.unwrap().len(),
        1
    );
    assert_eq!(s.group_members(&t, "g1").await.unwrap().len(), 1);
}

/// Audits the creation of user `u{i}`.
fn audit_create(
    tx: &mut crate::kernel::store::Tx<'_>,
    t: &str,
    i: usize,
) -> Result<i64, StoreError> {
    tx.audit(NewAudit {
        tenant_id: t,
        at: "2026-01-01T00:00:00.000000Z",
        actor: "idp",
        action: "user.create",
        resource_type: "User",
        resource_id: &format!("u{i}"),
        request_id: "r",
        before: None,
        after: Some(format!("{{\"i\":{i}}}")),
    })
}

fn audit_one(
    s: &crate::kernel::store::Store,
    t: &str,
    i: usize,
) -> impl std::future::Future<Output = Result<i64, StoreError>> + use<> {
    let (s, t) = (s.clone(), t.to_string());
    async move { s.write(move |tx| audit_create(tx, &t, i)).await }
}

async fn audit_chain_detects_tampering(b: Backend) {
    let db = common::store(b).await;
    let s = &db.store;
    let t = unique_id("t");
    tenant(s, &t).await;
    for i in 0..5 {
        audit_one(s, &t, i).await.unwrap();
    }
    let ok = verify_audit(s, Some(&t), None).await.unwrap();
    assert_eq!((ok[0].1, ok[0].2.is_ok()), (5, true));
    // Edit one stored row by hand, as an attacker with database access would.
    s.execute_unchecked(
        "UPDATE audit_log SET actor = 'mallory' WHERE tenant_id = $1 AND seq = 3",
        crate::params![&t].to_vec(),
    )
    .await
    .unwrap();
    let broken = verify_audit(s, Some(&t), None).await.unwrap();
    assert_eq!(broken[0].2.as_ref().unwrap_err().seq, 3);
    // Deleting the last row is caught by the chain's tip.
    s.execute_unchecked(
        "UPDATE audit_log SET actor = 'idp' WHERE tenant_id = $1 AND seq = 3",
        crate::params![&t].to_vec(),
    )
    .await
    .unwrap();
    assert!(verify_audit(s, Some(&t), None).await.unwrap()[0].2.is_ok());
    s.execute_unchecked(
        "DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 5",
        crate::params![&t].to_vec(),
    )
    .await
    .unwrap();
    let truncated = verify_audit(s, Some(&t), None).await.unwrap();
    assert!(truncated[0].2.is_err());
}

async fn pruned_chains_verify_from_a_signed_checkpoint(b: Backend) {
    let db = common::store(b).await;
    let s = &db.store;
    let t = unique_id("t");
    tenant(s, &t).await;
    for i in 0..6 {
        audit_one(s, &t, i).await.unwrap(); // written 2026-01-01
    }
    let key = s.audit_key().await.unwrap();
    // Nothing is older than 2025: nothing pruned.
    let none = s
        .prune_audit(
            &actor(),
            &t,
            "2025-01-01T00:00:00.000000Z",
            "2026-06-01T00:00:00.000000Z",
            key.clone(),
        )
        .await
        .unwrap();
    assert!(none.is_none());
    let cp = s
        .prune_audit(
            &actor(),
            &t,
            "2026-02-01T00:00:00.000000Z",
            "2026-06-01T00:00:00.000000Z",
            key.clone(),
        )
        .await
        .unwrap()
        .expect("pruned");
    assert_eq!(cp.seq, 6);
    let rows = s.audit_rows(&t, 0, 100).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["audit.prune"]
    );
    let ok = verify_audit(s, Some(&t), None).await.unwrap();
    assert!(ok[0].2.is_ok(), "{ok:?}");
    // Pinned to the right public key: still fine; to another key: the checkpoint fails.
    let public = key.verifying_key();
    assert!(
        verify_audit(s, Some(&t), Some(&public)).await.unwrap()[0]
            .2
            .is_ok()
    );
    let other =
        crate::kernel::chain::signing_key(&crate::kernel::chain::new_signing_key()).unwrap();
    let wrong = verify_audit(s, Some(&t), Some(&other.verifying_key()))
        .await
        .unwrap();
    assert!(
        wrong[0]
            .2
            .as_ref()
            .unwrap_err()
            .reason
            .contains("signature")
    );
    // Moving the checkpoint by hand (to hide a forged history) breaks it.
    s.execute_unchecked(
        "UPDATE audit_checkpoints SET seq = 5 WHERE tenant_id = $1",
        crate::params![&t].to_vec(),
    )
    .await
    .unwrap();
    assert!(verify_audit(s, Some(&t), None).await.unwrap()[0].2.is_err());
    s.execute_unchecked(
        "UPDATE audit_checkpoints SET seq = 6 WHERE tenant_id = $1",
        crate::params![&t].to_vec(),
    )
    .await
    .unwrap();
    // An edit after the checkpoint is still caught.
    s.execute_unchecked(
        "UPDATE audit_log SET actor = 'mallory' WHERE tenant_id = $1 AND seq = 7",
        crate::params![&t].to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(
        verify_audit(s, Some(&t), None).await.unwrap()[0]
            .2
            .as_ref()
            .unwrap_err()
            .seq,
        7
    );
}

async fn concurrent_audit_writers_keep_one_chain(b: Backend) {
    let db = common::store(b).await;
    let s = db.store.clone();
    let t = unique_id("t");
    tenant(&s, &t).await;
    let tasks: Vec<_> = (0..40)
        .map(|i| tokio::spawn(audit_one(&s, &t, i)))
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let v = verify_audit(&s, Some(&t), None).await.unwrap();
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
    let row = crate::tenants::store::CredentialRow {
        id: tok_id.clone(),
        tenant: t.clone(),
        name: "okta".into(),
        created: "now".into(),
        revoked: None,
    };
    let stored = format!("{hash}-2");
    s.write(move |tx| tx.insert_credential(Credential::Scim, &row, &stored))
        .await
        .unwrap();
    let row = s
        .find_credential(Credential::Scim, &format!("{hash}-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.tenant_id.as_str(), row.name.as_str()),
        (t.as_str(), "okta")
    );
    assert!({
        let (t, tok_id) = (t.clone(), tok_id.clone());
        s.write(move |tx| tx.revoke_credential(Credential::Scim, &t, &tok_id, "later"))
            .await
            .unwrap()
            .is_some()
    });
    assert!(
        s.find_credential(Credential::Scim, &format!("{hash}-2"))
            .await
            .unwrap()
            .is_none()
    );
    let key = unique_id("k");
    assert!(s.init_setting(&key, "a").await.unwrap());
    assert!(!s.init_setting(&key, "b").await.unwrap());
    assert_eq!(s.setting(&key).await.unwrap().as_deref(), Some("a"));
}

/// SQLite's WAL is copied back into the database file while writes go on, and comes back to
/// its start: under a steady stream of commits it stays bounded (about 4,000 pages, more while
/// a checkpoint is in progress) instead of growing with every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_wal_stays_bounded_under_steady_writes() {
    let db = common::store(Backend::Sqlite).await;
    let s = &db.store;
    let t = unique_id("t");
    tenant(s, &t).await;
    let path = db.url.trim_start_matches("sqlite://").to_string();
    let padding = "x".repeat(3000);
    // 32 writers at once keep the writer busy (a checkpoint beside it rarely finishes the
    // log); ~60 MB of rows in all, with their indexes and the tenant's counts well over
    // twice the bound.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..32 {
        let (s, t, padding) = (s.clone(), t.clone(), padding.clone());
        writers.spawn(async move {
            for i in 0..500 {
                let id = format!("u{w:02}-{i:03}");
                let (tt, doc) = (t.clone(), json!({"userName": id, "title": padding}));
                s.write(move |tx| tx.insert_resource(Kind::User, &tt, &res(&id, doc)))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let wal = std::fs::metadata(format!("{path}-wal")).unwrap().len();
    let main = std::fs::metadata(&path).unwrap().len();
    // 4,000 pages are 16 MB; a checkpoint in progress when the writer's turn comes defers
    // the restart (up to 54 MB seen while the whole test suite loaded both cores of a CI
    // machine). Without the restart the WAL takes every write: 160 MB and more here.
    eprintln!("WAL {wal} bytes, database file {main} bytes");
    assert!(wal < 80 * 1024 * 1024, "the WAL grew to {wal} bytes");
    assert!(
        main > 40 * 1024 * 1024,
        "the database file holds only {main} bytes: nothing was checkpointed"
    );
}

/// Migration 6 moves each tenant's seat counts from `lic_lines` into its head row: a
/// database made before it keeps every count, and the old table is gone.
async fn seat_counts_survive_the_upgrade(b: Backend) {
    use crate::kernel::db::P;
    use crate::kernel::store::{Store, StoreOptions};
    use crate::licenses::store::Line;
    let own = match b {
        Backend::Postgres => Some(common::OwnDatabase::create("seat_lines_upgrade").await),
        Backend::Sqlite => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let url = match &own {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}", dir.path().join("old.db").display()),
    };
    let (t1, t2) = (unique_id("t1"), unique_id("t2"));
    {
        let s = Store::connect(&url, &StoreOptions::default())
            .await
            .unwrap();
        tenant(&s, &t1).await;
        tenant(&s, &t2).await;
        // Back to the layout before migration 6, with counts only lic_lines knows.
        let (a, b2) = (t1.clone(), t2.clone());
        s.write(move |tx| {
            tx.execute(
                "CREATE TABLE lic_lines (tenant_id TEXT NOT NULL, product TEXT NOT NULL, active BIGINT NOT NULL, \
                 waiting BIGINT NOT NULL, next_queue BIGINT NOT NULL, PRIMARY KEY (tenant_id, product))",
                &[],
            )?;
            for (t, p, active, waiting, next) in [(&a, "ws", 3, 2, 6), (&a, "crm", 0, 0, 1), (&b2, "ws", 50, 150, 201)] {
                tx.execute(
                    "INSERT INTO lic_lines (tenant_id, product, active, waiting, next_queue) VALUES ($1, $2, $3, $4, $5)",
                    &[P::from(t.as_str()), P::from(p), P::Int(active), P::Int(waiting), P::Int(next)],
                )?;
            }
            tx.execute("ALTER TABLE audit_heads DROP COLUMN seat_lines", &[])?;
            tx.execute("DELETE FROM schema_migrations WHERE version = 6", &[])?;
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    }
    let s = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let line = |active, waiting, next_queue| Line {
        free: 0,
        active,
        waiting,
        next_queue,
    };
    let got = s.lines(&t1).await.unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got["ws"], line(3, 2, 6));
    assert_eq!(got["crm"], line(0, 0, 1));
    assert_eq!(s.lines(&t2).await.unwrap()["ws"], line(50, 150, 201));
    let gone = s
        .write(|tx| tx.fetch("SELECT count(*) FROM lic_lines", &[]))
        .await;
    assert!(gone.is_err(), "lic_lines should be dropped: {gone:?}");
    // A tenant created after the upgrade starts with no counts; the kept ones move on.
    let t3 = unique_id("t3");
    tenant(&s, &t3).await;
    assert!(s.lines(&t3).await.unwrap().is_empty());
    let a = t1.clone();
    s.write(move |tx| {
        let mut l = tx.line(&a, "ws")?;
        l.active += 1;
        tx.put_line(&a, "ws", l)
    })
    .await
    .unwrap();
    assert_eq!(s.lines(&t1).await.unwrap()["ws"], line(4, 2, 6));
    drop(s);
    if let Some(db) = own {
        db.drop_database().await;
    }
}

/// Records a successful attempt of a delivery, as the dispatcher does.
async fn delivered_ok(s: &crate::kernel::store::Store, id: i64, at: &'static str) {
    let ok = crate::events::store::Attempt {
        id,
        status: Some(200),
        error: None,
        ok: true,
        retry_at: None,
    };
    s.write(move |tx| tx.record_attempts(&[ok], at))
        .await
        .unwrap();
}

/// A delivery replayed while an attempt of it is in flight is sent again: the attempt's
/// outcome does not overwrite the replay.
async fn a_replay_during_an_attempt_is_not_lost(b: Backend) {
    use crate::kernel::store::{Store, StoreOptions};
    // A database of its own: claiming deliveries takes every tenant's.
    let own = match b {
        Backend::Postgres => Some(common::OwnDatabase::create("replay_in_flight").await),
        Backend::Sqlite => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let url = match &own {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}", dir.path().join("replay.db").display()),
    };
    let s = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let t = unique_id("t");
    tenant(&s, &t).await;
    let hook = crate::events::store::WebhookRow {
        tenant: t.clone(),
        id: unique_id("w"),
        url: "http://127.0.0.1:9/hook".into(),
        events: vec!["*".into()],
        secret: "whsec_x".into(),
        created: "2026-01-01T00:00:00.000000Z".into(),
        cursor: 0,
        cursor_tx: 0,
        disabled: None,
    };
    let (h, tt) = (hook.clone(), t.clone());
    s.write(move |tx| {
        tx.insert_webhook(&h)?;
        tx.outbox(
            &tt,
            crate::kernel::catalogue::EventType::UserProvisioned,
            "User",
            "u1",
            "{}",
            "2026-01-01T00:00:00.000000Z",
        )
    })
    .await
    .unwrap();
    let (tt, wid) = (t.clone(), hook.id.clone());
    let claimed = s
        .write(move |tx| {
            tx.fan_out(&tt, &wid, "2026-01-01T00:00:01.000000Z", 100)?;
            tx.claim_deliveries(i64::MAX / 4, 60_000, 100)
        })
        .await
        .unwrap();
    let mine: Vec<i64> = claimed
        .iter()
        .filter(|c| c.event.tenant_id == t)
        .map(|c| c.id)
        .collect();
    assert_eq!(mine.len(), 1, "one delivery claimed");
    let did = mine[0];
    // The operator replays it while the attempt is out; then the attempt reports success.
    let (tt, wid) = (t.clone(), hook.id.clone());
    let n = s
        .write(move |tx| tx.replay(&tt, &wid, Some(did), None, "2026-01-01T00:00:02.000000Z"))
        .await
        .unwrap();
    assert_eq!(n, 1);
    delivered_ok(&s, did, "2026-01-01T00:00:03.000000Z").await;
    let pending = s
        .deliveries(&t, &hook.id, Some("pending"), None, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "the replay was lost");
    // An attempt that was not replayed is recorded as before.
    let again = s
        .write(|tx| tx.claim_deliveries(i64::MAX / 4, 60_000, 100))
        .await
        .unwrap();
    assert!(again.iter().any(|c| c.id == did));
    delivered_ok(&s, did, "2026-01-01T00:00:04.000000Z").await;
    let delivered = s
        .deliveries(&t, &hook.id, Some("delivered"), None, 10)
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1);
    s.close().await;
    if let Some(db) = own {
        db.drop_database().await;
    }
}

/// A catch-up read of several tenants in one statement reads, for each, what a read of that
/// tenant alone reads: its model version, its changes after its own cursor (at most the
/// limit), the users they name with their licenses and (when asked) roles; a tenant that
/// does not exist is absent.
async fn catch_up_reads_of_several_tenants_match_one_at_a_time(b: Backend) {
    use crate::kernel::catalogue::EventType;
    use crate::kernel::db::P;
    let db = common::store(b).await;
    let s = &db.store;
    let (a, bb, c) = (unique_id("a"), unique_id("b"), unique_id("c"));
    for t in [&a, &bb, &c] {
        tenant(s, t).await;
    }
    let (ta, tb) = (a.clone(), bb.clone());
    s.write(move |tx| {
        for (t, user, name) in [(&ta, "u1", "ann"), (&ta, "u2", "bob"), (&tb, "u3", "cy")] {
            tx.insert_resource(Kind::User, t, &res(user, json!({"userName": name})))?;
        }
        for (t, user, product) in [(&ta, "u1", "mail"), (&ta, "u1", "chat"), (&tb, "u3", "mail")] {
            tx.execute(
                "INSERT INTO licenses (tenant_id, user_id, product, plan, state, queue, changed, \
                 reason, explain) VALUES ($1, $2, $3, 'pro', 'active', 1, 'now', 'rule', '{}')",
                &[P::from(t.as_str()), P::from(user), P::from(product)],
            )?;
        }
        tx.execute(
            "INSERT INTO user_roles (tenant_id, user_id, product, role, source, granted) \
             VALUES ($1, 'u3', 'mail', 'admin', 'scim', 'now'), ($2, 'u1', 'mail', 'admin', 'scim', 'now')",
            &[P::from(tb.as_str()), P::from(ta.as_str())],
        )?;
        for (t, kind, id) in [
            (&ta, "User", "u1"),
            (&ta, "License", "u1"),
            (&ta, "User", "u2"),
            (&tb, "Subscription", "s1"),
            (&tb, "License", "u3"),
        ] {
            let event = match kind {
                "User" => EventType::UserUpdated,
                "License" => EventType::LicenseChanged,
                _ => EventType::SubscriptionChanged,
            };
            tx.outbox(t, event, kind, id, "{}", "now")?;
        }
        Ok::<_, StoreError>(())
    })
    .await
    .unwrap();
    // Rows in a stable order, to compare two reads.
    let plain = |c: Option<crate::apps::store::CatchUp>| {
        c.map(|mut c| {
            c.rows.0.sort_by(|x, y| x.id.cmp(&y.id));
            c.rows
                .1
                .sort_by(|x, y| (&x.user_id, &x.product).cmp(&(&y.user_id, &y.product)));
            c.rows
                .2
                .sort_by(|x, y| (&x.user_id, &x.role).cmp(&(&y.user_id, &y.role)));
            format!("{c:?}")
        })
    };
    let first_of_a = s.outbox_after(&a, 0, 1).await.unwrap()[0].id;
    for limit in [1, 2, 10] {
        let asks = [
            (a.clone(), 0, false),
            (bb.clone(), 0, true),
            (c.clone(), 0, false),
            (unique_id("gone"), 0, false),
            (a.clone(), first_of_a, true),
        ];
        let together = s.catch_up_rows_of(&asks[..4], limit).await.unwrap();
        assert_eq!(
            together.len(),
            3,
            "the tenant that does not exist is absent"
        );
        for (t, after, roles) in &asks[..4] {
            let alone = s.catch_up_rows(t, *after, limit, *roles).await.unwrap();
            assert_eq!(
                plain(together.get(t).cloned()),
                plain(alone),
                "tenant {t}, limit {limit}"
            );
        }
        // The same tenant from another cursor, with roles.
        let later = s.catch_up_rows_of(&asks[4..], limit).await.unwrap();
        let alone = s.catch_up_rows(&a, first_of_a, limit, true).await.unwrap();
        assert_eq!(plain(later.get(&a).cloned()), plain(alone));
    }
    // What the reads hold, checked once by hand.
    let read = s
        .catch_up_rows_of(&[(a.clone(), 0, true), (bb.clone(), 0, true)], 10)
        .await
        .unwrap();
    let ra = &read[&a];
    assert_eq!(ra.changes.len(), 3);
    assert!(
        ra.changes.windows(2).all(|w| w[0].0 < w[1].0),
        "oldest first"
    );
    let mut users: Vec<&str> = ra.rows.0.iter().map(|u| u.id.as_str()).collect();
    users.sort();
    assert_eq!(users, ["u1", "u2"]);
    assert_eq!(ra.rows.1.len(), 2, "u1's two licenses");
    assert_eq!(ra.rows.2.len(), 1, "u1's role");
    let rb = &read[&bb];
    assert_eq!(rb.changes.len(), 2);
    assert_eq!(rb.rows.0.len(), 1);
    assert!(!read.contains_key(&c), "not asked for");
    let nothing = s
        .catch_up_rows_of(&[(c.clone(), 0, false), (a.clone(), i64::MAX, false)], 10)
        .await
        .unwrap();
    assert!(nothing[&c].changes.is_empty() && nothing[&a].changes.is_empty());
    s.close().await;
}

both_backends!(
    catch_up_reads_of_several_tenants_match_one_at_a_time,
    a_replay_during_an_attempt_is_not_lost,
    seat_counts_survive_the_upgrade,
    resources_round_trip_and_uniqueness,
    failed_work_leaves_nothing,
    concurrent_writes_fail_alone,
    writes_that_run_again_fail_alone,
    writes_that_run_again_share_one_end,
    listing_pages,
    memberships_and_nesting,
    audit_chain_detects_tampering,
    pruned_chains_verify_from_a_signed_checkpoint,
    concurrent_audit_writers_keep_one_chain,
    tokens_and_settings,
);

/// A unit of work that panics in a PostgreSQL write lane loses only its own batch: its
/// caller is answered with an error, nothing of it is written (its transaction is rolled
/// back), and the tenant's next write lands through the same lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_panicking_write_leaves_its_lane_working() {
    let db = common::store(Backend::Postgres).await;
    let s = db.store.clone();
    let t = unique_id("t");
    tenant(&s, &t).await;
    let tt = t.clone();
    let out = s
        .write_for_again(&t, move |tx| -> Result<(), StoreError> {
            tx.lock_tenant(&tt)?;
            tx.insert_user_with_end(&tt, &res("ghost", json!({"userName": "ghost"})))?;
            panic!("a unit of work that panics");
        })
        .await;
    assert!(
        out.is_err(),
        "the panicking write is answered with an error"
    );
    let tt = t.clone();
    s.write_for_again(&t, move |tx| {
        tx.lock_tenant(&tt)?;
        tx.insert_user_with_end(&tt, &res("alive", json!({"userName": "alive"})))
    })
    .await
    .unwrap();
    assert!(
        s.get_resource(Kind::User, &t, "ghost")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.get_resource(Kind::User, &t, "alive")
            .await
            .unwrap()
            .is_some()
    );
    s.close().await;
}

/// On PostgreSQL a statement keeps one plan whatever values it is bound to, from its first
/// run (SQLite's connections ask the same of SQLite: the query planner stability guarantee).
/// Left to choose, PostgreSQL plans each of a prepared statement's first five runs for its
/// values, and may keep doing so for every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_plans_never_follow_bound_values() {
    use crate::kernel::db::P;
    let db = common::store(Backend::Postgres).await;
    let s = &db.store;
    let t = unique_id("t");
    tenant(s, &t).await;
    let plans = s
        .write(move |tx| {
            for i in 0..8 {
                tx.fetch(
                    "SELECT id FROM scim_users WHERE tenant_id = $1 AND user_name_lc = $2 -- plan probe",
                    &[P::from(t.as_str()), P::from(format!("user-{i}"))],
                )?;
            }
            tx.fetch(
                "SELECT custom_plans, generic_plans FROM pg_prepared_statements \
                 WHERE statement LIKE '%-- plan probe'",
                &[],
            )
        })
        .await
        .unwrap();
    assert_eq!(
        plans.len(),
        1,
        "the probe is one prepared statement: {plans:?}"
    );
    assert_eq!(plans[0].int(0), 0, "plans made for bound values");
    assert_eq!(plans[0].int(1), 8, "runs of the one generic plan");
    s.close().await;
}

async fn verify_audit(
    store: &crate::kernel::store::Store,
    chain: Option<&str>,
    pinned: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<Vec<crate::audit::service::Verified>, StoreError> {
    crate::audit::service::Audit::new(
        store.clone(),
        // Verification reads no time.
        std::sync::Arc::new(crate::kernel::clock::ManualClock::at(
            time::OffsetDateTime::UNIX_EPOCH,
        )),
    )
    .verify(chain, pinned, &[])
    .await
}

fn actor() -> crate::kernel::store::Actor {
    crate::kernel::store::Actor {
        name: "test".into(),
        request_id: "test".into(),
    }
}
