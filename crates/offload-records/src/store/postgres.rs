//! The records table on PostgreSQL.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres, Row};

use offload::migrate::Migration;

use super::{parse_status, ListFilter, NewRecord, Record, RecordStatus, RecordStore};

const COLUMNS: &str = "id, name, payload, status, result, job_id, created_at, processed_at";

fn record(row: &PgRow) -> Result<Record, sqlx::Error> {
    Ok(Record {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        payload: row.try_get("payload")?,
        status: parse_status(row.try_get("status")?)?,
        result: row.try_get("result")?,
        job_id: row.try_get("job_id")?,
        created_at: row.try_get("created_at")?,
        processed_at: row.try_get("processed_at")?,
    })
}

impl RecordStore for Postgres {
    const RECORD_MIGRATIONS: &'static [Migration] = &[Migration::new(
        1,
        "records",
        include_str!("../../migrations/postgres/0001_records.sql"),
    )];

    async fn insert_record(
        conn: &mut PgConnection,
        record: &NewRecord,
    ) -> Result<Record, sqlx::Error> {
        let row = sqlx::query(&format!(
            "INSERT INTO records (name, payload) VALUES ($1, $2) RETURNING {COLUMNS}"
        ))
        .bind(&record.name)
        .bind(&record.payload)
        .fetch_one(conn)
        .await?;
        self::record(&row)
    }

    async fn insert_records(
        conn: &mut PgConnection,
        records: &[NewRecord],
    ) -> Result<Vec<Record>, sqlx::Error> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        let payloads: Vec<&str> = records.iter().map(|r| r.payload.as_str()).collect();
        let inserted = sqlx::query(&format!(
            "INSERT INTO records (name, payload) \
             SELECT name, payload FROM unnest($1::text[], $2::text[]) WITH ORDINALITY \
                 AS input(name, payload, position) ORDER BY position \
             RETURNING {COLUMNS}"
        ))
        .bind(names)
        .bind(payloads)
        .fetch_all(conn)
        .await?;
        let mut inserted = inserted.iter().map(record).collect::<Result<Vec<_>, _>>()?;
        // Identity values grow in insertion order, which is input order.
        inserted.sort_by_key(|r| r.id);
        Ok(inserted)
    }

    async fn attach_jobs(conn: &mut PgConnection, links: &[(i64, i64)]) -> Result<(), sqlx::Error> {
        let (records, jobs): (Vec<i64>, Vec<i64>) = links.iter().copied().unzip();
        sqlx::query(
            // Planned for each batch, with `id = ANY($1)`, to probe the
            // primary key: a cached plan made while the table was small
            // would scan all of it.
            "UPDATE records SET job_id = link.job_id \
             FROM unnest($1::bigint[], $2::bigint[]) AS link(record_id, job_id) \
             WHERE records.id = link.record_id AND records.id = ANY($1)",
        )
        .persistent(false)
        .bind(records)
        .bind(jobs)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn attach_job(
        conn: &mut PgConnection,
        record_id: i64,
        job_id: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE records SET job_id = $1 WHERE id = $2")
            .bind(job_id)
            .bind(record_id)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn get_record(pool: &PgPool, id: i64) -> Result<Option<Record>, sqlx::Error> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM records WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    async fn list_records(pool: &PgPool, filter: &ListFilter) -> Result<Vec<Record>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM records \
             WHERE ($1::text IS NULL OR status = $1) AND ($2::bigint IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(filter.status.map(RecordStatus::as_str))
        .bind(filter.before)
        .bind(filter.limit)
        .fetch_all(pool)
        .await?;
        rows.iter().map(record).collect()
    }

    async fn count_by_status(pool: &PgPool) -> Result<Vec<(RecordStatus, i64)>, sqlx::Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM records GROUP BY status")
                .fetch_all(pool)
                .await?;
        rows.into_iter()
            .map(|(status, n)| Ok((parse_status(&status)?, n)))
            .collect()
    }

    async fn record_payload(pool: &PgPool, id: i64) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT payload FROM records WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
    }

    async fn finish_record(
        conn: &mut PgConnection,
        id: i64,
        result: &str,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE records SET status = 'done', result = $1, processed_at = now() \
             WHERE id = $2 AND status = 'pending'",
        )
        .bind(result)
        .bind(id)
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
