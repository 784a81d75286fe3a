//! The records table on SQLite. Times are microseconds since the Unix
//! epoch, computed here rather than in SQL.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool};

use offload::migrate::Migration;

use super::{parse_status, ListFilter, NewRecord, Record, RecordStatus, RecordStore};

const COLUMNS: &str = "id, name, payload, status, result, job_id, created_at, processed_at";

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn time(micros: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| sqlx::Error::Decode(format!("timestamp out of range: {micros}").into()))
}

fn record(row: &SqliteRow) -> Result<Record, sqlx::Error> {
    Ok(Record {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        payload: row.try_get("payload")?,
        status: parse_status(row.try_get("status")?)?,
        result: row.try_get("result")?,
        job_id: row.try_get("job_id")?,
        created_at: time(row.try_get("created_at")?)?,
        processed_at: row
            .try_get::<Option<i64>, _>("processed_at")?
            .map(time)
            .transpose()?,
    })
}

impl RecordStore for Sqlite {
    const RECORD_MIGRATIONS: &'static [Migration] = &[Migration::new(
        1,
        "records",
        include_str!("../../migrations/sqlite/0001_records.sql"),
    )];

    async fn insert_record(
        conn: &mut SqliteConnection,
        record: &NewRecord,
    ) -> Result<Record, sqlx::Error> {
        let row = sqlx::query(&format!(
            "INSERT INTO records (name, payload, status, created_at) \
             VALUES (?1, ?2, 'pending', ?3) RETURNING {COLUMNS}"
        ))
        .bind(&record.name)
        .bind(&record.payload)
        .bind(now_micros())
        .fetch_one(conn)
        .await?;
        self::record(&row)
    }

    async fn insert_records(
        conn: &mut SqliteConnection,
        records: &[NewRecord],
    ) -> Result<Vec<Record>, sqlx::Error> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(&str, &str)> = records
            .iter()
            .map(|r| (r.name.as_str(), r.payload.as_str()))
            .collect();
        let rows = serde_json::to_string(&rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO records (name, payload, status, created_at) \
             SELECT value ->> 0, value ->> 1, 'pending', ?1 FROM json_each(?2) ORDER BY key \
             RETURNING {COLUMNS}"
        ))
        .bind(now_micros())
        .bind(rows)
        .fetch_all(conn)
        .await?;
        let mut inserted = inserted.iter().map(record).collect::<Result<Vec<_>, _>>()?;
        // Ids grow in insertion order, which is input order.
        inserted.sort_by_key(|r| r.id);
        Ok(inserted)
    }

    async fn attach_jobs(
        conn: &mut SqliteConnection,
        links: &[(i64, i64)],
    ) -> Result<(), sqlx::Error> {
        let links = serde_json::to_string(links).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query(
            "UPDATE records SET job_id = link.value ->> 1 FROM json_each(?1) AS link \
             WHERE records.id = link.value ->> 0",
        )
        .bind(links)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn attach_job(
        conn: &mut SqliteConnection,
        record_id: i64,
        job_id: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE records SET job_id = ?1 WHERE id = ?2")
            .bind(job_id)
            .bind(record_id)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn get_record(pool: &SqlitePool, id: i64) -> Result<Option<Record>, sqlx::Error> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM records WHERE id = ?1"))
            .bind(id)
            .fetch_optional(pool)
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    async fn list_records(
        pool: &SqlitePool,
        filter: &ListFilter,
    ) -> Result<Vec<Record>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM records \
             WHERE (?1 IS NULL OR status = ?1) AND id < COALESCE(?2, 9223372036854775807) \
             ORDER BY id DESC LIMIT ?3"
        ))
        .bind(filter.status.map(RecordStatus::as_str))
        .bind(filter.before)
        .bind(filter.limit)
        .fetch_all(pool)
        .await?;
        rows.iter().map(record).collect()
    }

    async fn count_by_status(pool: &SqlitePool) -> Result<Vec<(RecordStatus, i64)>, sqlx::Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM records GROUP BY status")
                .fetch_all(pool)
                .await?;
        rows.into_iter()
            .map(|(status, n)| Ok((parse_status(&status)?, n)))
            .collect()
    }

    async fn record_payload(pool: &SqlitePool, id: i64) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT payload FROM records WHERE id = ?1")
            .bind(id)
            .fetch_optional(pool)
            .await
    }

    async fn finish_record(
        conn: &mut SqliteConnection,
        id: i64,
        result: &str,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE records SET status = 'done', result = ?1, processed_at = ?2 \
             WHERE id = ?3 AND status = 'pending'",
        )
        .bind(result)
        .bind(now_micros())
        .bind(id)
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
