//! The machine's ceiling for the check benchmark: a bare axum handler that parses the same
//! JSON body and answers from a `HashMap`, nothing else (no auth, no snapshot, no logging).
//! Prints `listening on http://ADDR`. Usage: `check_ceiling USERS`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let users: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let map: HashMap<String, bool> = (0..users)
        .map(|i| (format!("seed{i}@bench.example"), i % 2 == 0))
        .collect();
    let app = Router::new()
        .route(
            "/api/v1/check",
            post(
                |State(map): State<Arc<HashMap<String, bool>>>, Json(body): Json<Value>| async move {
                    let user = body["user"].as_str().unwrap_or_default();
                    let allowed = map.get(user).copied().unwrap_or(false);
                    Json(json!({"user": user, "allowed": allowed, "plan": "pro", "value": null, "reason": "ceiling"}))
                },
            ),
        )
        .with_state(Arc::new(map));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}
