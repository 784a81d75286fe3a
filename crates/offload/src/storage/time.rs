//! One timestamp type for both backends: `timestamptz` on PostgreSQL, whose
//! server computes times (one clock for every host), and integer
//! microseconds since the Unix epoch on SQLite, which has no time type.
//! Row decoders name [`DbTime`] and work on either backend.

use chrono::{DateTime, Utc};

/// A point in time as a backend stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DbTime(pub DateTime<Utc>);

impl From<DbTime> for DateTime<Utc> {
    fn from(time: DbTime) -> Self {
        time.0
    }
}

impl From<DateTime<Utc>> for DbTime {
    fn from(time: DateTime<Utc>) -> Self {
        DbTime(time)
    }
}

#[cfg(feature = "sqlite")]
/// Microseconds since the Unix epoch, as SQLite stores times.
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

#[cfg(feature = "sqlite")]
/// Now, in microseconds since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    micros(Utc::now())
}

/// The longest span a statement computes with: longer leases, TTLs and
/// ages (`Duration::MAX` for "forever") are this one. Past it, times
/// overflow: PostgreSQL's `now() - interval` fails before 4713 BC, and
/// SQLite's saturated microseconds are past what chrono decodes. A
/// thousand years is forever for a job row.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
const MAX_SPAN: std::time::Duration = std::time::Duration::from_secs(1000 * 365 * 24 * 60 * 60);

#[cfg(feature = "postgres")]
/// A span in seconds, for `make_interval(secs => …)`; at most [`MAX_SPAN`].
pub(crate) fn span_secs(span: std::time::Duration) -> f64 {
    span.min(MAX_SPAN).as_secs_f64()
}

#[cfg(feature = "sqlite")]
/// A duration in microseconds; at most [`MAX_SPAN`].
pub(crate) fn duration_micros(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.min(MAX_SPAN).as_micros()).unwrap_or(i64::MAX)
}

#[cfg(feature = "sqlite")]
/// The time `us` microseconds after the Unix epoch; the epoch itself when
/// out of range.
pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

#[cfg(feature = "postgres")]
mod postgres {
    use chrono::{DateTime, Utc};
    use sqlx::postgres::{PgTypeInfo, PgValueRef};
    use sqlx::{Decode, Postgres, Type};

    use super::DbTime;

    impl Type<Postgres> for DbTime {
        fn type_info() -> PgTypeInfo {
            <DateTime<Utc> as Type<Postgres>>::type_info()
        }

        fn compatible(ty: &PgTypeInfo) -> bool {
            <DateTime<Utc> as Type<Postgres>>::compatible(ty)
        }
    }

    impl<'r> Decode<'r, Postgres> for DbTime {
        fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
            Ok(DbTime(<DateTime<Utc> as Decode<Postgres>>::decode(value)?))
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use sqlx::sqlite::{SqliteTypeInfo, SqliteValueRef};
    use sqlx::{Decode, Sqlite, Type};

    use super::DbTime;

    impl Type<Sqlite> for DbTime {
        fn type_info() -> SqliteTypeInfo {
            <i64 as Type<Sqlite>>::type_info()
        }

        fn compatible(ty: &SqliteTypeInfo) -> bool {
            <i64 as Type<Sqlite>>::compatible(ty)
        }
    }

    impl<'r> Decode<'r, Sqlite> for DbTime {
        fn decode(value: SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
            let us = <i64 as Decode<Sqlite>>::decode(value)?;
            chrono::DateTime::from_timestamp_micros(us)
                .map(DbTime)
                .ok_or_else(|| format!("timestamp out of range: {us} µs").into())
        }
    }
}
