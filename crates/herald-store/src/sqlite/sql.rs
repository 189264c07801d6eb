//! What the SQLite aggregates share: argument helpers, point reads, idempotency keys.

use crate::filter::Arg;
use crate::model::*;
use crate::{StoreError, StoreResult};
use herald_core::event::Event;
use herald_core::Timestamp;
use rusqlite::types::Value as Sql;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::rows::{self, *};

pub(super) fn text(s: impl ToString) -> Sql {
    Sql::Text(s.to_string())
}

/// The resource an earlier request with `idem`'s key made, if it is still there (`live`
/// reads it; `None` when deleted or purged). A key whose resource is gone is released, so
/// this request makes a new one; one whose resource is there answers with it when the
/// body matches and refuses otherwise.
pub(super) fn check_idempotency<T>(
    conn: &Connection,
    idem: &Idempotency,
    live: impl FnOnce(&Connection, &str) -> StoreResult<Option<T>>,
) -> StoreResult<Option<T>> {
    let found: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT request_hash, resource_id FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
        )?
        .query_row(params![idem.scope, idem.key], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((hash, id)) = found else {
        return Ok(None);
    };
    match live(conn, &id)? {
        Some(_) if hash != idem.request_hash => Err(StoreError::IdempotencyMismatch),
        Some(resource) => Ok(Some(resource)),
        None => {
            conn.prepare_cached("DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2")?
                .execute(params![idem.scope, idem.key])?;
            Ok(None)
        }
    }
}

/// `Ok(None)` for NotFound: the shape `check_idempotency`'s `live` wants.
pub(super) fn found<T>(read: StoreResult<T>) -> StoreResult<Option<T>> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) fn record_idempotency(
    conn: &Connection,
    idem: &Idempotency,
    resource: &str,
    now: Timestamp,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![idem.scope, idem.key, idem.request_hash, resource, now.0])?;
    Ok(())
}

pub(super) fn get_event_row(conn: &Connection, id: &str) -> StoreResult<Event> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![id])?;
    match rows.next()? {
        Some(row) => rows::event(row),
        None => Err(StoreError::NotFound),
    }
}

pub(super) fn get_webhook_row(conn: &Connection, id: &str) -> StoreResult<Webhook> {
    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?1 AND deleted = 0");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![id])?;
    match rows.next()? {
        Some(row) => rows::webhook(row),
        None => Err(StoreError::NotFound),
    }
}

pub(super) fn get_delivery_row(conn: &Connection, id: &str) -> StoreResult<Delivery> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![id])?;
    match rows.next()? {
        Some(row) => rows::delivery(row),
        None => Err(StoreError::NotFound),
    }
}

pub(super) fn query_all<T, P: rusqlite::ToSql>(
    conn: &Connection,
    sql: &str,
    args: Vec<P>,
    map: fn(&rusqlite::Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput;
        Ok(match self {
            Arg::Text(s) => ToSqlOutput::from(s.as_str()),
            Arg::Int(i) | Arg::OptInt(Some(i)) => ToSqlOutput::from(*i),
            Arg::Bool(b) => ToSqlOutput::from(*b),
            Arg::OptInt(None) => ToSqlOutput::Owned(Sql::Null),
            Arg::Null => ToSqlOutput::Owned(Sql::Null),
        })
    }
}
