//! Time as a parameter: everything that needs "now" asks a [`Clock`], so tests can move it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock. Built only where the process starts (`main`); everything else takes
/// the [`Clock`] it is given, so `--test-clock` governs all of it.
pub struct SystemClock;

impl SystemClock {
    /// Now, from the operating system. Clippy's `disallowed-methods` refuses every other
    /// caller of this (`SystemClock.now()` resolves here, not to the trait): code outside this
    /// module asks an injected [`Clock`].
    #[allow(clippy::disallowed_methods)]
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> OffsetDateTime {
        SystemClock::now(self)
    }
}

/// A clock tests set and move by hand (microsecond resolution).
#[derive(Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock at the given time.
    pub fn at(t: OffsetDateTime) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(
            (t.unix_timestamp_nanos() / 1000) as i64,
        )))
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: time::Duration) {
        self.0
            .fetch_add(d.whole_microseconds() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let micros = self.0.load(Ordering::SeqCst);
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// The clock shared by the server.
pub type SharedClock = Arc<dyn Clock>;

/// The fixed-width text form stored in the database and shown in `meta`.
pub fn stamp(t: OffsetDateTime) -> String {
    scim::sql::format_timestamp(t)
}
