//! Console sessions: the SHA-256 of the cookie's token, the form token, the expiry.

use crate::kernel::store::{Store, StoreResult};
use crate::params;

impl Store {
    /// Stores a new session.
    pub(crate) async fn create_console_session(
        &self,
        id_hash: &str,
        csrf: &str,
        now: &str,
        expires: &str,
    ) -> StoreResult<()> {
        let (id_hash, csrf, now, expires) = (
            id_hash.to_string(),
            csrf.to_string(),
            now.to_string(),
            expires.to_string(),
        );
        self.write(move |tx| {
            // Sessions are shown by no cached read.
            tx.reaches_nothing_rendered();
            tx.execute(
                "DELETE FROM console_sessions WHERE expires <= $1",
                &params![&now],
            )?;
            tx.execute(
                "INSERT INTO console_sessions (id_hash, csrf, created, expires) VALUES ($1, $2, $3, $4)",
                &params![&id_hash, &csrf, &now, &expires],
            )?;
            Ok::<_, crate::kernel::store::StoreError>(())
        })
        .await
    }

    /// A session's form token, if the session exists and has not expired by `now`.
    pub(crate) async fn console_session(
        &self,
        id_hash: &str,
        now: &str,
    ) -> StoreResult<Option<String>> {
        Ok(self
            .pool()
            .fetch_opt(
                "SELECT csrf FROM console_sessions WHERE id_hash = $1 AND expires > $2",
                &params![id_hash, now],
            )
            .await?
            .map(|r| r.text(0)))
    }

    /// Ends a session.
    pub(crate) async fn delete_console_session(&self, id_hash: &str) -> StoreResult<()> {
        let id_hash = id_hash.to_string();
        self.write(move |tx| {
            tx.reaches_nothing_rendered();
            tx.execute(
                "DELETE FROM console_sessions WHERE id_hash = $1",
                &params![&id_hash],
            )?;
            Ok::<_, crate::kernel::store::StoreError>(())
        })
        .await
    }
}
