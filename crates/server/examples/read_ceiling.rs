//! The machine's ceiling for the get-by-id benchmark: a bare axum handler that reads one user
//! row by id from a rusqlite file (the benchmark's own database, read-only) and returns its
//! document as JSON with an id and a location, nothing else (no auth, no groups, no licenses,
//! no metrics). Readers come from a small pool, as in seatkeeper. Prints
//! `listening on http://ADDR`. Usage: `read_ceiling PATH TENANT`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

struct Db {
    path: String,
    tenant: String,
    pool: Mutex<Vec<rusqlite::Connection>>,
}

impl Db {
    fn read(&self, id: &str) -> Option<String> {
        let conn = self.pool.lock().ok().and_then(|mut p| p.pop());
        let conn = match conn {
            Some(c) => c,
            None => rusqlite::Connection::open_with_flags(
                &self.path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .ok()?,
        };
        let doc = conn
            .prepare_cached("SELECT doc FROM scim_users WHERE tenant_id = ?1 AND id = ?2")
            .ok()
            .and_then(|mut s| {
                s.query_row([&self.tenant, id], |r| r.get::<_, String>(0))
                    .ok()
            });
        if let Ok(mut p) = self.pool.lock() {
            p.push(conn);
        }
        doc
    }
}

async fn user(State(db): State<Arc<Db>>, Path(id): Path<String>) -> Response {
    match db.read(&id) {
        Some(doc) => {
            let mut v: serde_json::Value = serde_json::from_str(&doc).unwrap_or_default();
            v["id"] = serde_json::Value::String(id.clone());
            v["meta"] = serde_json::json!({"resourceType": "User", "location": format!("/scim/v2/Users/{id}")});
            (
                [(header::CONTENT_TYPE, "application/scim+json")],
                serde_json::to_vec(&v).unwrap_or_default(),
            )
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: read_ceiling PATH TENANT");
    let tenant = args.next().expect("usage: read_ceiling PATH TENANT");
    let db = Arc::new(Db {
        path,
        tenant,
        pool: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/scim/v2/Users/{id}", get(user))
        .with_state(db);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}
